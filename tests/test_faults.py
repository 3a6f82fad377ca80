"""Failures as operators meet them, on real Spark and Delta: a write that loses a Delta commit
conflict to another run is retried, and one that keeps losing, or a table whose Delta log is
corrupt, ends the command with one ``encore: error:`` line naming the step, the date, the cause and
the fix, while the traceback goes to ``<home>/logs/errors.log`` (and to the terminal with --debug)."""
from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from pathlib import Path

import pytest
from pyspark.sql import functions as F
from pyspark.sql.types import LongType

from encore import lakehouse
from encore.errors import describe
from landing_helpers import event, write_landing
from tests.kills import kill_inside_write
from tests.conftest import TEST_ENV

DAY = dt.date(2026, 11, 20)


def _partition(spark, rows: int, tag: str):
    return spark.range(rows).select(F.lit(DAY).alias("date"), F.col("id"), F.lit(tag).alias("writer"))


def _slow(df, seconds: float):
    """``df`` whose computation takes ``seconds``: a Python UDF sleeps on one row."""
    def pause(value):
        if value == 0:
            time.sleep(seconds)
        return value
    return df.withColumn("id", F.udf(pause, LongType())("id"))


def _overwrite(df, path: str):
    return lambda: (df.write.format("delta").mode("overwrite")
                    .option("replaceWhere", f"date = DATE'{DAY}'").save(path))


def _race(spark, path: str) -> BaseException | None:
    """A slow replace of the date, with a fast replace of the same date committed while it computes:
    the slow one's commit then conflicts. Returns what the slow writer raised (None: it succeeded)."""
    outcome: list[BaseException | None] = [None]

    def slow_writer():
        try:
            lakehouse.retry_conflicts(_overwrite(_slow(_partition(spark, 5, "slow"), 4), path))
        except BaseException as exc:   # noqa: BLE001 - handed to the test thread
            outcome[0] = exc
    thread = threading.Thread(target=slow_writer)
    thread.start()
    time.sleep(1.5)                    # the slow write has its snapshot and is computing
    _overwrite(_partition(spark, 3, "fast"), path)()
    thread.join(timeout=300)
    return outcome[0]


@pytest.fixture
def delta_table(spark, tmp_path):
    path = str(tmp_path / "table")
    _partition(spark, 2, "first").write.format("delta").partitionBy("date").save(path)
    return path


def test_a_commit_that_loses_a_conflict_is_retried_and_lands(spark, delta_table, caplog):
    with caplog.at_level(logging.WARNING, logger="encore.lakehouse"):
        assert _race(spark, delta_table) is None
    assert any("Retrying" in r.getMessage() and "Concurrent" in r.getMessage() for r in caplog.records), \
        [r.getMessage() for r in caplog.records]
    rows = spark.read.format("delta").load(delta_table).collect()
    assert {r["writer"] for r in rows} == {"slow"} and len(rows) == 5      # the retried write, whole


def test_a_conflict_lost_on_every_attempt_is_one_line(spark, delta_table, monkeypatch):
    monkeypatch.setattr(lakehouse, "COMMIT_ATTEMPTS", 1)
    lost = _race(spark, delta_table)
    assert lost is not None and "Concurrent" in type(lost).__name__, repr(lost)
    line = describe(lost)
    assert "\n" not in line
    assert line.startswith(f"another run wrote the same Delta table at the same time ({type(lost).__name__})")
    assert line.endswith("run this step again once the other run has finished")


def test_a_corrupt_delta_log_ends_the_step_with_one_line_and_the_traceback_in_the_log(lake_factory, monkeypatch,
                                                                                       capsys):
    from encore.pipeline.cli import main
    from jobs.clean import clean_date
    from jobs.ingest import ingest_landing
    lake = lake_factory()
    write_landing(Path(lake.config.path("landing")), DAY.isoformat(), [event(f"e{i}", user=f"u{i}") for i in range(5)])
    ingest_landing(lake)
    clean_date(lake, DAY)
    log = Path(lake.path("silver.plays")) / "_delta_log"
    newest = sorted(log.glob("*.json"))[-1]
    newest.write_text('{"commitInfo": {"timestamp": 1, "operation": "WRITE"}}\n{"add": {"path": ')   # cut short
    home = Path(lake.config.home)
    for key, value in {**TEST_ENV, "ENCORE_HOME": str(home)}.items():
        monkeypatch.setenv(key, value)
    capsys.readouterr()

    assert main(["clean", "--date", DAY.isoformat()]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"encore: error: clean {DAY}: a Delta table's log is missing or "
                                                "unreadable ("), err
    assert "restore the table's folder" in err[0]
    assert "Traceback" not in err[0] and str(home / "logs" / "errors.log") in err[0]
    saved = (home / "logs" / "errors.log").read_text()
    assert f"encore clean --date {DAY}\nTraceback (most recent call last)" in saved

    assert main(["--debug", "clean", "--date", DAY.isoformat()]) == 1
    assert "Traceback (most recent call last)" in capsys.readouterr().err


# --- the input fault matrix ------------------------------------------------------------------------
# Each row delivers ten good plays plus one fault, then ingests and cleans the date. Whatever the
# fault, every line of every readable file is in bronze once, every bronze line is in silver or in
# the quarantine (never both, never twice), and the row's own outcome holds: a file refused with its
# reason, lines quarantined with theirs, or kept.

def _gzip(path: Path, text: bytes) -> Path:
    import gzip
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(text))
    return path


def _plays(prefix: str, n: int, **fields) -> list[str]:
    """``n`` plays of listeners of their own (``<prefix>-user-i``), so no row repeats another row's play."""
    return [event(f"{prefix}-{i}", user=f"{prefix}-user-{i}", artist=f"a{i}", ts=f"{DAY}T10:{i:02d}:00Z", **fields)
            for i in range(n)]


def _truncated(folder: Path) -> None:
    whole = write_landing(folder.parents[1], DAY.isoformat(), _plays("cut", 10), "part-cut.jsonl.gz")
    whole.write_bytes(whole.read_bytes()[:60])


def _copied(folder: Path) -> None:
    (folder / "part-resent.jsonl.gz").write_bytes((folder / "part-base.jsonl.gz").read_bytes())


def _empty(folder: Path) -> None:
    _gzip(folder / "part-empty.jsonl.gz", b"")
    (folder / "part-zero.jsonl").write_bytes(b"")


def _skewed(folder: Path) -> None:
    day = DAY.isoformat()
    late = [event(f"fast-{i}", user=f"s{i}", artist=f"a{i}", ts=f"{DAY + dt.timedelta(days=1)}T02:0{i}:00Z")
            for i in range(3)]                                   # a client clock 3 h fast, late in the evening
    wrong = [event(f"far-{i}", user=f"s{i}", artist=f"a{i}", ts=f"{DAY + dt.timedelta(days=3)}T10:00:00Z")
             for i in range(2)]                                  # a clock days off
    write_landing(folder.parents[1], day, late + wrong, "part-skew.jsonl.gz")


def _new_fields(folder: Path) -> None:
    write_landing(folder.parents[1], DAY.isoformat(),
                  _plays("drift", 5, bpm=120, context={"playlist": "p1", "shuffle": True}), "part-drift.jsonl.gz")


def _changed_types(folder: Path) -> None:
    import json
    rows = [json.loads(line) for line in _plays("typed", 7)]
    rows[0]["ms_played"] = "200000"                             # a number sent as a string: read as 200000
    rows[1]["ms_played"] = 200000.5                             # a fraction of a millisecond
    rows[2]["user_id"] = 12345                                  # an id sent as a number
    rows[3]["ts"] = int(dt.datetime(2026, 11, 20, 9, tzinfo=dt.timezone.utc).timestamp() * 1000)   # epoch millis
    rows[4]["user_id"] = [rows[4]["user_id"]]                   # an id sent as an array
    rows[5]["track_name"] = {"title": rows[5].get("track_name", "x")}   # a name sent as an object
    rows[6]["artist_id"] = True                                 # an id sent as a boolean
    write_landing(folder.parents[1], DAY.isoformat(), [json.dumps(r) for r in rows], "part-typed.jsonl.gz")


# fault -> (deliver it, files not taken {name: status}, quarantined {event_id: reason}, extra kept ids).
# An unreadable file fails the ingest (after the date's other files are in); a duplicate is recorded
# and warned about, and the ingest succeeds: nothing of it is missing.
INPUT_FAULTS = {
    "truncated gzip": (_truncated, {"part-cut.jsonl.gz": "unreadable"}, {}, set()),
    "the same file under another name": (_copied, {"part-resent.jsonl.gz": "duplicate"}, {}, set()),
    "empty files": (_empty, {}, {}, set()),
    "client clock skew": (_skewed, {}, {"far-0": "timestamp_in_future", "far-1": "timestamp_in_future"},
                          {"fast-0", "fast-1", "fast-2"}),
    "schema drift: new fields": (_new_fields, {}, {}, {f"drift-{i}" for i in range(5)}),
    # Digits sent as a JSON string are read as the number; a fraction of a millisecond is not an integer.
    # Ids and names that are objects, arrays or booleans are wrong_type; numbers are read as their digits.
    "schema drift: changed types": (_changed_types, {}, {"typed-1": "bad_ms_played", "typed-4": "wrong_type",
                                                         "typed-5": "wrong_type", "typed-6": "wrong_type"},
                                    {"typed-0", "typed-2", "typed-3"}),
}


@pytest.mark.parametrize("fault", list(INPUT_FAULTS))
def test_input_fault_matrix(lake_factory, fault):
    from pyspark.sql import functions as F
    from encore.errors import EncoreError
    from jobs.clean import clean_date
    from jobs.ingest import ingest_landing
    deliver, refused, quarantined, kept_extra = INPUT_FAULTS[fault]
    lake = lake_factory()
    folder = write_landing(Path(lake.config.path("landing")), DAY.isoformat(), _plays("base", 10),
                           "part-base.jsonl.gz").parent
    deliver(folder)
    failing = [name for name, status in refused.items() if status != "duplicate"]
    if failing:
        with pytest.raises(EncoreError, match=f"{len(failing)} landing files? not ingested"):
            ingest_landing(lake, [DAY])
    else:
        ingest_landing(lake, [DAY])
    clean_date(lake, DAY)

    rejected = {Path(r["source_key"]).name: r["status"] for r in lake.read("bronze.rejected_files").collect()} \
        if lake.exists("bronze.rejected_files") else {}
    assert rejected == refused
    import gzip
    delivered = 0
    for path in folder.iterdir():
        if path.name not in refused:
            text = gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()
            delivered += len([line for line in text.decode().split("\n") if line])
    bronze = lake.read("bronze.plays_raw").where(F.col("landing_date") == F.lit(DAY))
    assert bronze.count() == delivered, "every line of every readable file is in bronze, once"
    silver = lake.read("silver.plays").where(F.col("date") == F.lit(DAY)).select("event_id").collect()
    held = lake.read("silver.plays_quarantine").where(F.col("date") == F.lit(DAY)).select("event_id", "reason").collect()
    kept = [r["event_id"] for r in silver]
    assert len(kept) == len(set(kept)), "nothing is kept twice"
    assert len(kept) + len(held) == delivered, "every bronze line is in silver or the quarantine"
    assert not set(kept) & {r["event_id"] for r in held}
    assert {r["event_id"]: r["reason"] for r in held} == quarantined
    assert set(kept) == {f"base-{i}" for i in range(10)} | kept_extra


@pytest.mark.ray
def test_a_failed_ray_task_or_actor_is_one_line_naming_its_own_error(tmp_path):
    """Ray wraps a task's error in its own (RayTaskError, Ray Data's UserCodeException, ActorDiedError
    with the traceback as text): the line names the error raised inside, without terminal colours."""
    from conftest import make_config
    from encore.errors import describe
    from encore.ray_runtime import connect
    ray = connect(make_config(tmp_path))
    import ray.data

    @ray.remote
    def load_champion():
        raise ValueError("state.pt: unexpected end of file")

    class _NoModelFile:   # defined here: Ray's workers cannot import the test module, so it goes by value
        """A Ray Data actor that cannot load its model, as a generation actor given a corrupt champion."""
        def __init__(self):
            raise ValueError("state.pt: unexpected end of file")

        def __call__(self, batch):
            return batch

    class _MissingColumn:
        def __call__(self, batch):
            raise KeyError("user_id")

    failures = {"a task": lambda: ray.get(load_champion.remote()),
                "an actor's constructor": lambda: ray.data.range(4).map_batches(_NoModelFile, concurrency=1).take_all(),
                "an actor's batch": lambda: ray.data.range(4).map_batches(_MissingColumn, concurrency=1).take_all()}
    lines = {}
    for name, fail in failures.items():
        with pytest.raises(Exception) as caught:
            fail()
        lines[name] = describe(caught.value)
    assert lines == {
        "a task": "a Ray task failed (ValueError: state.pt: unexpected end of file): the task's traceback is in the log",
        "an actor's constructor": "a Ray actor could not start (ValueError: state.pt: unexpected end of file): the "
                                  "task's traceback is in the log",
        "an actor's batch": "a Ray task failed (KeyError: 'user_id'): the task's traceback is in the log"}


def test_an_unreachable_mlflow_store_is_one_line_and_never_reads_as_no_champion(tmp_path, monkeypatch, capsys):
    """A night that took a store outage for "no champion yet" would train and promote a new model."""
    from encore.pipeline.cli import main
    for key, value in {**TEST_ENV, "ENCORE_HOME": str(tmp_path / "home"),
                       "ENCORE__MLFLOW__TRACKING_URI": "http://127.0.0.1:9",   # nothing listens on the discard port
                       "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}.items():
        monkeypatch.setenv(key, value)
    assert main(["sample", "--style", "folk", "--key", "D", "-o", str(tmp_path / "x.mid")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("encore: error: sample: the MLflow store at http://127.0.0.1:9 did not answer for model "
                             "encore-music-model (") and err[0].endswith("check mlflow.tracking_uri and that the "
                                                                         "store is running and reachable"), err
    assert "champion" not in err[0].split("(")[0]


# --- SIGKILL inside a write, then a rerun ------------------------------------------------------------

D1, D2 = dt.date(2026, 11, 19), dt.date(2026, 11, 20)


def test_spark_steps_killed_inside_their_write_and_rerun_lose_and_double_nothing(spark, tmp_path):
    """ingest, clean and features each SIGKILLed (driver and JVM) after their first data file is written and
    before their commit, then rerun: every landed line is in bronze once, every bronze line in silver or
    the quarantine once, and the gold snapshot is whole, as if the kill had never happened."""
    import gzip
    import os
    import subprocess
    import sys
    from encore.lakehouse import Lakehouse
    from encore.sources.generate_logs import generate_from_config
    from jobs.clean import clean_date
    from jobs.ingest import ingest_landing
    from tests.conftest import PROCESS_ENV, make_config
    from tests.homes import SMALL_WORLD
    world = {**SMALL_WORLD, "ENCORE__GENERATE__DAYS": "2", "ENCORE__GENERATE__END_DATE": D2.isoformat(),
             "ENCORE__GENERATE__EVENTS_PER_DAY": "2000"}
    home = tmp_path / "home"
    config = make_config(home, **world)
    lake = Lakehouse(config, spark)
    generate_from_config(config)
    ingest_landing(lake, [D1])
    clean_date(lake, D1)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENCORE")}
    env.update({**PROCESS_ENV, **world, "ENCORE_HOME": str(home)})
    encore = str(Path(sys.executable).parent / "encore")

    def step(*args: str) -> None:
        done = subprocess.run([encore, *args], env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]

    tables = Path(config.path("lakehouse"))
    kill_inside_write([encore, "ingest", "--date", D2.isoformat()], env, tables / "bronze" / "plays_raw")
    step("ingest", "--date", D2.isoformat())
    def lines_in(path: Path) -> int:
        text = gzip.decompress(path.read_bytes())
        return text.count(b"\n") + (1 if text and not text.endswith(b"\n") else 0)
    per_file = {f"plays/date={D2}/{p.name}": lines_in(p)
                for p in (Path(config.path("landing")) / "plays" / f"date={D2}").glob("*.gz")}
    landed = sum(per_file.values())
    bronze = lake.read("bronze.plays_raw").where(F.col("landing_date") == F.lit(D2))
    assert {r["source_key"]: r["count"] for r in bronze.groupBy("source_key").count().collect()} == per_file

    kill_inside_write([encore, "clean", "--date", D2.isoformat()], env, tables / "silver" / "plays")
    step("clean", "--date", D2.isoformat())
    kept = lake.read("silver.plays").where(F.col("date") == F.lit(D2))
    held = lake.read("silver.plays_quarantine").where((F.col("date") == F.lit(D2))
                                                       & (F.col("record_type") == "play_event"))
    assert kept.count() + held.count() == landed
    assert kept.select("event_id").distinct().count() == kept.count()

    kill_inside_write([encore, "features", "--date", D2.isoformat()], env, tables / "gold" / "interactions")
    step("features", "--date", D2.isoformat())
    pairs = lake.read("gold.interactions").where(F.col("as_of_date") == F.lit(D2))
    assert pairs.count() > 0 and pairs.select("user_id", "item_id").distinct().count() == pairs.count()
    for name in ("gold.items", "gold.user_profiles"):
        assert lake.read(name).where(F.col("as_of_date") == F.lit(D2)).count() > 0, name
