"""The application file spark-submit runs for one Encore step (cluster profile, dags/):

    spark-submit … encore/pipeline/entrypoints/spark_step.py ingest --date 2026-11-20

It is the ``encore`` CLI itself; it lives in a folder of its own because spark-submit puts the
script's folder first on sys.path, and jobs/ holds modules (config, errors, …) whose names would
shadow other packages' imports.
"""
import sys

from encore.pipeline.cli import main

if __name__ == "__main__":
    sys.exit(main())
