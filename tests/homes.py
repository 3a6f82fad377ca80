"""Test support: the settings of the tests' small worlds, and homes prepared once per session and
copied into each test that needs one (a whole first night's training costs more than the test).

``copy_home`` moves an Encore home as an operator would restore one elsewhere: the files, and the
absolute paths MLflow's SQLite store keeps (experiment and model artifact locations).
"""
from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import PROCESS_ENV, REPO, make_config

TINY = {
    "ENCORE__MUSIC__CORPUS__LIMIT_PER_SOURCE": "6",
    "ENCORE__MUSIC__CORPUS__BPE_VOCAB_SIZE": "400",
    "ENCORE__MUSIC__TRAIN__CONTEXT": "96",
    "ENCORE__MUSIC__TRAIN__D_MODEL": "32",
    "ENCORE__MUSIC__TRAIN__N_LAYERS": "1",
    "ENCORE__MUSIC__TRAIN__N_HEADS": "2",
    "ENCORE__MUSIC__TRAIN__EPOCHS": "3",
    "ENCORE__MUSIC__TRAIN__BATCH_SIZE": "8",
    "ENCORE__MUSIC__TRAIN__LR": "0.003",
    "ENCORE__MUSIC__TRAIN__WARMUP_STEPS": "5",
    "ENCORE__MUSIC__TRAIN__DROPOUT": "0.0",
    "ENCORE__MUSIC__REPORT__SKETCHES_PER_STYLE": "2",
    "ENCORE__MUSIC__REPORT__BARS": "2",
}


# A model trained for seconds rarely passes the music checks; a small world's nights only need sketches
# that decode (tests/test_music.py holds the strict rules).
LENIENT_CHECKS = {
    "ENCORE__MUSIC__GENERATE__MIN_IN_SCALE": "0", "ENCORE__MUSIC__GENERATE__MIN_DIATONIC_SHARE": "0",
    "ENCORE__MUSIC__GENERATE__REQUIRE_KEY": "false", "ENCORE__MUSIC__GENERATE__MIN_BAR_FILL": "0",
    "ENCORE__MUSIC__GENERATE__MAX_SHARED_INTERVALS": "1000",
}
SMALL_WORLD = {   # 60 listeners, 300 artists, tiny models, no search, small pools
    **TINY, **LENIENT_CHECKS,
    "ENCORE__GENERATE__USERS": "60", "ENCORE__GENERATE__ITEMS": "300", "ENCORE__GENERATE__EVENTS_PER_DAY": "3000",
    "ENCORE__GENERATE__BOTS": "0", "ENCORE__RECOMMENDER__SEARCH__TRIALS": "0",
    "ENCORE__RECOMMENDER__PARAMS__EPOCHS": "10", "ENCORE__RECOMMENDER__PARAMS__ENSEMBLE": "1",
    "ENCORE__PACKS__POOL_PER_CONDITION": "2", "ENCORE__PACKS__CONDITIONS_PER_STYLE": "2", "ENCORE__PACKS__BARS": "2",
}


def small_night_env(home: Path) -> dict[str, str]:
    """ENCORE_* settings for one small synthetic date and tiny models (shared with the scheduler test)."""
    return {**PROCESS_ENV, **SMALL_WORLD, "ENCORE_HOME": str(home), "ENCORE__GENERATE__DAYS": "1",
            "ENCORE__GENERATE__END_DATE": "2026-11-20", "ENCORE__SCORE__TOP_K": "10"}


def copy_home(source: Path, target: Path) -> Path:
    """Copy an Encore home to ``target`` and point its MLflow store's absolute paths there."""
    shutil.copytree(source, target)
    database = target / "mlflow.db"
    if database.is_file():
        old, new = str(source), str(target)
        with sqlite3.connect(database) as db:
            tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            for table in tables:
                for _, column, kind, *_ in db.execute(f'PRAGMA table_info("{table}")').fetchall():
                    if any(t in kind.upper() for t in ("CHAR", "TEXT", "CLOB")) or not kind:
                        db.execute(f'UPDATE "{table}" SET "{column}" = replace("{column}", ?, ?) '
                                   f'WHERE "{column}" LIKE ?', (old, new, f"%{old}%"))
    return target


SMALL_NIGHT_DAY = "2026-11-20"
KEEP_IN_TRAINED_HOME = ("mlflow.db", "mlartifacts", "artifacts", "lakehouse/gold/music_sequences",
                        "lakehouse/silver/music_quarantine")


def build_trained_home(spark, home: Path) -> Path:
    """A home as a first night of the small world leaves it, less its play data: both models trained,
    registered and ``champion`` in its MLflow store, the music corpus and tokenizer in place; no
    landing files and no bronze, silver or gold play tables, so that a test's own night ingests,
    cleans and builds features from nothing and finds the models ready (``ensure-models`` trains nothing)."""
    import datetime as dt

    import ray

    from encore.lakehouse import Lakehouse
    from encore.pipeline.steps import StepContext, ensure_models_run
    from encore.sources.generate_logs import generate_from_config
    from jobs.clean import clean_date
    from jobs.features import build_features
    from jobs.ingest import ingest_landing

    day = dt.date.fromisoformat(SMALL_NIGHT_DAY)
    env = small_night_env(home)
    config = make_config(home, **{k: v for k, v in env.items() if k.startswith("ENCORE__")})
    # Not registered in the session's catalog: most of these tables are deleted below, and a catalog
    # entry pointing at a deleted table breaks every later test that registers its own.
    lake = Lakehouse(config, spark, catalog=False)
    generate_from_config(config)
    ingest_landing(lake, [day])
    clean_date(lake, day)
    build_features(lake, day)
    ctx = StepContext(config, day, lake=lake)
    ensure_models_run(ctx)
    assert [name for name, _, _ in ctx.report.steps] == [
        "train-recommender (no champion yet)", "corpus (no music corpus yet)", "train-music (no champion yet)"]
    ray.shutdown()
    keep = {home / k for k in KEEP_IN_TRAINED_HOME}
    for path in sorted(home.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if any(path == k or k in path.parents for k in keep) or any(path in k.parents for k in keep):
            continue
        shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
    return home


def migrated_airflow(home: Path) -> dict[str, str]:
    """Settings for an Airflow that reads the project's DAGs and keeps its SQLite database in
    ``home``, migrated; returned as environment variables."""
    settings = {"AIRFLOW_HOME": str(home), "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "AIRFLOW__CORE__UNIT_TEST_MODE": "False"}
    done = subprocess.run([str(Path(sys.executable).parent / "airflow"), "db", "migrate"],
                          env={**os.environ, **settings}, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return settings


@dataclass
class DagNight:
    """What a run of encore_nightly left: the home it ran on, the ENCORE_* settings, the process's exit
    status and its output (stdout, then stderr)."""
    home: Path
    env: dict[str, str]
    returncode: int
    output: str

    def config(self):
        return make_config(self.home, **{k: v for k, v in self.env.items() if k.startswith("ENCORE__")})


BACKFILL_DATES = ("2026-11-19", SMALL_NIGHT_DAY)
LOCAL_AIRFLOW = REPO / "infra" / "airflow" / "local_airflow.py"


def run_nightly_backfill(trained_home: Path, workdir: Path) -> DagNight:
    """Copy ``trained_home`` into ``workdir``, land the small world's two dates and backfill encore_nightly
    for them on a real Airflow (scheduler, DAG processor, API server, LocalExecutor) through
    infra/airflow/local_airflow.py, the script the README documents, in a process of its own: Airflow's
    task runners then share nothing with the test process and its Spark session. Airflow's home is
    ``workdir / "airflow"``."""
    from encore.sources.generate_logs import generate_from_config
    env = {**small_night_env(copy_home(trained_home, workdir / "encore")), "ENCORE__GENERATE__DAYS": "2"}
    night = DagNight(Path(env["ENCORE_HOME"]), env, -1, "")
    generate_from_config(night.config())
    process_env = {k: v for k, v in os.environ.items() if not k.startswith(("ENCORE", "AIRFLOW"))}
    process_env.update(env)
    done = subprocess.run([sys.executable, str(LOCAL_AIRFLOW), "--backfill", *BACKFILL_DATES,
                           "--airflow-home", str(workdir / "airflow"), "--timeout", "1800"],
                          env=process_env, capture_output=True, text=True, timeout=2100)
    night.returncode, night.output = done.returncode, done.stdout + done.stderr
    return night
