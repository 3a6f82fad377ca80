"""Encore's shared core: config, errors, lakehouse access, the Spark session factory, the Delta
reader, MLflow tracking, the Ray connection, the symbolic-music domain and the data sources.

Layers, bottom to top (tests/test_layers.py holds every import to them):
``schemas`` (contracts) -> ``encore`` (this core) -> ``jobs`` (Spark) | ``ray_jobs`` (Ray) ->
``encore.pipeline`` (step registry, CLI, night, submission) -> ``dags``.
"""
