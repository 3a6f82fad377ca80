"""What both Encore DAGs share: their tasks, built from the step registry (encore.pipeline.steps),
each a thin call of the ``encore`` CLI (the same entry point people run by hand); retries with
backoff, the failure summary, and the table assets each task writes. The export task also emits
the ready signal for consumers: an event of the asset ``encore://exports/nightly`` whose ``extra`` is the
export's summary (``encore.notify.export_summary``: run date, manifest URI, rows per dataset);
``dags/encore_export_consumer.py`` is an example consumer.

Where a task runs follows the profile's ``airflow.submit`` (profile from ``ENCORE_PROFILE``):

* ``local``: ``encore <step> --date {{ ds }}`` in its own process on the Airflow worker (Spark
  in-process, Ray in-process), with the worker's environment (``ENCORE_HOME``, ``ENCORE__…``).
* ``cluster``: Spark steps go to ``spark.master`` with ``SparkSubmitOperator`` (client mode, the
  application is the same CLI: encore/pipeline/entrypoints/spark_step.py, with the Spark settings of the one
  session factory); Ray steps become Ray jobs on ``ray.dashboard`` (encore/pipeline/submission.py) with
  the worker's ``ENCORE_*`` settings; the worker only waits and streams their logs.

Either way a task holds no JVM or Ray state between runs and a retry simply reruns an idempotent step.
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


def dag_settings() -> dict:
    """What every Encore DAG shares: start date, no catchup, one run at a time, retries (``airflow.retries``),
    failure summary. ``ENCORE_AIRFLOW_END_DATE=YYYY-MM-DD`` ends the schedule on that date: the scheduler then
    creates no run of its own after it, which infra/airflow/local_airflow.py uses for backfills."""
    import pendulum
    retries = int(_config().get("airflow.retries", DEFAULT_ARGS["retries"]))
    settings = {"start_date": pendulum.datetime(2026, 11, 1, tz="UTC"), "catchup": False, "max_active_runs": 1,
                "default_args": {**DEFAULT_ARGS, "retries": retries, "on_failure_callback": summarise_failure},
                "tags": ["encore"]}
    end = os.environ.get("ENCORE_AIRFLOW_END_DATE")
    if end:
        settings["end_date"] = pendulum.parse(end).in_timezone("UTC")
    return settings


def encore_executable() -> str:
    """``$ENCORE_BIN``, else the ``encore`` beside this Python, else the one on PATH."""
    beside = Path(sys.executable).parent / "encore"
    found = os.environ.get("ENCORE_BIN") or (str(beside) if beside.exists() else shutil.which("encore"))
    if not found:
        raise RuntimeError("the encore CLI is not installed in this Airflow environment: pip install the project "
                           "into it, or set ENCORE_BIN")
    return found


def _config():
    from encore.config import load_config
    return load_config()


def step(task_id: str, command: str, engine: str, outlets=(), **kwargs):
    """A task running ``encore <command>`` (Jinja-templated, e.g. ``score --date {{ ds }}``).

    ``engine`` ("spark" or "ray") says which cluster the step runs on in the cluster profile; a
    "python" step (the report) runs in the task's own process in every profile."""
    if engine not in ("spark", "ray", "python"):
        raise ValueError(f"engine must be 'spark', 'ray' or 'python', not {engine!r}")
    config = _config()
    mode = config.airflow.submit
    if mode not in ("local", "cluster"):
        raise ValueError(f"airflow.submit must be 'local' or 'cluster', not {mode!r} (profile {config.profile})")
    if mode == "local" or engine == "python":
        from airflow.providers.standard.operators.bash import BashOperator
        return BashOperator(task_id=task_id, bash_command=f"{encore_executable()} {command}",
                            outlets=list(outlets), append_env=True, **kwargs)
    if engine == "spark":
        return _spark_submit(config, task_id, command, outlets, **kwargs)
    from airflow.providers.standard.operators.python import PythonOperator
    from encore.ray_runtime import apply_auth_mode
    apply_auth_mode(config)   # in the task process too (it imports this file first), before Ray is imported
    return PythonOperator(task_id=task_id, python_callable=run_ray_step, op_kwargs={"command": command},
                          outlets=list(outlets), **kwargs)


def _spark_submit(config, task_id: str, command: str, outlets, **kwargs):
    """SparkSubmitOperator for one step, against the connection ``airflow.spark_conn_id``; when no such
    connection is defined, it is defined here from ``spark.master`` (an ``AIRFLOW_CONN_…`` variable,
    seen by the task process too, since it imports this file before running the task)."""
    from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
    import encore.pipeline.entrypoints.spark_step as entry
    from encore.spark import session_settings
    settings, _ = session_settings(config)
    master = settings.pop("spark.master")
    conn_id = config.airflow.spark_conn_id
    os.environ.setdefault(f"AIRFLOW_CONN_{conn_id.upper()}", master)
    jars = settings.pop("spark.jars", None)
    bin_dir = str(Path(sys.executable).parent)   # spark-submit comes with pyspark, beside this Python
    return SparkSubmitOperator(
        task_id=task_id, conn_id=conn_id, application=entry.__file__, application_args=template_args(command),
        conf=settings, jars=jars, name=f"encore-{task_id}", outlets=list(outlets),
        env_vars={"PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
                  "PYSPARK_PYTHON": settings["spark.pyspark.python"]},
        **kwargs)


def template_args(command: str) -> list[str]:
    """Split a command line into arguments, keeping each Jinja ``{{ … }}`` whole (it is rendered later)."""
    import re
    return re.findall(r"\{\{.*?\}\}|\S+", command)


def run_ray_step(command: str, **context) -> None:
    """PythonOperator callable: ``encore <command>`` as a Ray job on the configured cluster."""
    from encore.pipeline.submission import run_as_ray_job, submission_id
    job_id = submission_id(context["run_id"], context["ti"].task_id)
    run_as_ray_job(_config(), command.split(), job_id, echo=log.info)


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


def table_asset(name: str):
    """The Airflow Asset of one lakehouse table: ``encore://<layer>/<table>``, the same on every
    installation and home (Airflow knows an asset by name and URI, and marks one whose URI moved as
    inactive); where the table lives now is in the asset's ``extra``."""
    from airflow.sdk import Asset
    from encore.locations import table_path
    layer, table = name.split(".")
    return Asset(name=f"encore.{name}", uri=f"encore://{layer}/{table}", extra={"location": table_path(_config(), name)})


EXPORT_STEP = "export"


def exports_asset():
    """The Airflow Asset a published export is announced on; its events' ``extra`` is the export's summary."""
    from airflow.sdk import Asset
    return Asset(name="encore.exports", uri="encore://exports/nightly")


def announce_export(context, result) -> None:
    """post_execute of the export task (whichever operator runs it): its asset event carries the summary."""
    import datetime as dt
    from encore.notify import export_summary
    summary = export_summary(_config(), dt.date.fromisoformat(context["ds"]))
    context["outlet_events"][exports_asset()].extra = summary
    log.info("announced %s on %s: %s", summary["export_uri"], exports_asset().uri, summary["rows"])


def step_tasks(dag: str) -> list:
    """One task per registered step of ``dag`` ("nightly" or "training"), chained in registry order;
    a nightly step runs for ``{{ ds }}``, and each task's outlets are the tables its step writes (the
    export task's, the exports asset with the export's summary)."""
    from airflow.sdk import chain
    from encore.pipeline import steps
    tasks = []
    for s in steps.of_dag(dag):
        outlets, extra = [table_asset(name) for name in s.writes], {}
        if s.name == EXPORT_STEP:
            outlets.append(exports_asset())
            extra["post_execute"] = announce_export
        tasks.append(step(s.task_id, f"{s.name} --date {{{{ ds }}}}" if s.dated else s.name, s.engine,
                          outlets=outlets, **extra))
    chain(*tasks)
    return tasks
