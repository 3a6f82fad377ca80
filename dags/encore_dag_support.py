"""What both Encore DAGs share: the task factory (a thin call of the ``encore`` CLI, the same entry
point people run by hand), retries with backoff, the failure summary, and the table assets.

Each task runs ``encore <step> --date {{ ds }}`` in its own process with the worker's environment
(``ENCORE_HOME``, ``ENCORE_PROFILE``, ``ENCORE__…`` overrides), so a task holds no JVM or Ray
state between runs and a retry simply reruns an idempotent step.
"""
from __future__ import annotations

import logging
import os
import shutil
import sys
from datetime import timedelta
from pathlib import Path

log = logging.getLogger("encore.dags")

DEFAULT_ARGS = {
    "owner": "encore",
    "retries": 2,
    "retry_delay": timedelta(minutes=2),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=30),
}


def schedule(default: str) -> str | None:
    """The DAG's schedule, or None (triggered runs only) when ``ENCORE_AIRFLOW_SCHEDULES=off``, as in
    infra/airflow/local_airflow.py, where unpausing must not also start the latest interval."""
    return None if os.environ.get("ENCORE_AIRFLOW_SCHEDULES", "on").lower() == "off" else default


def dag_settings() -> dict:
    """What every Encore DAG shares: start date, no catchup, one run at a time, retries, failure summary."""
    import pendulum
    return {"start_date": pendulum.datetime(2026, 11, 1, tz="UTC"), "catchup": False, "max_active_runs": 1,
            "default_args": {**DEFAULT_ARGS, "on_failure_callback": summarise_failure}, "tags": ["encore"]}


def encore_executable() -> str:
    """``$ENCORE_BIN``, else the ``encore`` beside this Python, else the one on PATH."""
    beside = Path(sys.executable).parent / "encore"
    found = os.environ.get("ENCORE_BIN") or (str(beside) if beside.exists() else shutil.which("encore"))
    if not found:
        raise RuntimeError("the encore CLI is not installed in this Airflow environment: pip install the project "
                           "into it, or set ENCORE_BIN")
    return found


def step(task_id: str, command: str, outlets=(), **kwargs):
    """A task running ``encore <command>`` (Jinja-templated, e.g. ``score --date {{ ds }}``)."""
    from airflow.providers.standard.operators.bash import BashOperator
    return BashOperator(task_id=task_id, bash_command=f"{encore_executable()} {command}", outlets=list(outlets),
                        append_env=True, **kwargs)


def summarise_failure(context) -> None:
    """on_failure_callback: one block in the task log saying what failed, when, and where to look."""
    ti = context.get("task_instance")
    exception = context.get("exception")
    lines = [
        f"ENCORE FAILURE dag={ti.dag_id if ti else '?'} task={ti.task_id if ti else '?'} "
        f"run={context.get('run_id')} logical_date={context.get('logical_date')} try={ti.try_number if ti else '?'}",
        f"  error: {str(exception).splitlines()[-1] if exception and str(exception) else exception!r}",
        "  the task's log ends with the step's own `encore: error: …` line when the problem is in the input;",
        "  every step is idempotent: clear the task to rerun it once the cause is fixed.",
    ]
    log.error("\n".join(lines))


def table_assets() -> dict:
    """One Airflow Asset per lakehouse table the nightly DAG writes, at its configured location."""
    from airflow.sdk import Asset
    from jobs.config import load_config
    from jobs.lakehouse import table_path
    config = load_config()
    assets = {}
    for name in ("gold.interactions", "gold.items", "gold.user_profiles", "warehouse.recommendations",
                 "warehouse.inspiration_packs"):
        path = table_path(config, name)
        uri = path.replace("s3a://", "s3://", 1) if "://" in path else f"file://{path}"
        assets[name] = Asset(name=f"encore.{name}", uri=uri)
    return assets
