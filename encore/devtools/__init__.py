"""Development and test helpers that the product never imports: used by infra/ scripts and tests."""
