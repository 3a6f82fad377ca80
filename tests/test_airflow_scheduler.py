"""A real Airflow (scheduler, DAG processor, API server, LocalExecutor) backfills encore_nightly for
two dates through infra/airflow/local_airflow.py, the script the README documents: one run and one
export per date, oldest first, no duplicated rows; Airflow's SQLite database is left in
write-ahead-log mode, so the script's polling does not lock the scheduler out."""
from __future__ import annotations

import datetime as dt
import importlib.util
import sqlite3
from pathlib import Path

import pytest

from tests.homes import BACKFILL_DATES, LOCAL_AIRFLOW

DATES = BACKFILL_DATES
SCRIPT = LOCAL_AIRFLOW


def test_a_failed_airflow_call_reports_the_error_not_sqlalchemys_link():
    spec = importlib.util.spec_from_file_location("local_airflow", SCRIPT)
    local_airflow = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(local_airflow)
    stderr = ("Traceback (most recent call last):\n  ...\n"
              "sqlalchemy.exc.OperationalError: (sqlite3.OperationalError) database is locked\n"
              "[SQL: SELECT dag_run.state FROM dag_run]\n"
              "(Background on this error at: https://sqlalche.me/e/20/e3q8)\n")
    assert local_airflow.error_line(stderr) == \
        "sqlalchemy.exc.OperationalError: (sqlite3.OperationalError) database is locked"
    assert local_airflow.error_line("Usage: airflow dags\nairflow: unknown command\n") == "airflow: unknown command"


@pytest.mark.e2e
def test_a_real_scheduler_backfills_the_nightly_dag_one_export_per_date(dag_night):
    """The session's ``dag_night`` is that backfill (tests/homes.py); tests/test_dags.py checks its tasks."""
    from encore.delta_reader import read_filtered
    assert dag_night.returncode == 0, dag_night.output[-6000:]
    database = sqlite3.connect(dag_night.home.parent / "airflow" / "airflow.db")
    assert database.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    database.close()
    for date in DATES:
        assert f"encore_nightly {date}: success (run backfill__{date}" in dag_night.output, dag_night.output
        assert f"{date} validate        success" in dag_night.output
    config = dag_night.config()
    exports = sorted(p.name for p in Path(config.path("exports")).iterdir() if not p.name.startswith("."))
    assert exports == [f"run_date={d}" for d in DATES]
    assert all((Path(config.path("exports")) / e / "_SUCCESS").is_file() for e in exports)
    recs = read_filtered(config, "warehouse.recommendations", [("run_date", ">=", dt.date.fromisoformat(DATES[0]))],
                         ["run_date", "user_id", "rank"]).frame
    assert sorted(recs["run_date"].astype(str).unique()) == list(DATES)
    assert not recs.duplicated(["run_date", "user_id", "rank"]).any()
