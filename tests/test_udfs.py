"""Encore's JVM functions (encore/udfs.py): built by Spark's Janino, and equal to what they replace.

``parse_text_fields`` stands in for ``from_json`` in clean's hot path, so it is checked against
from_json itself, line by line, on every kind of odd line clean can meet: malformed JSON of each
sort, values of every JSON type where text is expected, escapes, other scripts, invalid UTF-8.
"""
from __future__ import annotations

import datetime as dt
import gzip
import zipfile

import pytest
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from encore import udfs
from encore.sources.generate_logs import generate
from encore.errors import EncoreError
from schemas.events import CORRUPT_COLUMN, parse_schema, record_schema

ODD_LINES = [
    '{"event_id":"e1","user_id":"u1","artist_id":"a1","ts":"2026-11-20T21:03:17.250Z","ms_played":215000}',
    '{"event_id":"a","ms_played":-0,"ts":1700000000000}',
    '{"event_id":"a","ms_played":1.50,"ts":1E5}',
    '{"event_id":"a","ms_played":NaN,"ts":-Infinity}',
    '{"event_id":"a","ms_played":1.0e+400,"ts":-1e-400}',
    '{"event_id":"a","ms_played":123456789012345678901234567890,"ts":-9223372036854775809}',
    '{"event_id":"a","ms_played":9223372036854775807,"ts":-2147483649}',
    '{"event_id":"a","ms_played":true,"ts":null,"platform":false}',
    '{"event_id":"a","user_id":{ "x" : [1, 2.50 ,{"y":null, "z":"\\u00e9"}] },"ts":[ ], "country":{}}',
    '{"event_id":"a"} trailing', '{"event_id":"a"},{"x":1}', '{"event_id":"a"}}',
    '{"event_id":"a",}', '[{"event_id":"a"}]', '42', '"str"', '', '   ', '{}', 'null', 'true',
    "{'event_id':'sq','user_id':'u\"q'}",
    '{"event_id":"a","event_id":"b"}', '{"event_id":"a","event_id":null}', '{"Event_ID":"a"}',
    '{"event_id":"\\u00e9\\n\\t\\"x\\/\\\\","user_id":"\\ud83d\\ude00"}',
    '{"event_id":"tab\there"}', '{"event_id":"a","ms_played":0123}', '{"event_id":"a","ts":"2026"',
    '{event_id:"a"}', '{"event_id":"a" /* c */}', '{"event_id":"a\\q"}', '{"event_id":"\\ud800"}',
    '{"event_id":"日本語","artist_name":"Ария","track_name":"😀 ☕"}',
    '{"event_id":"a","extra":{"deep":[[[[1]]]]},"user_id":"u"}', '{"event_id":"a","extra":{"deep":[[1]}}',
    '  {"event_id":"lead"}  ', '\t{"event_id":"tab-lead"}', '\ufeff{"event_id":"bom"}',
    '{"event_id":+1}', '{"event_id":.5}', '{"event_id":1.}', '{"event_id":-}', '{"event_id":0x10}',
    '{"event_id":"a" "user_id":"b"}', '{"event_id" "a"}', '{"event_id":"a",,"user_id":"b"}',
    '{"event_id":"' + "x" * 100_000 + '"}', '{"a":' * 1200 + '1' + '}' * 1200,
    '{"ms_played":' + '9' * 1200 + '}',
    # The byte scanner's plain lines and their near misses (encore/java/FlatJsonRecord.java):
    '{ "event_id" : "a" , "user_id":"b"\t,\r\n"ms_played" : 12 }', '{"event_id":"a"}garbage', '{"event_id":null,"user_id":"x"}',
    '{"event_id":"\\u00E9\\u00e9\\/\\b\\f\\r\\n\\t\\\\\\"q\\""}', '{"event_id":"\\ud83d\\ude00 \\udc00"}',
    '{"ms_played":123456789012345678}', '{"ms_played":1234567890123456789}', '{"ms_played":-123,"ts":0}',
    '{"ms_played":-0}', '{"ms_played":00}', '{"ms_played":-}', '{"ms_played":12a}', '{"ms_played":12]',
    '{"event_id":"a","ms_played":12,}', '{"event_id":"a","ms_played":12', '{"event_id":"a"', '{"event_id":"a",',
    '{"event_id":"\\u12"}', '{"event_id":"\\u12G4"}', '{"event_id":"\\x"}', '{"event_id":"a\\', '{"":"x","event_id":"y"}',
    '{"event_id":nul}', '{"event_id":null', '{"event_id":nullx}', '{"event_id":true}', '{"ev\\u0065nt_id":"esc"}',
    '{"event_id" :"a"}', '{"event_id":"a"}\n', '{"event_id":"a"  }  ', '{ }', '{,}', '{"event_id":"a",}',
    '{"event_id":"é"}', '{"user_id":"u","event_id":"a","event_id":"b","user_id":null}',
]


def _both(spark, lines: list[str]):
    """(from_json's reading, parse_text_fields' reading) of each line: None where it is malformed."""
    schema = record_schema("play_event")
    df = spark.createDataFrame([(i, line) for i, line in enumerate(lines)], "i int, value string")
    rows = (df.select("i", F.from_json("value", parse_schema("play_event"),
                                       {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": CORRUPT_COLUMN}).alias("spark"),
                      udfs.parse_text_fields(spark, "value", schema).alias("ours"))
            .orderBy("i").collect())
    names = schema.fieldNames()

    def reading(struct, malformed):
        return None if malformed else tuple(struct[n] for n in names)
    return [(reading(r.spark, r.spark is None or r.spark[CORRUPT_COLUMN] is not None),
             reading(r.ours, r.ours is None)) for r in rows]


def test_parse_text_fields_reads_every_odd_line_as_from_json_does(spark):
    readings = _both(spark, ODD_LINES)
    assert readings[0][1] == ("e1", "u1", "a1", None, None, None, "2026-11-20T21:03:17.250Z", "215000", None, None)
    for line, (theirs, ours) in zip(ODD_LINES, readings):
        assert ours == theirs, f"{line[:80]!r}: from_json {theirs}, parse_text_fields {ours}"
    malformed = sum(theirs is None for theirs, _ in readings)
    assert 20 < malformed < len(ODD_LINES) - 10   # both kinds are exercised


def test_parse_text_fields_matches_from_json_on_the_generators_faulty_lines(spark, tmp_path):
    generate(str(tmp_path), "synthetic", dt.date(2026, 11, 20), days=1, seed=11, events_per_day=3000,
             users=40, items=100, fault_rate=0.3, plain=True)   # text lines: the parsers compare on JSON
    lines = [line for path in sorted(tmp_path.rglob("*.jsonl.gz"))
             for line in gzip.open(path, "rt", encoding="utf-8").read().splitlines()]
    readings = _both(spark, lines)
    assert any(theirs is None for theirs, _ in readings)
    assert [ours for _, ours in readings] == [theirs for theirs, _ in readings]


def test_reading_fewer_fields_gives_their_values_and_the_same_malformed_lines(spark):
    """Clean's rejection pass asks for the rules' fields only: the others are checked, not copied,
    so a line is malformed (null) exactly when it is with every field asked for."""
    full = record_schema("play_event")
    few = StructType([f for f in full.fields if f.name in ("event_id", "ms_played")])
    lines = ODD_LINES + ['{"event_id":"a","user_id":"\\q"}', '{"event_id":"a","user_id":00}',
                         '{"event_id":"a","user_id":"\\u00e9","ts":12}', '{"user_id":"x","event_id":"\\"a"}']
    df = spark.createDataFrame([(i, line) for i, line in enumerate(lines)], "i int, value string")
    rows = df.select("i", udfs.parse_text_fields(spark, "value", full).alias("every"),
                     udfs.parse_text_fields(spark, "value", few).alias("few")).orderBy("i").collect()
    for line, row in zip(lines, rows):
        expected = None if row.every is None else (row.every.event_id, row.every.ms_played)
        assert (None if row.few is None else tuple(row.few)) == expected, line[:80]
    assert [tuple(r.few) for r in rows[-4:] if r.few is not None] == [("a", None), ('"a', None)]


def test_watched_fields_of_a_wrong_json_type_are_named_and_others_read_as_before(spark):
    """clean's wrong_type: ids and names that are objects, arrays or booleans are named with their
    kind; numbers, strings and nulls are not; the values read are from_json's either way."""
    schema = StructType([f for f in record_schema("play_event").fields
                         if f.name in ("event_id", "user_id", "artist_id", "ms_played")])
    lines = ['{"event_id":"e1","user_id":"u1","artist_id":"a1","ms_played":5}',          # plain: the scanner
             '{"event_id":"e2","user_id":["u2"],"artist_id":true,"ms_played":true}',     # ms_played not watched
             '{"event_id":{"id":"e3"},"user_id":12345,"artist_id":null}',
             '{"event_id":"e4","user_id":[],"user_id":"u4"}',                           # the last duplicate wins
             '{"event_id":"\u00e9","user_id":false,"artist_id":1.5}',
             '{"event_id":"e6","user_id":["u6"]',                                       # truncated: malformed
             '{"event_id":"e7","other":{"nested":[true]}}']                             # unknown fields are not judged
    df = spark.createDataFrame([(i, line) for i, line in enumerate(lines)], "i int, value string")
    rows = df.select("i", udfs.parse_text_fields(spark, "value", schema, watched=("event_id", "user_id", "artist_id"))
                     .alias("w"), udfs.parse_text_fields(spark, "value", schema).alias("plain")).orderBy("i").collect()
    assert [None if r.w is None else r.w[udfs.NON_SCALAR] for r in rows] == [
        None, "user_id:array,artist_id:boolean", "event_id:object", None, "user_id:boolean", None, None]
    for row in rows:
        assert (row.w is None) == (row.plain is None)
        assert row.w is None or tuple(row.w)[:-1] == tuple(row.plain)
    assert rows[2].w.user_id == "12345" and rows[1].w.user_id == '["u2"]'


def test_invalid_utf8_bytes_read_the_same(spark):
    """Bronze keeps a line's bytes as they came; both readings decode invalid UTF-8 to U+FFFD."""
    raw = b'{"event_id":"bad\xff\xfe","user_id":"\xc3(","artist_id":"ok"}'
    df = spark.createDataFrame([(bytearray(raw),)], "b binary").select(F.col("b").cast("string").alias("value"))
    row = df.select(F.from_json("value", parse_schema("play_event")).alias("spark"),
                    udfs.parse_text_fields(spark, "value", record_schema("play_event")).alias("ours")).first()
    assert row.ours.event_id == row.spark.event_id and row.ours.user_id == row.spark.user_id
    assert "\ufffd" in row.ours.event_id and row.ours.artist_id == "ok"


def test_parse_text_fields_refuses_nested_schemas(spark):
    with pytest.raises(EncoreError, match="text fields only"):
        udfs.parse_text_fields(spark, "value", record_schema("catalog_entry"))


@pytest.mark.spark
def test_the_jar_is_built_once_per_source_version(tmp_path):
    from encore.spark import check_java
    jar = udfs.build_jar(tmp_path, check_java())
    assert jar.name == udfs.jar_name()
    with zipfile.ZipFile(jar) as archive:
        assert "encore/jvm/FlatJsonRecord.class" in archive.namelist()
    stamp = jar.stat().st_mtime_ns
    assert udfs.build_jar(tmp_path, check_java()) == jar and jar.stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == [jar.name]   # no build folder left behind


@pytest.mark.spark
def test_a_source_that_does_not_compile_stops_with_one_line(tmp_path, monkeypatch):
    from encore.spark import check_java
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "Broken.java").write_text("package encore.jvm; public class Broken { int x = ; }")
    monkeypatch.setattr(udfs, "SOURCES", tmp_path / "src")
    with pytest.raises(EncoreError, match="could not compile Encore's JVM functions"):
        udfs.build_jar(tmp_path / "jars", check_java())
    assert not list((tmp_path / "jars").glob("*.jar"))
