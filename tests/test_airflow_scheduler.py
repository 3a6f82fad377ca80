"""A real Airflow (scheduler, DAG processor, API server, LocalExecutor) backfills encore_nightly for
two dates through infra/airflow/local_airflow.py, the script the README documents: one run and one
export per date, oldest first, no duplicated rows; Airflow's SQLite database is left in
write-ahead-log mode, so the script's polling does not lock the scheduler out."""
from __future__ import annotations

import datetime as dt
import importlib.util
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, make_config
from tests.homes import copy_home, small_night_env

DATES = ("2026-11-19", "2026-11-20")
SCRIPT = REPO / "infra" / "airflow" / "local_airflow.py"


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
def test_a_real_scheduler_backfills_the_nightly_dag_one_export_per_date(trained_home, tmp_path):
    from encore.sources.generate_logs import generate_from_config
    from encore.delta_reader import read_filtered
    env = {**small_night_env(copy_home(trained_home, tmp_path / "encore")), "ENCORE__GENERATE__DAYS": "2"}
    config = make_config(Path(env["ENCORE_HOME"]), **{k: v for k, v in env.items() if k.startswith("ENCORE__")})
    generate_from_config(config)
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("ENCORE", "AIRFLOW"))}
    full_env.update(env)
    done = subprocess.run([sys.executable, str(SCRIPT), "--backfill", *DATES,
                           "--airflow-home", str(tmp_path / "airflow"), "--timeout", "1800"],
                          env=full_env, capture_output=True, text=True, timeout=2100)
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    database = sqlite3.connect(tmp_path / "airflow" / "airflow.db")
    assert database.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    database.close()
    for date in DATES:
        assert f"encore_nightly {date}: success (run backfill__{date}" in done.stdout, done.stdout
        assert f"{date} validate        success" in done.stdout
    exports = sorted(p.name for p in Path(config.path("exports")).iterdir() if not p.name.startswith("."))
    assert exports == [f"run_date={d}" for d in DATES]
    assert all((Path(config.path("exports")) / e / "_SUCCESS").is_file() for e in exports)
    recs = read_filtered(config, "warehouse.recommendations", [("run_date", ">=", dt.date.fromisoformat(DATES[0]))],
                         ["run_date", "user_id", "rank"]).frame
    assert sorted(recs["run_date"].astype(str).unique()) == list(DATES)
    assert not recs.duplicated(["run_date", "user_id", "rank"]).any()
