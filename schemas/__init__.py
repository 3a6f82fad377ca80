"""Encore's contracts: the raw play event, the catalogue entry, and every lakehouse table."""
