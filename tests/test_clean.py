"""Clean on real Spark + Delta: every fault lands in quarantine with its reason, reruns are idempotent,
constraints guard silver, and the quarantine threshold stops a bad date."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from delta.tables import DeltaTable
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from jobs import clean
from jobs.clean import EVENT_REASONS, _write_together, clean_date
from encore.errors import EncoreError
from encore.sources.generate_logs import generate
from jobs.ingest import ingest_landing
from encore.lakehouse import spec
from landing_helpers import event, write_landing

DAY = dt.date(2026, 11, 20)
PERMISSIVE = {"ENCORE__CLEAN__MAX_QUARANTINE_SHARE": "1.0", "ENCORE__CLEAN__BOT_MAX_PLAYS_PER_DAY": "5"}

# event id -> the reason clean must give it (None: kept in silver)
EXPECTED = {
    "ok-1": None, "ok-epoch": None, "ok-offset": None, "ok-extra": None, "ok-name-only": None, "ok-no-ms": None,
    "bad-ts": "bad_timestamp", "old-ts": "timestamp_too_old", "future-ts": "timestamp_in_future",
    "ms-text": "bad_ms_played", "ms-neg": "negative_ms_played", "ms-huge": "absurd_ms_played",
    "no-user": "missing_user_id", "no-item": "missing_item", "retry": "duplicate_play", "seen-yesterday": "duplicate_event_id",
    # Two plays of one item at the same instant under different ids: the first ingested is kept,
    # whatever the ids' order.
    "played-first": None, "an-instant-retry": "duplicate_play",
}


def _fault_lines() -> list[str]:
    lines = [
        event("ok-1", user="u1", artist="a1", ts="2026-11-20T10:00:00.250Z"),
        event("ok-epoch", user="u2", ts=1795164000000),  # 2026-11-20T08:40:00Z
        event("ok-offset", user="u3", ts="2026-11-20T12:00:00+01:00"),
        event("ok-extra", user="u4", client_version="7.1", ab={"bucket": 2}),
        event("ok-name-only", user="u5", artist=None, artist_name="Sigur Rós"),
        event("ok-no-ms", user="u6", ms=...),
        event("bad-ts", ts="20/11/2026 25:61"),
        event("old-ts", ts=0),
        event("future-ts", ts="2027-01-01T00:00:00Z"),
        event("ms-text", ms="lots"),
        event("ms-neg", ms=-5),
        event("ms-huge", ms=999_999_999),
        event("no-user", user=""),
        event("no-item", artist=None, artist_name=None),
        event("retry", user="u1", artist="a1", ts="2026-11-20T10:00:00.900Z"),  # same second as ok-1
        event("seen-yesterday", user="u7"),
        event("played-first", user="u8", artist="a8", ts="2026-11-20T14:00:00.500Z"),
        event("an-instant-retry", user="u8", artist="a8", ts="2026-11-20T14:00:00.500Z"),
        event("ok-1", user="u1", artist="a1", ts="2026-11-20T10:00:00.250Z"),   # duplicate delivery
        '{"event_id": "trunc", "user_id": "u1", "artist_',                      # truncated line
        '',                                                                    # blank line
        json_missing_id(),
    ]
    lines += [event(f"bot-{i}", user="bot", artist=f"b{i}", ts=f"2026-11-20T03:00:{i:02d}Z", ms=1000) for i in range(6)]
    return lines


def json_missing_id() -> str:
    return '{"user_id": "u1", "artist_id": "a1", "ts": "2026-11-20T11:00:00Z", "ms_played": 5}'


def _prepare(lake) -> None:
    landing = Path(lake.config.path("landing"))
    write_landing(landing, "2026-11-19", [event("seen-yesterday", user="u7", ts="2026-11-19T09:00:00Z")])
    write_landing(landing, DAY.isoformat(), _fault_lines())
    ingest_landing(lake)
    clean_date(lake, DAY - dt.timedelta(days=1))


def test_every_fault_gets_its_reason(lake_factory):
    lake = lake_factory(**PERMISSIVE)
    _prepare(lake)
    result = clean_date(lake, DAY)

    silver = {r["event_id"]: r for r in lake.read("silver.plays").where(F.col("date") == F.lit(DAY)).collect()}
    quarantine = lake.read("silver.plays_quarantine").where(F.col("date") == F.lit(DAY)).collect()
    by_id = {}
    for row in quarantine:
        by_id.setdefault(row["event_id"], []).append(row["reason"])

    for event_id, reason in EXPECTED.items():
        if reason is None:
            assert event_id in silver, f"{event_id} should be kept"
        else:
            assert by_id.get(event_id) == [reason], f"{event_id}: {by_id.get(event_id)} != {reason}"
            assert event_id not in silver
    assert by_id["ok-1"] == ["duplicate_event_id"]  # the second copy, while the first is kept
    assert sorted(by_id[None]) == ["malformed_record", "malformed_record", "missing_event_id"]
    assert by_id["bot-0"] == ["bot_user"] and sum(r.reason == "bot_user" for r in quarantine) == 6
    # Typed values: offsets become UTC, epoch millis become timestamps, names become item ids.
    assert silver["ok-offset"]["event_ts"] == dt.datetime(2026, 11, 20, 11, 0)
    assert silver["ok-epoch"]["event_ts"] == dt.datetime(2026, 11, 20, 8, 40)
    assert silver["ok-name-only"]["item_id"] == "name:sigur rós"
    assert silver["ok-no-ms"]["ms_played"] is None
    assert silver["ok-1"]["country"] == "SE"
    # Nothing lost: every raw line is in silver or in quarantine, with the raw text kept.
    assert result.events == len(_fault_lines()) == len(silver) + len(quarantine)
    assert all(r["value"] is not None for r in quarantine)
    raw_lines = {line for line in _fault_lines()}
    assert all(r["value"] in raw_lines for r in quarantine)              # the exact raw text, restored
    assert [r["value"] for r in quarantine if r["event_id"] == "bot-3"] == [_fault_lines()[-3]]
    assert set(result.reasons) <= set(EVENT_REASONS)


def scrobble(event_id: str, ts: str, track: str | None = None, track_id: str | None = None, artist: str = "a9",
             user: str = "listener") -> str:
    """A play as scrobblers log it: second-resolution timestamps, the track named, an id when known."""
    return event(event_id, user=user, artist=artist, ts=ts, ms=180_000,
                 **({"track_name": track} if track is not None else {}),
                 **({"track_id": track_id} if track_id is not None else {}))


# event id -> reason (None: kept). One listener's afternoon, shaped like a Last.fm scrobble log.
SCROBBLES = {
    # An album played through: each track starts in the second the previous one ended.
    scrobble("album-1", "2026-11-20T15:00:00Z", "Intro"): None,
    scrobble("album-2", "2026-11-20T15:00:00Z", "Hoppípolla"): None,
    scrobble("album-3", "2026-11-20T15:03:00Z", "Með blóðnasir"): None,
    scrobble("album-4", "2026-11-20T15:03:00Z", "Sæglópur"): None,
    # Two tracks with MusicBrainz ids sharing a second are two plays; the same id re-sent is not.
    scrobble("mbid-1", "2026-11-20T16:00:00Z", "Track", track_id="mb-1"): None,
    scrobble("mbid-2", "2026-11-20T16:00:00Z", "Track", track_id="mb-2"): None,
    scrobble("mbid-resent", "2026-11-20T16:00:00Z", "Track", track_id="mb-1"): "duplicate_play",
    # The same title re-sent, written differently by the client: a retry.
    scrobble("title-1", "2026-11-20T17:00:00Z", "Glósóli"): None,
    scrobble("title-resent", "2026-11-20T17:00:00Z", "  glósóli "): "duplicate_play",
    # Logged at its start and again at its end (or played twice on purpose): two plays.
    scrobble("twice-start", "2026-11-20T18:00:00Z", "Starálfur"): None,
    scrobble("twice-end", "2026-11-20T18:04:47Z", "Starálfur"): None,
    # No track named: the artist is all there is, so the same second is a retry.
    scrobble("artist-only-1", "2026-11-20T19:00:00Z"): None,
    scrobble("artist-only-2", "2026-11-20T19:00:00Z"): "duplicate_play",
}


@pytest.mark.parametrize("window", ["1", "30"])
def test_scrobbles_of_different_tracks_in_one_second_are_plays(lake_factory, window):
    lake = lake_factory(ENCORE__CLEAN__DUPLICATE_PLAY_WINDOW_SECONDS=window, ENCORE__CLEAN__MAX_QUARANTINE_SHARE="1.0")
    lines = list(SCROBBLES)
    expected = {line: reason for line, reason in SCROBBLES.items()}
    if window == "30":   # a re-send 12 s later is caught within a 30 s interval, not within one second
        resent = scrobble("late-resend", "2026-11-20T17:00:12Z", "Glósóli")
        lines.append(resent)
        expected[resent] = "duplicate_play"
    write_landing(Path(lake.config.path("landing")), DAY.isoformat(), lines)
    ingest_landing(lake)
    result = clean_date(lake, DAY)
    kept = {r["event_id"] for r in lake.read("silver.plays").collect()}
    rejected = {r["event_id"]: r for r in lake.read("silver.plays_quarantine").collect()}
    for line, reason in expected.items():
        event_id = line.split('"event_id": "')[1].split('"')[0]
        if reason is None:
            assert event_id in kept, f"{event_id} should be kept"
        else:
            assert rejected[event_id]["reason"] == reason, event_id
    assert result.events == len(lines) == len(kept) + len(rejected)
    detail = "same user, track and second" if window == "1" else "same user, track and 30 s interval"
    assert all(r["detail"].startswith(detail) for r in rejected.values()), [r["detail"] for r in rejected.values()]


def test_generated_scrobble_habits_are_all_kept(lake_factory):
    """Album runs, shared seconds and double scrobbles (encore/sources/generate_logs.py) are how real
    listeners' logs look, not faults: with no faults injected, clean keeps every line."""
    lake = lake_factory()
    written = generate(lake.config.path("landing"), "synthetic", DAY, days=1, seed=5, events_per_day=4000,
                       users=60, items=80, fault_rate=0.0, bots=0, workers=1, double_scrobbles=0.02)
    assert written[DAY.isoformat()] > 4000                          # the double scrobbles
    ingest_landing(lake)
    result = clean_date(lake, DAY)
    assert (result.kept, result.reasons) == (result.events, {})
    silver = lake.read("silver.plays").where(F.col("date") == F.lit(DAY))
    same_second = (silver.groupBy("user_id", "item_id", F.date_trunc("second", "event_ts"))
                   .agg(F.countDistinct("track_id").alias("tracks")).where("tracks > 1").count())
    assert same_second > 0, "the generator laid out no album tracks sharing a second"


def test_heavy_listeners_are_people_and_a_scripted_client_is_a_bot(lake_factory):
    """bot_user against real heavy listening: an album looped from midnight to midnight (11 tracks of real
    lengths, 3:05 to 6:40) and a grindcore fan's 18 hours of 1:10 tracks are people, and every play of
    theirs is kept; a client that scrobbles a 20-second play every 20 s around the clock is not."""
    lake = lake_factory(ENCORE__CLEAN__MAX_QUARANTINE_SHARE="0.9")
    midnight = dt.datetime.combine(DAY, dt.time(), dt.timezone.utc)

    def day_of(user: str, artist: str, lengths: list[int], start: dt.datetime, hours: float) -> list[str]:
        lines, at, i = [], start, 0
        while at + dt.timedelta(seconds=lengths[i % len(lengths)]) <= start + dt.timedelta(hours=hours):
            length = lengths[i % len(lengths)]
            lines.append(event(f"{user}-{i}", user=user, artist=artist, ts=at.strftime("%Y-%m-%dT%H:%M:%SZ"),
                               ms=length * 1000, track_id=f"{artist}-t{i % len(lengths)}",
                               track_name=f"Track {i % len(lengths)}"))
            at, i = at + dt.timedelta(seconds=length), i + 1
        return lines
    looper = day_of("looper", "album-artist", [185, 242, 400, 201, 263, 318, 222, 190, 287, 355, 234], midnight, 24)
    grinder = day_of("grinder", "grind-artist", [70], midnight + dt.timedelta(hours=5), 18)
    scripted = day_of("scripted", "spam-artist", [20], midnight, 24)
    write_landing(Path(lake.config.path("landing")), DAY.isoformat(), looper + grinder + scripted)
    ingest_landing(lake)
    result = clean_date(lake, DAY)
    assert len(looper) > 300 and len(grinder) > 900 and len(scripted) == 4320
    assert result.reasons == {"bot_user": len(scripted)} and result.kept == len(looper) + len(grinder)


def test_rerun_of_a_date_changes_nothing(lake_factory, monkeypatch):
    lake = lake_factory(**PERMISSIVE)
    _prepare(lake)
    clean_date(lake, DAY)

    def snapshot():
        return {name: sorted(tuple(r) for r in lake.read(name).drop("source_file").collect())
                for name in ("bronze.plays_raw", "silver.plays", "silver.plays_quarantine")}

    before = snapshot()
    assert ingest_landing(lake) == {"bronze.plays_raw": 0, "bronze.catalog_raw": 0}
    clean_date(lake, DAY)
    assert snapshot() == before
    # A date with more duplicates and bot plays than fit a broadcast (clean.BROADCAST_MAX_ROWS)
    # takes shuffle joins instead (Spark's own size-based broadcast off too): the same tables.
    monkeypatch.setattr(clean, "BROADCAST_MAX_ROWS", 0)
    lake.spark.conf.set("spark.sql.autoBroadcastJoinThreshold", "-1")
    try:
        clean_date(lake, DAY)
    finally:
        lake.spark.conf.unset("spark.sql.autoBroadcastJoinThreshold")
    assert snapshot() == before


def test_constraints_reject_bad_writes(lake_factory):
    lake = lake_factory(**PERMISSIVE)
    _prepare(lake)
    clean_date(lake, DAY)
    good = lake.read("silver.plays").limit(1)
    for bad in (good.withColumn("ms_played", F.lit(-1).cast("long")),
                good.withColumn("event_ts", F.lit(dt.datetime(1999, 1, 1))),
                good.withColumn("user_id", F.lit(""))):
        with pytest.raises(Exception, match="(?i)constraint"):
            lake.append(bad, "silver.plays")
    assert lake.read("silver.plays").count() == lake.read("silver.plays").distinct().count()
    # Silver and quarantine are written side by side: a failed write fails the step, on its thread,
    # and the other table's write still ends in its own commit.
    quarantine = lake.read("silver.plays_quarantine").where(F.col("date") == F.lit(DAY))
    rows, version = quarantine.count(), lake.version("silver.plays_quarantine")
    with pytest.raises(Exception, match="(?i)constraint"):
        _write_together(lake, [(quarantine.localCheckpoint(), "silver.plays_quarantine"),
                               (good.withColumn("ms_played", F.lit(-1).cast("long")), "silver.plays")], DAY, {})
    assert lake.version("silver.plays_quarantine") == version + 1 and quarantine.count() == rows
    # The constraints arrive with the table's create commit, not as later ALTER TABLE commits.
    table = DeltaTable.forPath(lake.spark, lake.path("silver.plays"))
    operations = [row["operation"] for row in table.history().orderBy("version").collect()]
    assert operations[0].startswith("CREATE") and "ADD CONSTRAINT" not in operations, operations
    properties = lake.properties("silver.plays")
    assert {k for k in properties if k.startswith("delta.constraints.")} == {
        f"delta.constraints.{name.lower()}" for name in spec("silver.plays").constraints}


def test_quarantine_threshold_fails_with_counts_and_keeps_silver(lake_factory):
    lake = lake_factory(ENCORE__CLEAN__BOT_MAX_PLAYS_PER_DAY="5")  # default threshold 25%
    _prepare(lake)
    with pytest.raises(EncoreError) as info:
        clean_date(lake, DAY)
    message = str(info.value)
    assert "max_quarantine_share" in message and "bot_user=6" in message and "malformed_record=2" in message
    assert lake.read("silver.plays").where(F.col("date") == F.lit(DAY)).count() == 0
    assert lake.read("silver.plays_quarantine").where(F.col("date") == F.lit(DAY)).count() > 0
    # A date nothing was ingested for stops with the step to run, and writes nothing.
    quarantine_version = lake.version("silver.plays_quarantine")
    with pytest.raises(EncoreError, match=r"no bronze rows for 2026-11-23: run `encore ingest --date 2026-11-23`"):
        clean_date(lake, dt.date(2026, 11, 23))
    assert lake.version("silver.plays_quarantine") == quarantine_version


def test_generated_faults_cover_every_reason(lake_factory):
    # The generator's oversized lines are 2 KB: over the limit only when it is set below that.
    lake = lake_factory(ENCORE__CLEAN__MAX_QUARANTINE_SHARE="1.0", ENCORE__CLEAN__MAX_LINE_BYTES="1500")
    landing = lake.config.path("landing")
    generate(landing, "synthetic", DAY, days=2, seed=3, events_per_day=4000, users=60, items=200,
             fault_rate=0.25, bots=1, workers=1)
    ingest_landing(lake)
    clean_date(lake, DAY - dt.timedelta(days=1))
    result = clean_date(lake, DAY)
    assert set(result.reasons) == set(EVENT_REASONS), result.summary()
    assert result.kept > 0.5 * result.events


def test_bronze_created_by_an_older_release_is_upgraded(lake_factory):
    """A bronze table without the contract's properties (row tracking, which clean refers to rows
    by) gets them on first use, and its dates clean as usual."""
    lake = lake_factory(**PERMISSIVE)
    table = spec("bronze.plays_raw")
    (DeltaTable.create(lake.spark).location(lake.path("bronze.plays_raw")).addColumns(table.schema)
     .partitionedBy(*table.partition_by).execute())
    _prepare(lake)
    result = clean_date(lake, DAY)
    properties = lake.properties("bronze.plays_raw")
    assert {k: properties.get(k) for k in table.properties} == table.properties
    kept = [event_id for event_id, reason in EXPECTED.items() if reason is None]
    assert result.kept == len(kept) and result.events == len(_fault_lines())
    silver = {r["event_id"] for r in lake.read("silver.plays").where(F.col("date") == F.lit(DAY)).collect()}
    assert silver == set(kept)


def test_empty_frame_is_planned_without_python_workers(lake):
    """Clean's first date has no prior silver plays to deduplicate against; the empty stand-in for
    them must be a JVM plan: a Python RDD would start Python workers in the middle of the pass."""
    ddl = "k long, tags array<struct<tag:string,count:bigint>>"
    empty = lake.empty(ddl)
    assert empty.schema == StructType.fromDDL(ddl)
    assert empty.count() == 0
    plan = empty._jdf.queryExecution().executedPlan().toString()
    assert "ExistingRDD" not in plan and "Python" not in plan, plan


def test_a_range_goes_past_gaps_and_gated_dates_and_names_them(lake_factory, capsys):
    """A backfill over 4 dates: one has no landing folder, one fails the quarantine gate; the others
    are ingested and cleaned, and the range ends with one line naming the held-back date and the gap."""
    import argparse
    from encore.pipeline import steps
    lake = lake_factory()
    landing = Path(lake.config.path("landing"))
    good = lambda day: [event(f"{day}-{i}", user=f"u{i % 5}", artist=f"a{i}", ts=f"{day}T1{i % 10}:00:0{i % 10}Z")  # noqa: E731
                        for i in range(20)]
    write_landing(landing, "2026-11-17", good("2026-11-17"))
    write_landing(landing, "2026-11-19", good("2026-11-19")[:5] + ['{"event_id": "broken'] * 10)
    write_landing(landing, "2026-11-20", good("2026-11-20"))
    span = argparse.Namespace(date=None, start=dt.date(2026, 11, 17), end=dt.date(2026, 11, 20), source="landing",
                              path=None)
    steps.ingest_command(lake.config, span)                       # the gap on 11-18 does not stop the range
    with pytest.raises(EncoreError) as info:
        steps.clean_command(lake.config, span)
    assert str(info.value).startswith(
        "clean: 1 of 4 dates held back: 2026-11-19 (66.7% of events quarantined, above "
        "clean.max_quarantine_share=25%); skipped (no data): 2026-11-18; 2 done.")
    printed = capsys.readouterr().out
    assert "2026-11-18 | -      | -    | -           | skipped: no data for this date" in printed
    kept = {r["date"]: r["n"] for r in lake.read("silver.plays").groupBy("date").agg(F.count("*").alias("n")).collect()}
    assert kept == {dt.date(2026, 11, 17): 20, dt.date(2026, 11, 20): 20}
    # One date stays strict: its failure is the command's.
    with pytest.raises(EncoreError, match="clean 2026-11-19: 66.7% of events quarantined"):
        steps.clean_command(lake.config, argparse.Namespace(date=dt.date(2026, 11, 19), start=None, end=None))


def test_lines_from_real_files_bom_crlf_bad_bytes_and_long_lines(lake_factory):
    """What real clients' files hold besides JSON: a byte-order mark and CRLF endings (Windows tools:
    read past), bytes that are not UTF-8 (a client writing Latin-1), a line past the size limit, a
    numeric id. Every line is accounted for; the quarantine stays valid UTF-8."""
    import gzip
    from encore.delta_reader import read_filtered
    lake = lake_factory(ENCORE__CLEAN__MAX_QUARANTINE_SHARE="1.0", ENCORE__CLEAN__MAX_LINE_BYTES="2000")
    lines = {
        "bom": b"\xef\xbb\xbf" + event("bom", user="u1").encode(),
        "crlf": event("crlf", user="u2").encode() + b"\r",
        "numeric-user": event("numeric-user", user=42).encode(),
        "latin1": event("latin1", user="u3", artist_name="Sigur Rós").encode("latin-1"),
        "long": event("long", user="u5", note="x" * 3000).encode(),
    }
    folder = Path(lake.config.path("landing")) / "plays" / f"date={DAY}"
    folder.mkdir(parents=True)
    with gzip.open(folder / "windows-client.jsonl.gz", "wb") as out:
        out.write(b"\r\n".join(lines.values()) + b"\r\n")
    ingest_landing(lake)
    result = clean_date(lake, DAY)
    kept = {r["event_id"]: r for r in lake.read("silver.plays").collect()}
    rejected = {r["event_id"]: r for r in lake.read("silver.plays_quarantine").collect()}
    assert set(kept) == {"bom", "crlf", "numeric-user"} and kept["numeric-user"]["user_id"] == "42"
    assert {k: r["reason"] for k, r in rejected.items()} == {"latin1": "invalid_utf8", "long": "line_too_long"}
    assert rejected["long"]["detail"].endswith(" bytes")
    assert "Sigur R\ufffds" in rejected["latin1"]["value"]
    assert result.events == len(lines) == len(kept) + len(rejected)
    # Readers outside Spark (Arrow, DuckDB) read the quarantine: it holds valid UTF-8 only.
    frame = read_filtered(lake.config, "silver.plays_quarantine", None, ["event_id", "value"]).frame
    assert len(frame) == 2
