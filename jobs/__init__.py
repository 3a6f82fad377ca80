"""Encore's job runner (CLI, config, lakehouse, Spark session) and its Spark jobs."""
