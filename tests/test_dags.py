"""The Airflow DAGs on real Airflow 3: the DagBag imports cleanly, tasks run in the documented
order, and ``dag.test()`` runs the nightly DAG end to end (every task a real ``encore`` process on
small data) against an Airflow metadata database of its own."""
from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from tests.conftest import REPO, TEST_ENV, make_config
from tests.test_music import TINY

DAGS = REPO / "dags"
NIGHTLY_ORDER = ["ingest", "clean", "features", "ensure_models", "score", "generate", "export", "validate"]


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory):
    """Airflow configured for the project's DAGs with its own SQLite database (migrated once)."""
    home = tmp_path_factory.mktemp("airflow")
    settings = {"AIRFLOW_HOME": str(home), "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "AIRFLOW__CORE__UNIT_TEST_MODE": "False"}
    saved = {k: os.environ.get(k) for k in settings}
    os.environ.update(settings)
    airflow = str(Path(sys.executable).parent / "airflow")
    done = subprocess.run([airflow, "db", "migrate"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    if str(DAGS) not in sys.path:
        sys.path.insert(0, str(DAGS))   # as Airflow does for its DAGs folder
    yield home
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


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
    assert set(bag.dag_ids) == {"encore_nightly", "encore_training"}


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
    assert _chain(training) == ["corpus", "train_recommender", "train_music"]
    assert nightly.max_active_runs == 1 and not nightly.catchup
    score = nightly.get_task("score")
    assert score.retries == 2 and score.retry_exponential_backoff and score.on_failure_callback
    assert score.bash_command.endswith("score --date {{ ds }}")
    assert {a.name for a in score.outlets} == {"encore.warehouse.recommendations"}
    assert {a.name for a in nightly.get_task("features").outlets} == {
        "encore.gold.interactions", "encore.gold.items", "encore.gold.user_profiles"}


def small_night_env(home: Path) -> dict[str, str]:
    """ENCORE_* settings for one small synthetic date and tiny models (shared with the scheduler test)."""
    return {**TEST_ENV, **TINY, "ENCORE_HOME": str(home),
            "ENCORE__GENERATE__DAYS": "1", "ENCORE__GENERATE__USERS": "60", "ENCORE__GENERATE__ITEMS": "300",
            "ENCORE__GENERATE__EVENTS_PER_DAY": "3000", "ENCORE__GENERATE__BOTS": "0",
            "ENCORE__GENERATE__END_DATE": "2026-11-20",
            "ENCORE__RECOMMENDER__SEARCH__TRIALS": "0", "ENCORE__RECOMMENDER__PARAMS__EPOCHS": "10",
            "ENCORE__RECOMMENDER__PARAMS__ENSEMBLE": "1", "ENCORE__SCORE__TOP_K": "10",
            "ENCORE__PACKS__POOL_PER_CONDITION": "2", "ENCORE__PACKS__CONDITIONS_PER_STYLE": "2",
            "ENCORE__PACKS__BARS": "2", "ENCORE__MUSIC__GENERATE__MIN_IN_SCALE": "0",
            "ENCORE__MUSIC__GENERATE__MIN_BAR_FILL": "0", "ENCORE__MUSIC__GENERATE__MAX_SHARED_INTERVALS": "1000"}


def test_nightly_dag_runs_end_to_end_with_dag_test(airflow_home, tmp_path):
    """``airflow dags test`` (Dag.test) in its own process, as an operator would run it: Airflow's
    task runner then shares nothing with this test process and its Spark session."""
    from jobs.cli import _generate
    from ray_jobs.gold import read_filtered
    day = dt.date(2026, 11, 20)
    env = small_night_env(tmp_path / "encore")
    config = make_config(Path(env["ENCORE_HOME"]), **{k: v for k, v in env.items() if k.startswith("ENCORE__")})
    _generate(config)
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("ENCORE")}
    full_env.update(env)
    airflow = str(Path(sys.executable).parent / "airflow")
    done = subprocess.run([airflow, "dags", "test", "encore_nightly", day.isoformat()], env=full_env,
                          capture_output=True, text=True, timeout=1500)
    output = done.stdout + done.stderr
    assert done.returncode == 0 and "DagRun Finished: dag_id=encore_nightly" in output, output[-3000:]
    finished = [line for line in output.splitlines() if "DagRun Finished: dag_id=encore_nightly" in line][-1]
    assert "state=success" in finished, output[-3000:]
    for task in NIGHTLY_ORDER:
        assert f"[DAG TEST] end task task_id={task}" in output, task
    export = Path(config.path("exports")) / f"run_date={day}"
    assert (export / "_SUCCESS").is_file()
    recs = read_filtered(config, "warehouse.recommendations", [("run_date", "=", day)], ["user_id", "rank"]).frame
    assert len(recs) == 10 * recs["user_id"].nunique() > 0
