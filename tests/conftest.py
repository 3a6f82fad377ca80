"""Shared fixtures: one real Spark session (with Delta) for the test run, and a fresh lakehouse per test.

Every test gets its own ENCORE_HOME under pytest's tmp_path; the JVM is started once because
starting Spark costs seconds. Nothing here is mocked.
"""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import pytest

from encore.config import load_config

# Importing Airflow points the root logger at the stdout of that moment, which is pytest's capture,
# closed before the interpreter exits; py4j's connection finalizers then log "Closing down
# clientserver connection" at INFO into it ("--- Logging error ---" after the summary). The CLI
# keeps py4j at WARNING too.
logging.getLogger("py4j").setLevel(logging.WARNING)

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
HETREC_DIR = SHARED_DATA / "lastfm-hetrec2011"

TEST_ENV = {
    "ENCORE__SPARK__MASTER": "local[2]",
    "ENCORE__SPARK__DRIVER_MEMORY": "2g",
    "ENCORE__SPARK__CONF__SPARK.SQL.SHUFFLE.PARTITIONS": "2",
    # No web UI or event log for the hundreds of short test sessions (tests/test_cli.py turns them on once).
    "ENCORE__SPARK__CONF__SPARK.UI.ENABLED": "false",
    "ENCORE__SPARK__CONF__SPARK.EVENTLOG.ENABLED": "false",
}
# For steps the tests start as processes of their own (the CLI, Airflow tasks): each starts a JVM
# for seconds of work on tiny data, which the C2 compiler's work never pays back. With the JIT
# stopped at C1, a tiny `encore clean` took 30-32 s instead of 35-38 s. The shared test session
# and production keep the profile's options: at 10M events, C1 alone made ingest+clean 2x slower.
# The serial collector instead of the profile's parallel one: on 60 listeners `encore validate` took
# 18 CPU-s instead of 32 and `features` 38 instead of 62, while the s3a lakehouse test's heavier
# steps cost the same (145 and 150 CPU-s). One JIT compiler thread was tried too and made heavier
# steps slower (tests/benchmarks/jvm-history.md).
_PROFILE_JAVA_OPTIONS = load_config(environ={}).get("spark.java_options")
PROCESS_ENV = {**TEST_ENV, "ENCORE__SPARK__JAVA_OPTIONS":
               f"{_PROFILE_JAVA_OPTIONS.replace('-XX:+UseParallelGC', '-XX:+UseSerialGC')} -XX:TieredStopAtLevel=1"}


def make_config(home: Path, **overrides: str):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENCORE")}
    env.update(TEST_ENV)
    env["ENCORE_HOME"] = str(home)
    env.update(overrides)
    return load_config(environ=env)


@pytest.fixture(scope="session")
def spark(tmp_path_factory):
    from encore.spark import build_session
    session = build_session(make_config(tmp_path_factory.mktemp("spark-home")), "encore-tests")
    yield session
    session.stop()


@pytest.fixture
def lake_factory(spark, tmp_path):
    """Build a Lakehouse on the shared Spark session with its own home and optional ENCORE__ overrides."""
    from encore.lakehouse import Lakehouse

    def build(name: str = "home", **overrides: str):
        lake = Lakehouse(make_config(tmp_path / name, **overrides), spark)
        lake.register_all()
        return lake
    return build


@pytest.fixture
def lake(lake_factory):
    return lake_factory()


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory):
    """Airflow configured for the project's DAGs with its own SQLite database (migrated once)."""
    from tests.homes import migrated_airflow
    settings = migrated_airflow(tmp_path_factory.mktemp("airflow"))
    saved = {k: os.environ.get(k) for k in settings}
    os.environ.update(settings)
    if str(REPO / "dags") not in sys.path:
        sys.path.insert(0, str(REPO / "dags"))   # as Airflow does for its DAGs folder
    yield Path(settings["AIRFLOW_HOME"])
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    import socket
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory):
    """A real S3 endpoint on this machine: moto's S3 server (MinIO is neither on PyPI nor in Debian); its URL."""
    import socket
    import subprocess
    from encore.devtools.waiting import wait_until
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "server.log"
    with open(log, "w") as out:
        server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                  stdout=out, stderr=subprocess.STDOUT)

    def listening():
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True

    def exited():
        return f"moto exited with {server.returncode}" if server.poll() is not None else None
    try:
        try:
            wait_until("the moto S3 server", listening, 60, every=0.3, died=exited)
        except (RuntimeError, TimeoutError) as error:
            pytest.fail(f"{error}: {log.read_text()[-2000:]}")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=30)


def s3_client(url: str):
    """boto3 on the test endpoint, with moto's throwaway credentials."""
    import boto3
    return boto3.client("s3", endpoint_url=url, aws_access_key_id="test", aws_secret_access_key="test",
                        region_name="us-east-1")


def requires_shared_data(path: Path = SHARED_DATA):
    return pytest.mark.skipif(not path.exists(), reason=f"{path} is absent: the shared data set sits beside the "
                              "clone in CI and on developer machines, not on a user's machine")


def require_audio() -> Path:
    """The system SoundFont, with FluidSynth importable; else skip, or fail in CI, whose .ci/run installs
    libfluidsynth3 (it brings the TimGM6mb SoundFont)."""
    import importlib
    from encore import audio
    try:
        font = audio.soundfont(None)
        importlib.import_module("fluidsynth")
    except Exception as exc:
        if os.environ.get("CI"):
            raise AssertionError(f"CI installs FluidSynth and a SoundFont in .ci/run, yet: {exc}")
        pytest.skip(f"audio rendering needs FluidSynth and a General MIDI SoundFont here: {exc}")
    return font


# --- test tiers --------------------------------------------------------------------------------------
# Every test belongs to one tier (pyproject.toml lists them). `./dev.sh test fast` runs `-m unit`:
# nothing that starts a JVM, Ray or a whole night. A test marked explicitly keeps its mark; the
# others get the heaviest tier among the fixtures they use, else `unit`.
TIERS = ("unit", "spark", "ray", "e2e", "cluster")
FIXTURE_TIERS = {"spark": "spark", "lake": "spark", "lake_factory": "spark", "corpus_home": "ray",
                 "gold_home": "ray", "night": "e2e", "s3_endpoint": "e2e", "dag_night": "e2e"}


# --- side by side (pytest-xdist) ----------------------------------------------------------------------
# `./dev.sh test` runs two workers (`-n 2 --dist loadfile`) with the scheduler below. A worker runs whole
# groups, so a module's fixtures are built once: each module is a group, except that the modules with a
# test on the trained world (`trained_home`, minutes to build, and the DAG night on it) form one group,
# sent first, which fills one worker (the scheduler, the DAG night, the clusters) while the other runs
# the rest. Much of that group waits on Airflow and on processes starting. (xdist's own `loadgroup`
# renames node ids, which pytest 9.2 no longer lets it do.)
TRAINED_WORLD = ("tests/test_airflow_scheduler.py", "tests/test_cluster.py", "tests/test_dags.py")
# The other worker takes the longest modules first, so that the last module either worker picks up is short.
LONGEST_FIRST = ("tests/test_night.py", "tests/test_cli.py", "tests/test_object_store.py", "tests/test_music.py",
                 "tests/test_recommender.py", "tests/test_shared_hetrec.py", "tests/test_maintain.py")


@pytest.hookimpl(optionalhook=True)   # a hook of xdist's: unknown where it is not installed or `-p no:xdist`
def pytest_xdist_make_scheduler(config, log):
    """With `--dist loadfile`: files as xdist groups them, but the trained world's files as one group."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class TrainedWorldFirst(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return "trained-world" if module in TRAINED_WORLD else module

    config.option.loadscopereorder = False   # collection order: the trained world, then the longest (below)
    return TrainedWorldFirst(config, log)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if any(item.get_closest_marker(tier) for tier in TIERS):
            continue
        found = {FIXTURE_TIERS[f] for f in item.fixturenames if f in FIXTURE_TIERS}
        item.add_marker(max(found, key=TIERS.index) if found else "unit")
    module_of = {item: item.nodeid.split("::", 1)[0] for item in items}
    strays = sorted({module_of[i] for i in items if "trained_home" in i.fixturenames} - set(TRAINED_WORLD))
    if strays:
        raise pytest.UsageError(f"{', '.join(strays)} use trained_home: add them to TRAINED_WORLD in tests/conftest.py "
                                "so that one worker builds it")
    order = {module: rank for rank, module in enumerate(TRAINED_WORLD + LONGEST_FIRST)}
    items.sort(key=lambda item: order.get(module_of[item], len(order)))   # stable within a module and the rest


@pytest.fixture(scope="session")
def trained_home(spark, tmp_path_factory):
    """The small world's home after its first night's training, built once per session (tests/homes.py);
    copy it with ``tests.homes.copy_home`` before use: it is shared."""
    from tests.homes import build_trained_home
    return build_trained_home(spark, tmp_path_factory.mktemp("trained"))


@pytest.fixture(scope="session")
def dag_night(trained_home, tmp_path_factory):
    """The small world's two dates backfilled once per session by a real Airflow scheduler in the local
    profile (tests/homes.py ``run_nightly_backfill``), on a copy of ``trained_home``: the scheduler and DAG
    tests check the runs, the cluster test starts from its tables as the local night to compare with.
    Copy ``home`` before writing to it."""
    from tests.homes import run_nightly_backfill
    return run_nightly_backfill(trained_home, tmp_path_factory.mktemp("dag-night"))
