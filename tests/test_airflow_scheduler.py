"""A real Airflow (scheduler, DAG processor, API server, LocalExecutor) runs encore_nightly for a
date through infra/airflow/local_airflow.py, the script the README documents."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO, TEST_ENV, make_config
from tests.test_dags import small_night_env


def test_a_real_scheduler_runs_the_nightly_dag(tmp_path):
    from jobs.cli import _generate
    env = small_night_env(tmp_path / "encore")
    config = make_config(Path(env["ENCORE_HOME"]), **{k: v for k, v in env.items() if k.startswith("ENCORE__")})
    _generate(config)
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("ENCORE", "AIRFLOW"))}
    full_env.update(env)
    done = subprocess.run([sys.executable, str(REPO / "infra" / "airflow" / "local_airflow.py"), "--date", "2026-11-20",
                           "--airflow-home", str(tmp_path / "airflow"), "--timeout", "1500"],
                          env=full_env, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    assert "encore_nightly 2026-11-20: success" in done.stdout
    assert all(f"{task}" in done.stdout for task in ("ingest", "validate"))
    assert (Path(config.path("exports")) / "run_date=2026-11-20" / "_SUCCESS").is_file()
