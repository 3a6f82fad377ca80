"""encore_nightly: one logical date end to end, each task a thin call of the ``encore`` CLI.

ingest -> clean -> features -> ensure_models -> score -> generate -> export -> validate

``ensure_models`` trains a model only when it has no ``champion`` yet (the first night);
otherwise the night uses the champions that ``encore_training`` promotes. Runs are serialised
(``max_active_runs=1``); catchup is off, and ``airflow backfill create --dag-id encore_nightly
--from-date … --to-date … --max-active-runs 1`` produces one export per date. Keep
``--max-active-runs 1``: a backfill does not follow the DAG's own limit (it runs 10 dates at once by
default), and a date's clean and features read the dates before it. A date without landing data fails
``ingest`` with one clear line and writes nothing.
"""
from __future__ import annotations

from airflow.sdk import dag

from encore_dag_support import dag_settings, step, table_assets
from schemas.table_names import (GOLD_INTERACTIONS, GOLD_ITEMS, GOLD_USER_PROFILES,
                                   WAREHOUSE_INSPIRATION_PACKS, WAREHOUSE_RECOMMENDATIONS)


@dag(dag_id="encore_nightly", schedule="@daily", doc_md=__doc__, **dag_settings())
def encore_nightly():
    assets = table_assets()
    date = "--date {{ ds }}"
    ingest = step("ingest", f"ingest {date}", "spark")
    clean = step("clean", f"clean {date}", "spark")
    features = step("features", f"features {date}", "spark",
                    outlets=[assets[GOLD_INTERACTIONS], assets[GOLD_ITEMS], assets[GOLD_USER_PROFILES]])
    ensure_models = step("ensure_models", f"ensure-models {date}", "ray")
    score = step("score", f"score {date}", "ray", outlets=[assets[WAREHOUSE_RECOMMENDATIONS]])
    generate = step("generate", f"generate {date}", "ray", outlets=[assets[WAREHOUSE_INSPIRATION_PACKS]])
    export = step("export", f"export {date}", "spark")
    validate = step("validate", f"validate {date}", "spark")
    ingest >> clean >> features >> ensure_models >> score >> generate >> export >> validate


encore_nightly()
