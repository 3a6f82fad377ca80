"""The Airflow DAGs on real Airflow 3: the DagBag imports cleanly, tasks run in the documented
order, a real scheduler's backfill of the nightly DAG (every task a real ``encore`` process on small
data) ran each task in order and announced each export, and ``airflow dags test`` fails a date without
landing data at ingest."""
from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.homes import BACKFILL_DATES, SMALL_NIGHT_DAY, small_night_env

DAGS = REPO / "dags"
NIGHTLY_ORDER = ["ingest", "clean", "features", "ensure_models", "score", "generate", "export", "validate", "report"]


def _dagbag():
    from airflow.dag_processing.dagbag import DagBag
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bag = DagBag(dag_folder=str(DAGS))
    ours = [w for w in caught if str(DAGS) in str(w.filename)]
    return bag, ours


def test_dagbag_imports_without_errors_or_warnings(airflow_home):
    bag, ours = _dagbag()
    assert bag.import_errors == {}
    assert not bag.dag_warnings and not ours, (bag.dag_warnings, [str(w.message) for w in ours])
    assert set(bag.dag_ids) == {"encore_nightly", "encore_training", "encore_export_consumer"}


def _chain(dag) -> list[str]:
    roots = [t for t in dag.tasks if not t.upstream_task_ids]
    assert len(roots) == 1, [t.task_id for t in roots]
    order, task = [], roots[0]
    while True:
        order.append(task.task_id)
        if not task.downstream_task_ids:
            return order
        assert len(task.downstream_task_ids) == 1
        task = dag.get_task(next(iter(task.downstream_task_ids)))


def test_task_order_retries_and_assets(airflow_home):
    bag, _ = _dagbag()
    nightly, training = bag.get_dag("encore_nightly"), bag.get_dag("encore_training")
    assert _chain(nightly) == NIGHTLY_ORDER
    assert _chain(training) == ["corpus", "train_recommender", "train_music", "maintain"]
    assert training.get_task("maintain").bash_command.endswith("encore maintain")   # weekly upkeep, after training
    assert nightly.max_active_runs == 1 and not nightly.catchup
    score = nightly.get_task("score")
    assert score.retries == 2 and score.retry_exponential_backoff and score.on_failure_callback
    assert score.bash_command.endswith("score --date {{ ds }}")
    assert {a.name for a in score.outlets} == {"encore.warehouse.recommendations"}
    assert {a.name for a in nightly.get_task("features").outlets} == {
        "encore.gold.interactions", "encore.gold.items", "encore.gold.user_profiles"}
    # The ready signal: the export task's event of encore://exports/nightly, the example consumer's schedule.
    export = nightly.get_task("export")
    assert "encore://exports/nightly" in {a.uri for a in export.outlets} and export.post_execute is not None
    consumer = bag.get_dag("encore_export_consumer")
    condition = consumer.timetable.asset_condition            # schedule=[asset] is "all of these"
    assert [a.uri for a in getattr(condition, "objects", [condition])] == ["encore://exports/nightly"]


@pytest.mark.e2e
def test_the_scheduled_nightly_runs_end_every_task_in_order_and_announce_each_export(dag_night, tmp_path):
    """The session's ``dag_night``, a real scheduler's backfill of two dates (tests/homes.py): each run's
    tasks ended in the DAG's order, the last date has its export and its lists, every task process
    recorded its step in the ledger, and each export task announced its export."""
    from encore.delta_reader import read_filtered
    assert dag_night.returncode == 0, dag_night.output[-3000:]
    day = dt.date.fromisoformat(SMALL_NIGHT_DAY)
    with sqlite3.connect(dag_night.home.parent / "airflow" / "airflow.db") as db:
        for date in BACKFILL_DATES:
            ended = [task for (task,) in db.execute(
                "SELECT task_id FROM task_instance WHERE dag_id = 'encore_nightly' AND run_id LIKE ? "
                "AND state = 'success' ORDER BY end_date", (f"backfill__{date}%",))]
            assert ended == NIGHTLY_ORDER, (date, ended)
        events = db.execute("SELECT e.source_task_id, e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id "
                            "WHERE a.uri = 'encore://exports/nightly' ORDER BY e.timestamp").fetchall()
    config = dag_night.config()
    export = Path(config.path("exports")) / f"run_date={day}"
    assert (export / "_SUCCESS").is_file()
    recs = read_filtered(config, "warehouse.recommendations", [("run_date", "=", day)], ["user_id", "rank"]).frame
    assert len(recs) == 10 * recs["user_id"].nunique() > 0
    report = json.loads((Path(config.path("reports")) / f"run_date={day}" / "report.json").read_text())
    steps = [r["step"] for r in report["sections"]["night"]["data"]["steps"]]
    assert steps == [t.replace("_", "-") for t in NIGHTLY_ORDER[:-1]]

    # The export task announced the export on encore://exports/nightly, with its summary; the example consumer
    # accepts that export, and refuses a copy with a changed file.
    assert [task for task, _ in events] == ["export"] * len(BACKFILL_DATES), events
    summaries = [json.loads(extra) for _, extra in events]
    assert [s["run_date"] for s in summaries] == list(BACKFILL_DATES)
    summary = summaries[-1]
    assert summary["rows"]["recommendations"] == len(recs)
    assert summary["manifest_uri"] == (export / "manifest.json").resolve().as_uri()
    sys.path.insert(0, str(DAGS))
    from encore_export_consumer import check_export
    assert check_export(summary)["files"] == summary["files"]
    copy = tmp_path / "copy"
    shutil.copytree(export, copy)
    tampered = next((copy / "midi").iterdir())
    tampered.write_bytes(tampered.read_bytes() + b"x")
    with pytest.raises(RuntimeError, match="missing or not"):
        check_export({**summary, "export_uri": copy.as_uri(), "manifest_uri": (copy / "manifest.json").as_uri()})


def test_cluster_profile_submits_spark_steps_with_spark_submit_and_ray_steps_as_ray_jobs(airflow_home, monkeypatch):
    """The same DAG files in the ``cluster`` profile: Spark steps become SparkSubmitOperator tasks with
    the session factory's settings, Ray steps PythonOperator tasks that submit Ray jobs."""
    from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
    from airflow.providers.standard.operators.python import PythonOperator
    from encore_dag_support import run_ray_step
    monkeypatch.setenv("ENCORE_PROFILE", "cluster")
    monkeypatch.delenv("AIRFLOW_CONN_ENCORE_SPARK", raising=False)
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")   # parsing sets it from ray.auth_mode; restored afterwards
    try:
        bag, ours = _dagbag()
        assert bag.import_errors == {} and not ours
        nightly, training = bag.get_dag("encore_nightly"), bag.get_dag("encore_training")
        assert _chain(nightly) == NIGHTLY_ORDER
        assert os.environ["AIRFLOW_CONN_ENCORE_SPARK"] == "spark://127.0.0.1:7077"
        assert os.environ["RAY_AUTH_MODE"] == "token"
    finally:
        os.environ.pop("AIRFLOW_CONN_ENCORE_SPARK", None)
    for task_id in ("ingest", "clean", "features", "export", "validate"):
        task = nightly.get_task(task_id)
        assert isinstance(task, SparkSubmitOperator), task_id
        assert task._conn_id == "encore_spark" and task.application.endswith("entrypoints/spark_step.py")
        assert task.application_args == [task_id, "--date", "{{ ds }}"]
        assert task.conf["spark.sql.extensions"] == "io.delta.sql.DeltaSparkSessionExtension"
        assert "spark.master" not in task.conf and "delta-spark" in task.jars
    for task_id in ("ensure_models", "score", "generate"):
        task = nightly.get_task(task_id)
        assert isinstance(task, PythonOperator) and task.python_callable is run_ray_step, task_id
        assert task.op_kwargs == {"command": f"{task_id.replace('_', '-')} --date {{{{ ds }}}}"}
    report = nightly.get_task("report")   # DuckDB and matplotlib in the task's own process, no cluster
    assert type(report).__name__ == "BashOperator" and report.bash_command.endswith("report --date {{ ds }}")
    assert isinstance(training.get_task("corpus"), SparkSubmitOperator)
    assert isinstance(training.get_task("maintain"), SparkSubmitOperator)
    assert isinstance(training.get_task("train_music"), PythonOperator)
    assert nightly.get_task("score").retries == 2


@pytest.mark.e2e
def test_a_date_without_landing_data_fails_the_run_at_ingest_and_writes_nothing(airflow_home, tmp_path):
    env = {**small_night_env(tmp_path / "encore"), "ENCORE__AIRFLOW__RETRIES": "0"}
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("ENCORE")}
    full_env.update(env)
    airflow = str(Path(sys.executable).parent / "airflow")
    done = subprocess.run([airflow, "dags", "test", "encore_nightly", "2026-11-20"], env=full_env,
                          capture_output=True, text=True, timeout=600)
    output = done.stdout + done.stderr
    finished = [line for line in output.splitlines() if "DagRun Finished: dag_id=encore_nightly" in line]
    assert finished and "state=failed" in finished[-1], output[-3000:]
    assert "encore: error: ingest 2026-11-20: no landing data for 2026-11-20" in output, output[-6000:]
    assert "ENCORE FAILURE dag=encore_nightly task=ingest" in output
    assert "[DAG TEST] start task task_id=clean" not in output     # nothing after ingest ran
    home = Path(env["ENCORE_HOME"])
    assert not (home / "lakehouse").exists() or not any((home / "lakehouse").rglob("_delta_log"))
    assert not (home / "exports").exists() or not any((home / "exports").iterdir())
