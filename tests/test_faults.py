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
