"""encore_nightly: one logical date end to end, each task a thin call of the ``encore`` CLI, one
task per nightly step of the registry (encore.pipeline.steps), in its order:

ingest -> clean -> features -> ensure_models -> score -> generate -> export -> validate -> report

``ensure_models`` trains a model only when it has no ``champion`` yet (the first night);
otherwise the night uses the champions that ``encore_training`` promotes. Each task's outlets are
the Airflow assets of the tables its step writes. Runs are serialised (``max_active_runs=1``);
catchup is off, and ``airflow backfill create --dag-id encore_nightly --from-date … --to-date …
--max-active-runs 1`` produces one export per date. Keep ``--max-active-runs 1``: a backfill does
not follow the DAG's own limit (it runs 10 dates at once by default), and a date's clean and
features read the dates before it. A date without landing data fails ``ingest`` with one clear line
and writes nothing.
"""
from __future__ import annotations

from airflow.sdk import dag

from encore_dag_support import dag_settings, step_tasks


@dag(dag_id="encore_nightly", schedule="@daily", doc_md=__doc__, **dag_settings())
def encore_nightly():
    step_tasks("nightly")


encore_nightly()
