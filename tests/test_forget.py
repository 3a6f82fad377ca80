"""`encore forget`'s parts that need no night: which ids a request names, which tables hold
listeners, and which listener a raw line belongs to, however a real client or file wrote it
(tests/test_night.py erases one from a whole night and scans every file)."""
from __future__ import annotations

import pytest

from encore.errors import EncoreError


def test_ids_come_from_flags_and_a_file_without_repeats_and_bad_requests_are_one_line(tmp_path):
    from jobs.forget import read_ids
    requests = tmp_path / "requests.txt"
    requests.write_text("# ticket 1234\n u042 \n\nu043\nu042\n", encoding="utf-8")
    assert read_ids(["u041", "u042"], str(requests)) == ["u041", "u042", "u043"]
    with pytest.raises(EncoreError, match="no listener to forget: pass --user ID"):
        read_ids(None, None)
    with pytest.raises(EncoreError, match="an empty listener id"):
        read_ids([" "], None)
    with pytest.raises(EncoreError, match=r"--users-file .*missing.txt cannot be read \(FileNotFoundError"):
        read_ids(None, str(tmp_path / "missing.txt"))
    (tmp_path / "latin1.txt").write_bytes("Zoë\n".encode("latin-1"))
    with pytest.raises(EncoreError, match="UTF-8 text file"):
        read_ids(None, str(tmp_path / "latin1.txt"))


def test_every_table_with_listener_ids_is_searched():
    """From the registry: a table added later with a user_id column is erased too."""
    from jobs.forget import user_tables
    from schemas.tables import TABLES
    with_ids = {name for name, spec in TABLES.items() if "user_id" in spec.schema.fieldNames()}
    assert set(user_tables()) == (with_ids | {"bronze.plays_raw"}) - {"ops.erasure_log"}
    assert "ops.erasure_log" not in user_tables() and "warehouse.sketches" not in user_tables()


def test_a_raw_line_is_matched_by_the_id_it_carries_however_it_was_written(spark):
    """Lines as clients and files send them (tests/test_clean.py's real shapes): compact and spaced JSON, a
    byte-order mark, a line cut short (clean quarantines it), a numeric id, a Last.fm-1K line with the
    wrong number of fields (ingest keeps it as TSV); and lines that only mention the id elsewhere."""
    from jobs.forget import _listener
    lines = [
        ('{"event_id":"e1","user_id":"u042","artist_id":"a1","ts":"2026-11-20T10:00:00Z"}', "u042"),
        ('{ "event_id" : "e2" , "user_id" : "u042" }', "u042"),
        ('\ufeff{"event_id":"e3","user_id":"u042"}', "u042"),
        ('{"event_id":"e4","user_id":"u042","artist_id":"a1","ts":"2026-11-2', "u042"),
        ('{"event_id":"e5","user_id":42}', "42"),
        ("user_000042\t2009-05-04T23:08:57Z\tonly four fields", "user_000042"),
        ('{"event_id":"e6","user_id":"u043","track_name":"u042"}', "u043"),
        ('{"event_id":"e7","user_id":" u044 "}', "u044"),
        ("not a play at all", None),
    ]
    frame = spark.createDataFrame([(value,) for value, _ in lines], "value string")
    found = [r[0] for r in frame.select(_listener(frame, "bronze.plays_raw")).collect()]
    assert found == [expected for _, expected in lines]
    quarantine = spark.createDataFrame([("u050", '{"user_id":"u050"}'), (None, '{"user_id":"u051",')],
                                       "user_id string, value string")
    found = [r[0] for r in quarantine.select(_listener(quarantine, "silver.plays_quarantine")).collect()]
    assert found == ["u050", "u051"]
