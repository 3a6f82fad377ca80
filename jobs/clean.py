"""Clean: bronze -> silver for one logical date, every rejected record into the quarantine.

For a date D the job reads the bronze rows that landed on D and, in one pass, types and
validates them and gives each rejected row one reason code (first rule that fails, in order):

  line_too_long          a line longer than clean.max_line_bytes (1 MiB)
  invalid_utf8           bytes that are not UTF-8 (a client writing Latin-1, a cut multi-byte
                         character); the quarantined copy has them replaced by U+FFFD, the exact
                         bytes stay in bronze
  malformed_record       not a JSON object (truncated line, wrong TSV field count, blank line)
  wrong_type             an id or a name (event_id, user_id, artist_id, artist_name, track_id,
                         track_name) sent as a JSON object, array or boolean; numbers are read as
                         their digits (ts and ms_played of a wrong type fail their own rules below)
  missing_event_id       event_id absent or blank
  missing_user_id        user_id absent or blank
  missing_item           neither artist_id nor artist_name
  bad_timestamp          ts is neither ISO-8601 nor epoch millis
  timestamp_too_old      ts before clean.min_event_time (2000-01-01)
  timestamp_in_future    ts after the end of D plus clean.future_tolerance_hours
  bad_ms_played          ms_played present but not an integer (digits in a JSON string count as one)
  negative_ms_played     ms_played < 0
  absurd_ms_played       ms_played > clean.max_ms_played (3 h)
  duplicate_event_id     a second delivery of a user's event id: seen earlier on D, or in silver
                         within clean.dedupe_lookback_days before D (the earliest copy is kept;
                         of copies at the same time, the first ingested)
  duplicate_play         same user, same track, same clean.duplicate_play_window_seconds interval
                         (default: the same second) as a kept play under another event id: a client
                         re-sending a play. The track is its track_id, else the item and the track
                         name (trimmed, lower case), else the item alone when a line names no track.
                         Different tracks sharing a second (one track's end, the next one's start;
                         an album played through) are plays. A track logged at its start and again
                         at its end is two plays: nothing in a line tells it from a replay on
                         purpose. (The earliest play is kept; of plays at the same instant, the
                         first ingested.)
  bot_user               the user's kept plays on D exceed clean.bot_max_plays_per_day plays or
                         clean.bot_max_listening_hours_per_day hours of audio (no human does that):
                         all their plays that day are quarantined

Aggregated play counts (bronze.play_counts_raw) and catalogue entries (bronze.catalog_raw) of D
are validated the same way (``invalid_play_count``, ``duplicate_count``, ``malformed_record``,
``missing_item``). A line may start with a byte-order mark and end with CR (files from Windows
tools): both are read past, as RFC 8259 allows, and the line is judged on its content. A rerun of
D replaces exactly D's rows in silver and quarantine. If the quarantined share of D's play events
exceeds clean.max_quarantine_share, the job writes the quarantine (so it can be inspected), leaves
silver.plays untouched and fails with counts per reason.
"""
from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass, field

from pyspark.sql import Window
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from encore.errors import DateHeldBack, EncoreError, NoDataForDate
from encore.lakehouse import Lakehouse, retry_conflicts
from encore.udfs import NON_SCALAR, parse_text_fields
from schemas.events import CORRUPT_COLUMN, parse_schema, record_schema
from schemas.table_names import (BRONZE_CATALOG_RAW, BRONZE_PLAYS_RAW, BRONZE_PLAY_COUNTS_RAW,
                                   SILVER_CATALOG, SILVER_PLAYS, SILVER_PLAYS_QUARANTINE, SILVER_PLAY_COUNTS)

log = logging.getLogger(__name__)

# Duplicates' and bot plays' row ids are broadcast (to fetch their raw lines back, and to leave them
# out of silver) up to this many rows (a few MB); past it, shuffle joins: slower, no memory ceiling.
BROADCAST_MAX_ROWS = 2_000_000

EVENT_REASONS = ["line_too_long", "invalid_utf8", "malformed_record", "wrong_type", "missing_event_id", "missing_user_id",
                 "missing_item", "bad_timestamp", "timestamp_too_old", "timestamp_in_future", "bad_ms_played", "negative_ms_played",
                 "absurd_ms_played", "duplicate_event_id", "duplicate_play", "bot_user"]


@dataclass
class CleanResult:
    date: dt.date
    events: int = 0
    kept: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    @property
    def quarantined(self) -> int:
        return sum(self.reasons.values())

    def summary(self) -> str:
        share = self.quarantined / self.events if self.events else 0.0
        parts = ", ".join(f"{k}={v}" for k, v in sorted(self.reasons.items(), key=lambda kv: -kv[1]))
        return (f"{self.date}: {self.events} events, {self.kept} kept, {self.quarantined} quarantined "
                f"({share:.1%}){': ' + parts if parts else ''}")


def _blank_to_null(c):
    return F.nullif(F.trim(c), F.lit(""))


def _first_reason(rules: list[tuple[str, object]]):
    expr = F.lit(None).cast("string")
    for reason, failed in reversed(rules):
        expr = F.when(failed, F.lit(reason)).otherwise(expr)
    return expr


# The raw fields the rules read; the other fields of a line only pass through to silver.
RULE_FIELDS = ("event_id", "user_id", "artist_id", "artist_name", "track_id", "track_name", "ts", "ms_played")
TEXT_KEYS = RULE_FIELDS[:6]   # the fields wrong_type watches


def _typed_events(raw, day: dt.date, cfg: dict, rules_only: bool = False, judge: bool = True):
    """Parse and type raw lines; ``reason`` is the first field-level rule that fails (or null).

    ``rules_only`` reads only ``RULE_FIELDS`` off each line (the others come out null): enough to
    decide every rejection, and the parser then copies a third fewer bytes per line. Without
    ``judge`` the rules are not evaluated (no ``reason``, ``detail``): for rows already judged."""
    e = F.col("e")
    schema = record_schema("play_event")
    if rules_only:
        schema = StructType([f for f in schema.fields if f.name in RULE_FIELDS])
    value = F.col("value")
    # A byte-order mark is read past (only lines that have one pay for the substring).
    unmarked = F.when(value.startswith("\ufeff"), F.substring(value, 2, 1 << 30)).otherwise(value)
    parsed = raw.select("_rid", "value", "source_format", "source_file",
                        parse_text_fields(raw.sparkSession, unmarked, schema,
                                          watched=TEXT_KEYS if judge else ()).alias("e"))

    def text(name: str):
        return _blank_to_null(e[name]) if name in schema.fieldNames() else F.lit(None).cast("string")
    ts_text, ms_text, artist_name = text("ts"), text("ms_played"), text("artist_name")
    item = F.coalesce(text("artist_id"), F.concat(F.lit("name:"), F.lower(artist_name)))
    typed_columns = [
        text("event_id").alias("event_id"),
        text("user_id").alias("user_id"),
        item.alias("item_id"),
        artist_name.alias("artist_name"),
        text("track_id").alias("track_id"),
        text("track_name").alias("track_name"),
        F.when(ts_text.rlike(r"^-?[0-9]{1,15}$"), F.timestamp_millis(ts_text.try_cast("long")))
         .otherwise(F.try_to_timestamp(ts_text)).alias("event_ts"),
        ms_text.try_cast("long").alias("ms_played"),
        F.lower(text("platform")).alias("platform"),
        F.upper(text("country")).alias("country"),
    ]
    if not judge:
        return parsed.select("_rid", "value", "source_format", "source_file", *typed_columns)

    utf8 = F.is_valid_utf8(value)
    typed = parsed.select(
        "_rid", F.when(utf8, value).otherwise(F.make_valid_utf8(value)).alias("value"),
        "source_format", "source_file", F.octet_length(value).alias("_bytes"), utf8.alias("_utf8"),
        e.isNull().alias("_malformed"),
        e[NON_SCALAR].alias("_non_scalar"),
        *typed_columns,
        # What duplicate_play compares: the track, however the line names it (see the module docstring).
        F.coalesce(F.concat(F.lit("id:"), text("track_id")),
                   F.concat(F.lit("item:"), item, F.lit(" name:"), F.lower(text("track_name"))),
                   F.concat(F.lit("item:"), item))
         .alias("play_key"),
        ts_text.alias("ts_text"),
        ms_text.alias("ms_text"),
    )
    latest = dt.datetime.combine(day + dt.timedelta(days=1), dt.time()) + dt.timedelta(
        hours=cfg.future_tolerance_hours)
    oldest = F.to_timestamp(F.lit(cfg.min_event_time))
    reason = _first_reason([
        ("line_too_long", F.col("_bytes") > cfg.max_line_bytes),
        ("invalid_utf8", ~F.col("_utf8")),
        ("malformed_record", F.col("_malformed")),
        ("wrong_type", F.col("_non_scalar").isNotNull()),
        ("missing_event_id", F.col("event_id").isNull()),
        ("missing_user_id", F.col("user_id").isNull()),
        ("missing_item", F.col("item_id").isNull()),
        ("bad_timestamp", F.col("event_ts").isNull()),
        ("timestamp_too_old", F.col("event_ts") < oldest),
        ("timestamp_in_future", F.col("event_ts") > F.lit(latest)),
        ("bad_ms_played", F.col("ms_text").isNotNull() & F.col("ms_played").isNull()),
        ("negative_ms_played", F.col("ms_played") < 0),
        ("absurd_ms_played", F.col("ms_played") > cfg.max_ms_played),
    ])
    detail = (F.when(reason.isin("bad_timestamp", "timestamp_too_old", "timestamp_in_future"),
                     F.concat(F.lit("ts="), F.col("ts_text")))
               .when(reason.isin("bad_ms_played", "negative_ms_played", "absurd_ms_played"),
                     F.concat(F.lit("ms_played="), F.col("ms_text")))
               .when(reason == "line_too_long", F.format_string("%d bytes", F.col("_bytes")))
               .when(reason == "wrong_type", F.col("_non_scalar"))
               .when(reason == "invalid_utf8", F.lit("bytes that are not UTF-8 shown as U+FFFD; the exact line is in "
                                                     "bronze.plays_raw")))
    return (typed.withColumn("reason", reason).withColumn("detail", detail)
            .drop("_malformed", "_non_scalar", "ts_text", "ms_text", "_bytes", "_utf8"))


def _key(column: str) -> list:
    """A string column as a 128-bit key: two 64-bit xxHash values of it under different seeds.

    The decisions group and sort by user, event and item ids; shuffling and comparing longs instead
    of strings made that pass a third faster at 10M events, and fixed-width rows (user ids as keys
    too) ~5% more. A collision would quarantine a real play: two event or item keys colliding
    within one user's day has a probability below 1e-25 even for a user with a million plays a
    day; two users sharing a key (merging their bot counts), below 1e-20 with a billion users.
    """
    return [F.xxhash64(column).alias(f"_{column}_k1"), F.xxhash64(F.lit("encore-key-2"), column).alias(f"_{column}_k2")]


def _rejects(typed, prior, cfg: dict):
    """Every rejected row of the date with its reason, decided in one pass over the parsed rows.

    Rows that failed a field rule keep the reason ``_typed_events`` gave them and carry what the
    quarantine needs (``_kept``: detail, ids, raw line, file). Rows that passed carry only a few
    narrow columns for the duplicate and bot decisions; those they fail are the *late* rejects
    (``_late``), whose raw line ``_restore_raw`` fetches back from bronze. Everything is shuffled
    once, by user: an event id is deduplicated within its user (a re-delivery repeats the whole
    event), so the event-id, same-second and bot windows all share the user partitioning. User,
    event and item ids travel as 128-bit keys (``_key``). The prior dates' (user, event) keys ride
    along in the same shuffle instead of a join. Only rows that passed the field rules take part in
    the decisions (``_ok`` in the windows' partitions), as if the others were not there.
    """
    ok = F.col("reason").isNull()
    rows = (typed
            .select("_rid", *_key("user_id"), *_key("event_id"), *_key("play_key"), "event_ts", "ms_played", "reason",
                    ok.alias("_ok"), F.lit(False).alias("_prior"),
                    # One nullable column rather than five: a passed row pays one null slot in the shuffle.
                    F.when(~ok, F.struct("detail", "event_id", "user_id", "value", "source_file")).alias("_kept"))
            .unionByName(prior.withColumn("_ok", F.lit(True)), allowMissingColumns=True)
            .repartition("_user_id_k1"))
    user = ["_user_id_k1", "_user_id_k2"]
    # Of two copies at the same time, the first ingested (lower bronze row id) is kept.
    id_rank = F.row_number().over(Window.partitionBy(*user, "_ok", "_event_id_k1", "_event_id_k2").orderBy(
        F.col("_prior").desc(), "event_ts", "_rid"))
    rows = (rows.withColumn("reason", F.when(ok & (id_rank > 1), F.lit("duplicate_event_id")).otherwise(F.col("reason")))
            .where(~F.col("_prior")))
    # Same user, track and interval under another id: a client retry. Of plays at the same
    # instant, again the first ingested is kept.
    interval = F.floor(F.unix_micros(F.col("event_ts")) / (cfg.duplicate_play_window_seconds * 1_000_000))
    play_rank = F.row_number().over(Window.partitionBy(*user, "_ok", "_play_key_k1", "_play_key_k2", interval).orderBy(
        F.col("reason").isNotNull(), "event_ts", "_rid"))
    rows = rows.withColumn("reason", F.when(F.col("reason").isNull() & (play_rank > 1), F.lit("duplicate_play"))
                           .otherwise(F.col("reason")))
    by_user = Window.partitionBy(*user)
    kept = F.col("reason").isNull()
    # Both totals in one select, so they are one window operator: referring to the window
    # expressions in both the reason and the detail made Spark buffer each user's rows four times
    # (10M events: the decisions ~2 s faster).
    rows = rows.select(
        "*",
        F.sum(F.when(kept, 1).otherwise(0)).over(by_user).alias("_plays"),
        (F.sum(F.when(kept, F.coalesce("ms_played", F.lit(0))).otherwise(0)).over(by_user) / 3_600_000).alias("_hours"))
    is_bot = kept & ((F.col("_plays") > cfg.bot_max_plays_per_day)
                     | (F.col("_hours") > cfg.bot_max_listening_hours_per_day))
    detail = (F.when(is_bot, F.format_string("%d plays, %.1f h of audio in the day", F.col("_plays"), F.col("_hours")))
              .when(F.col("reason") == "duplicate_play", F.lit("same user, track and second as a kept play"
                                                                if cfg.duplicate_play_window_seconds == 1 else
                                                                "same user, track and "
                                                                f"{cfg.duplicate_play_window_seconds} s interval as a kept play"))
              .otherwise(F.col("_kept.detail")))
    return (rows.withColumn("reason", F.when(is_bot, F.lit("bot_user")).otherwise(F.col("reason")))
            .where(F.col("reason").isNotNull())
            .select("_rid", "reason", detail.alias("detail"), F.col("_ok").alias("_late"),
                    *[F.col(f"_kept.{c}").alias(c) for c in ("event_id", "user_id", "value", "source_file")]))


def _restore_raw(late, raw, day: dt.date, cfg: dict):
    """Late rejects (decided on keys, without their raw line) as quarantine input: their raw line and
    file fetched back from bronze by row id, their event and user ids typed again from that line.

    ``late`` comes with a broadcast hint when it is small, so bronze is then scanned once without a shuffle."""
    lines = raw.select("_rid", "value", "source_format", "source_file").join(late.select("_rid"), "_rid", "left_semi")
    return (_typed_events(lines, day, cfg, rules_only=True).select("_rid", "event_id", "user_id", "value", "source_file")
            .join(late, "_rid"))


def _prior_events(lake: Lakehouse, day: dt.date, lookback: int):
    """(user key, event key) of the plays kept in silver within the lookback before ``day``."""
    if lookback <= 0 or not lake.exists(SILVER_PLAYS):
        return lake.empty("_user_id_k1 long, _user_id_k2 long, _event_id_k1 long, _event_id_k2 long, _prior boolean")
    start = day - dt.timedelta(days=lookback)
    return (lake.read(SILVER_PLAYS).where(F.col("date").between(F.lit(start), F.lit(day - dt.timedelta(days=1))))
            .select(*_key("user_id"), *_key("event_id"), F.lit(True).alias("_prior")))


def _quarantine_rows(df, day: dt.date, record_type: str):
    return df.select(F.lit(day).alias("date"), "reason", "detail", F.lit(record_type).alias("record_type"),
                     F.col("event_id"), F.col("user_id"), F.col("value"), F.col("source_file"))


def _bronze_rows(lake: Lakehouse, table: str, date_column: str, day: dt.date):
    """The table's rows for ``day``, or None when the table or the date has none."""
    if not lake.exists(table):
        return None
    raw = lake.read(table).where(F.col(date_column) == F.lit(day))
    return None if raw.isEmpty() else raw


def _clean_counts(lake: Lakehouse, day: dt.date):
    """bronze.play_counts_raw of D -> (valid silver rows, quarantine rows), or None when there are none."""
    raw = _bronze_rows(lake, BRONZE_PLAY_COUNTS_RAW, "snapshot_date", day)
    if raw is None:
        return None
    count = F.trim("play_count").try_cast("long")
    typed = raw.select("source", _blank_to_null(F.col("user_id")).alias("user_id"),
                       _blank_to_null(F.col("item_id")).alias("item_id"), count.alias("count"),
                       F.col("play_count").alias("count_text"), "source_file",
                       F.to_json(F.struct("source", "user_id", "item_id", "play_count")).alias("value"))
    rank = F.row_number().over(Window.partitionBy("source", "user_id", "item_id").orderBy(F.col("count").desc_nulls_last()))
    reason = _first_reason([
        ("missing_user_id", F.col("user_id").isNull()),
        ("missing_item", F.col("item_id").isNull()),
        ("invalid_play_count", F.col("count").isNull() | (F.col("count") <= 0)),
        ("duplicate_count", rank > 1),
    ])
    typed = typed.withColumn("reason", reason).withColumn(
        "detail", F.when(F.col("reason") == "invalid_play_count", F.concat(F.lit("play_count="), F.col("count_text"))))
    valid = typed.where(F.col("reason").isNull()).select(
        F.lit(day).alias("snapshot_date"), "source", "user_id", "item_id", F.col("count").alias("play_count"))
    bad = _quarantine_rows(typed.where(F.col("reason").isNotNull()).withColumn("event_id", F.lit(None).cast("string")),
                           day, "play_count")
    return valid, bad


def _clean_catalog(lake: Lakehouse, day: dt.date):
    """bronze.catalog_raw of D -> (newest valid entry per item, quarantine rows), or None."""
    raw = _bronze_rows(lake, BRONZE_CATALOG_RAW, "landing_date", day)
    if raw is None:
        return None
    e = F.col("e")
    parsed = raw.select("value", "source_file", "ingested_at", F.from_json(
        "value", parse_schema("catalog_entry"), {"columnNameOfCorruptRecord": CORRUPT_COLUMN}).alias("e"))
    tags = F.transform(F.coalesce(e.tags, F.array().cast(parse_schema("catalog_entry")["tags"].dataType)), lambda t: F.struct(
        F.lower(F.trim(t.tag)).alias("tag"), t["count"].try_cast("long").alias("count"),
        F.try_to_date(t.first_tagged).alias("first_tagged")))
    typed = parsed.select(
        "value", "source_file", "ingested_at", _blank_to_null(e.artist_id).alias("item_id"), e["name"].alias("name"),
        F.filter(tags, lambda t: t.tag.isNotNull() & (t["count"] > 0)).alias("tags"),
        _first_reason([("malformed_record", e.isNull() | e[CORRUPT_COLUMN].isNotNull()),
                       ("missing_item", _blank_to_null(e.artist_id).isNull())]).alias("reason"))
    newest = F.row_number().over(Window.partitionBy("item_id").orderBy(F.col("ingested_at").desc(), F.col("source_file").desc()))
    valid = (typed.where(F.col("reason").isNull()).withColumn("_n", newest).where("_n = 1")
             .select("item_id", "name", "tags", F.lit(day).alias("updated_date")))
    bad = _quarantine_rows(typed.where(F.col("reason").isNotNull()).select(
        "reason", F.lit(None).cast("string").alias("detail"), F.lit(None).cast("string").alias("event_id"),
        F.lit(None).cast("string").alias("user_id"), "value", "source_file"), day, "catalog_entry")
    return valid, bad


def _merge_catalog(lake: Lakehouse, entries) -> None:
    from delta.tables import DeltaTable
    lake.ensure(SILVER_CATALOG)
    retry_conflicts(lambda: (DeltaTable.forPath(lake.spark, lake.path(SILVER_CATALOG)).alias("t")
                             .merge(entries.alias("s"), "t.item_id = s.item_id")
                             .whenMatchedUpdateAll(condition="s.updated_date >= t.updated_date")
                             .whenNotMatchedInsertAll()
                             .execute()))


def _write_together(lake: Lakehouse, writes: list, day: dt.date, run_info: dict) -> None:
    """Replace ``day`` in several tables at once, each in its own Delta commit: the first on the
    calling thread, each other one on a thread of its own.

    One table's write keeps both cores busy only until its last tasks and its driver-side commit;
    the other's tasks fill that idle time (10M events: ~2 s). The first listed gets the cores
    first. If any write fails, the step fails after all have ended; a rerun of the date replaces
    them all.
    """
    from pyspark import InheritableThread
    for _, name in writes:
        lake.ensure(name)   # table creation and catalog registration stay on this thread
    errors: list[BaseException] = []

    def write(df, name):
        try:
            lake.replace_partition(df, name, "date", day, run_info)
        except BaseException as exc:  # re-raised on the calling thread below
            errors.append(exc)
    threads = [InheritableThread(target=write, args=w, name=f"clean-write-{w[1]}") for w in writes[1:]]
    for thread in threads:
        thread.start()
    write(*writes[0])
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


def clean_date(lake: Lakehouse, day: dt.date) -> CleanResult:
    cfg = lake.config.clean
    if not lake.exists(BRONZE_PLAYS_RAW) and not lake.exists(BRONZE_PLAY_COUNTS_RAW):
        raise EncoreError("bronze is empty: run `encore ingest` first")
    lake.ensure(BRONZE_PLAYS_RAW)
    # Every read below is of the same bronze version, so a row id names the same row in each.
    version = lake.version(BRONZE_PLAYS_RAW)
    raw = (lake.read(BRONZE_PLAYS_RAW, version).select("*", F.col("_metadata.row_id").alias("_rid"))
           .where(F.col("landing_date") == F.lit(day)))
    run_info = {"job": "clean", "date": day.isoformat(), BRONZE_PLAYS_RAW: version}
    counts, catalog = _clean_counts(lake, day), _clean_catalog(lake, day)

    # Two passes over the parsed bronze rows, nothing of their full width staged: the first decides
    # every rejection (``_rejects``: a narrow shuffle by user, ~2% of rows with their raw line), the
    # second writes silver from a fresh parse minus those rejections. Parsing again cost less than
    # writing all typed rows to Parquet and reading them back twice (10M events: ~14 s). The first
    # parse reads only the fields the rules need (RULE_FIELDS).
    prior = _prior_events(lake, day, cfg.dedupe_lookback_days)
    started = time.monotonic()
    log.info("clean %s: pass 1 of 2, the rules over bronze v%d ...", day, version)
    with lake.staging(f"clean-{day}") as staged_path:
        _rejects(_typed_events(raw, day, cfg, rules_only=True), prior, cfg).write.parquet(f"{staged_path}/rejects")
        rejects = lake.spark.read.parquet(f"{staged_path}/rejects")
        result = CleanResult(day)
        counted = rejects.groupBy("reason", "_late").count().collect()
        result.reasons = {row["reason"]: row["count"] for row in counted}
        late_total = sum(row["count"] for row in counted if row["_late"])
        result.events = raw.count()
        if not result.events and counts is None:
            raise NoDataForDate(f"no bronze rows for {day}: run `encore ingest --date {day}` first")
        result.kept = result.events - result.quarantined
        late = rejects.where("_late").select("_rid", "reason", "detail")
        if late_total <= BROADCAST_MAX_ROWS:
            late = F.broadcast(late)
        quarantine = _quarantine_rows(rejects.where(~F.col("_late")), day, "play_event").unionByName(
            _quarantine_rows(_restore_raw(late, raw, day, cfg), day, "play_event"))
        for extra in (counts, catalog):
            if extra is not None:
                quarantine = quarantine.unionByName(extra[1])

        share = result.quarantined / result.events if result.events else 0.0
        limit = cfg.max_quarantine_share
        if share > limit:
            lake.replace_partition(quarantine, SILVER_PLAYS_QUARANTINE, "date", day, run_info)
            raise DateHeldBack(f"clean {day}: {share:.1%} of events quarantined, above clean.max_quarantine_share="
                              f"{limit:.0%}; silver.plays left unchanged. {result.summary()}")
        # Silver is every row the first pass did not reject: the rules are not evaluated again.
        rejected = rejects.select("_rid")
        if result.quarantined <= BROADCAST_MAX_ROWS:
            rejected = F.broadcast(rejected)
        log.info("clean %s: pass 2 of 2, writing %d plays and %d quarantined rows (pass 1 took %.0f s) ...", day,
                 result.kept, result.quarantined, time.monotonic() - started)
        plays = (_typed_events(raw, day, cfg, judge=False)
                 .join(rejected, "_rid", "left_anti").withColumn("date", F.lit(day)))
        _write_together(lake, [(plays, SILVER_PLAYS), (quarantine, SILVER_PLAYS_QUARANTINE)], day, run_info)
    if counts is not None:
        lake.replace_partition(counts[0], SILVER_PLAY_COUNTS, "snapshot_date", day, run_info)
    if catalog is not None:
        _merge_catalog(lake, catalog[0])
    log.info("clean %s", result.summary())
    return result
