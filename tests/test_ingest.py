"""Ingest on real Spark + Delta, with files as real deliveries go wrong: a truncated gzip or a binary
file among a date's files, a home copied to another folder, the same content under a new name or
compressed again, new content under an old name, and a bronze table written by the release before
file identities."""
from __future__ import annotations

import datetime as dt
import gzip
import shutil
from pathlib import Path

import pytest
from delta.tables import DeltaTable
from pyspark.sql import functions as F

from encore.errors import EncoreError
from encore.lakehouse import spec
from jobs.ingest import ingest_landing, key_of
from landing_helpers import event, write_landing

DAY = "2026-11-20"


def lines(prefix: str, n: int = 10) -> list[str]:
    return [event(f"{prefix}-{i}", user=f"u{i}", ts=f"{DAY}T10:00:{i:02d}Z") for i in range(n)]


def bronze_ids(lake) -> list[str]:
    rows = lake.read("bronze.plays_raw").select(F.get_json_object("value", "$.event_id").alias("id")).collect()
    return sorted(r["id"] for r in rows)


def test_an_unreadable_file_is_recorded_and_the_dates_other_files_are_ingested(lake):
    landing = Path(lake.config.path("landing"))
    write_landing(landing, DAY, lines("a"), "part-a.jsonl.gz")
    good_b = write_landing(landing, DAY, lines("b"), "part-b.jsonl.gz")
    whole = good_b.read_bytes()
    good_b.write_bytes(whole[: len(whole) // 2])                            # truncated in transit
    (landing / "plays" / f"date={DAY}" / "part-c.jsonl").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00binary")

    with pytest.raises(EncoreError) as info:
        ingest_landing(lake, [dt.date.fromisoformat(DAY)])
    message = str(info.value)
    assert "\n" not in message and message.startswith("ingest: 2 landing files not ingested: ")
    assert f"plays/date={DAY}/part-b.jsonl.gz (unreadable: truncated gzip" in message
    assert f"plays/date={DAY}/part-c.jsonl (unreadable: not text" in message
    assert "bronze.plays_raw +10" in message
    assert bronze_ids(lake) == sorted(f"a-{i}" for i in range(10))
    rejected = lake.read("bronze.rejected_files").collect()
    assert sorted(r["source_key"] for r in rejected) == [f"plays/date={DAY}/part-b.jsonl.gz",
                                                         f"plays/date={DAY}/part-c.jsonl"]
    assert all(r["status"] == "unreadable" and r["size"] > 0 and len(r["sha256"]) == 64 for r in rejected)

    with pytest.raises(EncoreError, match="2 landing files not ingested"):    # still there: still said, not re-recorded
        ingest_landing(lake, [dt.date.fromisoformat(DAY)])
    assert lake.read("bronze.rejected_files").count() == 2

    good_b.write_bytes(whole)                                                # the good copy, delivered again
    (landing / "plays" / f"date={DAY}" / "part-c.jsonl").unlink()
    assert ingest_landing(lake, [dt.date.fromisoformat(DAY)])["bronze.plays_raw"] == 10
    assert bronze_ids(lake) == sorted([f"a-{i}" for i in range(10)] + [f"b-{i}" for i in range(10)])


def test_a_moved_home_ingests_nothing_twice_and_renamed_or_changed_files_are_caught(lake_factory, tmp_path):
    first = lake_factory("first")
    landing = Path(first.config.path("landing"))
    write_landing(landing, DAY, lines("a"), "part-a.jsonl.gz")
    assert ingest_landing(first)["bronze.plays_raw"] == 10

    shutil.copytree(tmp_path / "first", tmp_path / "moved")                # a restored backup, a new mount point
    moved = lake_factory("moved")
    assert ingest_landing(moved) == {"bronze.plays_raw": 0, "bronze.catalog_raw": 0}
    assert len(bronze_ids(moved)) == 10

    moved_landing = Path(moved.config.path("landing"))
    day_dir = moved_landing / "plays" / f"date={DAY}"
    shutil.copy(day_dir / "part-a.jsonl.gz", day_dir / "part-a-resent.jsonl.gz")   # same bytes, new name
    assert ingest_landing(moved)["bronze.plays_raw"] == 0                   # recorded, not an error
    duplicate = moved.read("bronze.rejected_files").where("status = 'duplicate'").collect()
    assert [r["error"] for r in duplicate] == [f"same content as plays/date={DAY}/part-a.jsonl.gz, already ingested"]

    (day_dir / "part-a-resent.jsonl.gz").unlink()
    recompressed = gzip.compress(gzip.decompress((day_dir / "part-a.jsonl.gz").read_bytes()), compresslevel=9, mtime=1)
    (day_dir / "part-a.jsonl.gz").write_bytes(recompressed)                # the same lines, compressed again
    assert ingest_landing(moved)["bronze.plays_raw"] == 0

    write_landing(moved_landing, DAY, lines("changed"), "part-a.jsonl.gz")   # new content under the old name
    with pytest.raises(EncoreError, match=rf"plays/date={DAY}/part-a.jsonl.gz \(changed: its content changed since"):
        ingest_landing(moved)
    assert len(bronze_ids(moved)) == 10


def test_bronze_from_the_release_before_file_identities_is_recognised_and_upgraded(lake):
    """Rows written before source_key existed: their files are known by the tail of the old path
    (even from another home), and the next append adds the new columns."""
    table = spec("bronze.plays_raw")
    old_schema = [f for f in table.schema if f.name not in ("source_key", "source_sha256")]
    (DeltaTable.create(lake.spark).location(lake.path("bronze.plays_raw")).addColumns(old_schema)
     .partitionedBy(*table.partition_by).property("delta.enableRowTracking", "true").execute())
    landing = Path(lake.config.path("landing"))
    old = write_landing(landing, "2026-11-19", lines("old"), "part-00000.jsonl.gz")
    rows = [(dt.date(2026, 11, 19), line, "jsonl", f"file:/srv/old-home/landing/plays/date=2026-11-19/{old.name}",
             dt.datetime(2026, 11, 19, 3)) for line in lines("old")]
    lake.spark.createDataFrame(rows, ", ".join(f"{f.name} {f.dataType.simpleString()}" for f in old_schema)) \
        .write.format("delta").mode("append").save(lake.path("bronze.plays_raw"))
    write_landing(landing, DAY, lines("new"), "part-00000.jsonl.gz")
    assert ingest_landing(lake)["bronze.plays_raw"] == 10                  # only the new date
    frame = lake.read("bronze.plays_raw")
    assert {"source_key", "source_sha256"} <= set(frame.columns)
    assert frame.where("source_key IS NULL").count() == 10 and frame.where("source_key IS NOT NULL").count() == 10


def test_identity_keys_survive_any_mount_point():
    assert key_of("file:/data/a/landing/plays/date=2026-11-20/part%20one.jsonl.gz") == \
        "plays/date=2026-11-20/part one.jsonl.gz"
    assert key_of("s3a://bucket/landing/catalog/date=2026-11-20/c.jsonl.gz") == "catalog/date=2026-11-20/c.jsonl.gz"


def test_a_gzip_member_that_ends_early_is_truncated_not_corrupt(tmp_path):
    from jobs.ingest import inspect
    path = tmp_path / "x.jsonl.gz"
    with gzip.open(path, "wt") as out:
        out.write("\n".join(lines("x", 2000)))
    assert inspect(str(path), "k").error is None
    path.write_bytes(path.read_bytes()[:-20])
    assert inspect(str(path), "k").error.startswith("truncated gzip")
    path.write_bytes(b"\x1f\x8b\x08\x00garbage" * 10)
    assert inspect(str(path), "k").error.startswith("corrupt gzip")


def test_file_names_as_clients_write_them_keep_their_identity(lake):
    """Exports named ``plays (1).jsonl.gz``, ``export[2].jsonl.gz``, with ``+``, ``%``, ``#`` or
    non-ASCII letters, in sub-folders: Spark globs the paths it is given and names each row's file
    URL-encoded; every file must be read once, by its own name, with its own checksum."""
    from jobs.ingest import inspect
    landing = Path(lake.config.path("landing"))
    names = ["plays (1).jsonl.gz", "export[2].jsonl.gz", "a+b%20c#d.jsonl.gz", "åäö-łódź.jsonl.gz",
             "sub dir/x{y}*?.jsonl.gz"]
    for i, name in enumerate(names):
        (landing / "plays" / f"date={DAY}" / name).parent.mkdir(parents=True, exist_ok=True)
        write_landing(landing, DAY, lines(f"f{i}", 3), name)
    assert ingest_landing(lake, [dt.date.fromisoformat(DAY)])["bronze.plays_raw"] == 3 * len(names)
    rows = (lake.read("bronze.plays_raw")
            .select(F.get_json_object("value", "$.event_id").alias("id"), "source_key", "source_sha256").collect())
    for i, name in enumerate(names):
        key = f"plays/date={DAY}/{name}"
        mine = [r for r in rows if r["id"].startswith(f"f{i}-")]
        assert {r["source_key"] for r in mine} == {key}, (name, mine)
        assert {r["source_sha256"] for r in mine} == {inspect(str(landing / key), key).sha256}
    assert ingest_landing(lake, [dt.date.fromisoformat(DAY)])["bronze.plays_raw"] == 0


def test_a_text_file_named_gz_is_not_gzip(tmp_path):
    from jobs.ingest import inspect
    path = tmp_path / "x.jsonl.gz"
    path.write_text("\n".join(lines("x", 3)))
    assert inspect(str(path), "k").error.startswith("not gzip")
