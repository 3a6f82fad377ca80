"""The table registry: every lakehouse table's name, schema, partitioning, constraints and docs.

This is the one source for the Spark schemas the jobs write, the column comments analysts see
with ``DESCRIBE TABLE``, and ``encore tables``. Paths come from ``encore.lakehouse``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from pyspark.sql.types import (ArrayType, BinaryType, DateType, DoubleType, IntegerType, LongType, MapType,
                               StringType, StructField, StructType, TimestampType)

from schemas.table_names import (BRONZE_CATALOG_RAW, BRONZE_PLAYS_RAW, BRONZE_PLAY_COUNTS_RAW, BRONZE_REJECTED_FILES,
                                   GOLD_INTERACTIONS, GOLD_ITEMS, GOLD_MUSIC_SEQUENCES, GOLD_USER_PROFILES,
                                   SILVER_CATALOG, SILVER_MUSIC_QUARANTINE, SILVER_PLAYS,
                                   SILVER_PLAYS_QUARANTINE, SILVER_PLAY_COUNTS, WAREHOUSE_INSPIRATION_PACKS,
                                   WAREHOUSE_RECOMMENDATIONS, WAREHOUSE_SKETCHES, OPS_ERASURE_LOG)


def col(name: str, dtype, doc: str, nullable: bool = True) -> StructField:
    return StructField(name, dtype, nullable, metadata={"comment": doc})


TAG_COUNT = StructType([StructField("tag", StringType()), StructField("count", LongType()),
                        StructField("first_tagged", DateType())])
TAG_WEIGHT = StructType([StructField("tag", StringType()), StructField("weight", DoubleType())])
SOURCE_VERSIONS_DOC = "Delta versions of the silver tables this row was built from, e.g. {'silver.plays': 12}"


@dataclass(frozen=True)
class TableSpec:
    name: str                 # "<layer>.<table>", the name in the Spark catalog
    schema: StructType
    partition_by: tuple[str, ...]
    doc: str
    constraints: dict[str, str] = field(default_factory=dict)
    properties: dict[str, str] = field(default_factory=dict)   # Delta table properties (Lakehouse.ensure)

    @property
    def layer(self) -> str:
        return self.name.split(".")[0]

    @property
    def short_name(self) -> str:
        return self.name.split(".")[1]


_INGEST_COLS = [
    col("source_format", StringType(), "Adapter that read the line: jsonl, lastfm1k.", False),
    col("source_file", StringType(), "File the row came from, where it was read (an absolute path or URI).", False),
    col("ingested_at", TimestampType(), "When ingest appended the row (UTC).", False),
    col("source_key", StringType(), "The file's identity with source_sha256: its path under the landing root "
        "(plays/date=D/name), the same wherever the root is mounted; the file name for other sources. "
        "Null for rows ingested before release 0.2 (their identity is the tail of source_file)."),
    col("source_sha256", StringType(), "SHA-256 of the file's content (gzip decompressed; null before release 0.2)."),
]

PLAYS_RAW = TableSpec(
    BRONZE_PLAYS_RAW,
    StructType([
        col("landing_date", DateType(), "Landing partition (date=YYYY-MM-DD) the file was delivered in.", False),
        col("value", StringType(), "The raw line exactly as delivered (a play event as JSON for jsonl).", False),
        *_INGEST_COLS,
    ]),
    ("landing_date",),
    "Append-only raw play events as clients sent them, plus ingestion metadata. A file is ingested once.",
    # Row tracking gives every row a stable id (_metadata.row_id), by which clean refers to a row.
    properties={"delta.dataSkippingStatsColumns": "source_file,ingested_at,source_key", "delta.enableRowTracking": "true"},
)

CATALOG_RAW = TableSpec(
    BRONZE_CATALOG_RAW,
    StructType([
        col("landing_date", DateType(), "Landing partition the catalogue file was delivered in.", False),
        col("value", StringType(), "The raw catalogue entry line (schemas/catalog_entry.schema.json).", False),
        *_INGEST_COLS,
    ]),
    ("landing_date",),
    "Append-only raw catalogue entries (artist, name, tags).",
    properties={"delta.dataSkippingStatsColumns": "source_file,ingested_at,source_key"},
)

PLAY_COUNTS_RAW = TableSpec(
    BRONZE_PLAY_COUNTS_RAW,
    StructType([
        col("snapshot_date", DateType(), "Date the aggregated counts were ingested for.", False),
        col("source", StringType(), "Dataset the counts come from, e.g. hetrec.", False),
        col("user_id", StringType(), "User id as in the source."),
        col("item_id", StringType(), "Item (artist) id as in the source."),
        col("play_count", StringType(), "Play count as text, validated by clean."),
        col("source_file", StringType(), "File the row came from.", False),
        col("ingested_at", TimestampType(), "When ingest appended the row (UTC).", False),
    ]),
    ("snapshot_date",),
    "Aggregated (user, item, play count) rows from sources that have no events, kept as counts.",
)

REJECTED_FILES = TableSpec(
    BRONZE_REJECTED_FILES,
    StructType([
        col("recorded_at", TimestampType(), "When ingest found the file (UTC).", False),
        col("table_name", StringType(), "The bronze table the file was delivered for.", False),
        col("landing_date", DateType(), "Landing partition (date=YYYY-MM-DD) the file was delivered in."),
        col("source_key", StringType(), "Path under the landing root (plays/date=D/name).", False),
        col("source_file", StringType(), "Where the file was read.", False),
        col("size", LongType(), "Bytes.", False),
        col("sha256", StringType(), "SHA-256 of the file's content (decompressed); of its raw bytes when unreadable."),
        col("status", StringType(), "unreadable (corrupt or truncated gzip, not text, cannot be opened), changed "
            "(different content under a name already ingested) or duplicate (content already ingested under "
            "another name).", False),
        col("error", StringType(), "What was wrong, and for changed/duplicate the file it collides with.", False),
    ]),
    (),
    "Landing files ingest did not take, with the reason. Nothing is dropped silently: a good copy delivered "
    "again (new bytes) is ingested on the next run.",
)

PLAYS = TableSpec(
    SILVER_PLAYS,
    StructType([
        col("date", DateType(), "Logical date (the landing date) whose run produced the row.", False),
        col("event_id", StringType(), "Unique play id.", False),
        col("user_id", StringType(), "Listener id.", False),
        col("item_id", StringType(), "Artist id; 'name:<lower-cased name>' when the source had no id.", False),
        col("artist_name", StringType(), "Artist name as delivered."),
        col("track_id", StringType(), "Track id when known."),
        col("track_name", StringType(), "Track title when known."),
        col("event_ts", TimestampType(), "Start of the play (UTC).", False),
        col("ms_played", LongType(), "Milliseconds played; null when the source does not know."),
        col("platform", StringType(), "Client platform, lower-cased."),
        col("country", StringType(), "Client country, upper-cased ISO 3166-1 alpha-2."),
        col("source_format", StringType(), "Adapter that read the raw line.", False),
        col("source_file", StringType(), "File the raw line came from.", False),
    ]),
    ("date",),
    "Typed, validated, deduplicated plays. One row per real play; bots removed.",
    constraints={
        "ms_played_in_range": "ms_played IS NULL OR (ms_played >= 0 AND ms_played <= 86400000)",
        # Written so the per-row check is cheap: a typed literal (a string would be cast on every row)
        # and comparisons with '' (length() counts characters). Tables created with the earlier,
        # equivalent forms keep them.
        "event_ts_after_2000": "event_ts >= TIMESTAMP'2000-01-01 00:00:00'",
        "ids_not_blank": "event_id <> '' AND user_id <> '' AND item_id <> ''",
    },
    # File statistics (min/max per file) only where they can exclude a file. A date's files each
    # span the whole day, every item and every ms_played range, so statistics on event_ts, item_id
    # and ms_played never skipped one and cost ~2 s of a 10M-row write (29 -> 27 s, measured apart).
    # user_id keeps them: the column lookups filter on, and narrow per file where a landing file
    # holds a range of users. Add columns back if silver is ever clustered by them.
    properties={"delta.dataSkippingStatsColumns": "user_id"},
)

QUARANTINE = TableSpec(
    SILVER_PLAYS_QUARANTINE,
    StructType([
        col("date", DateType(), "Logical date whose run rejected the row.", False),
        col("reason", StringType(), "Reason code (see README: quarantine reasons).", False),
        col("detail", StringType(), "Human detail, e.g. the offending value."),
        col("record_type", StringType(), "play_event, play_count or catalog_entry.", False),
        col("event_id", StringType(), "Event id when it could be read."),
        col("user_id", StringType(), "User id when it could be read."),
        col("value", StringType(), "The raw record, so nothing is lost.", False),
        col("source_file", StringType(), "File the raw record came from."),
    ]),
    ("date",),
    "Every record clean rejected, with a reason code. Nothing is dropped silently.",
)

PLAY_COUNTS = TableSpec(
    SILVER_PLAY_COUNTS,
    StructType([
        col("snapshot_date", DateType(), "Date the counts were ingested for.", False),
        col("source", StringType(), "Dataset the counts come from.", False),
        col("user_id", StringType(), "User id.", False),
        col("item_id", StringType(), "Item (artist) id.", False),
        col("play_count", LongType(), "Validated play count (> 0).", False),
    ]),
    ("snapshot_date",),
    "Validated aggregated play counts (no events behind them).",
    constraints={"play_count_positive": "play_count > 0"},
)

CATALOG = TableSpec(
    SILVER_CATALOG,
    StructType([
        col("item_id", StringType(), "Artist id.", False),
        col("name", StringType(), "Display name."),
        col("tags", ArrayType(TAG_COUNT), "Tags with application counts, lower-cased."),
        col("updated_date", DateType(), "Landing date of the newest entry.", False),
    ]),
    (),
    "The artist catalogue: newest entry per artist.",
)

INTERACTIONS = TableSpec(
    GOLD_INTERACTIONS,
    StructType([
        col("as_of_date", DateType(), "Snapshot date: built from silver up to this date.", False),
        col("user_id", StringType(), "Listener id.", False),
        col("item_id", StringType(), "Artist id.", False),
        col("plays", LongType(), "Number of plays in the window (events plus imported counts).", False),
        col("ms_played", LongType(), "Total milliseconds played (events only)."),
        col("confidence", DoubleType(), "Implicit-feedback weight log1p(plays).", False),
        col("last_played", TimestampType(), "Latest play in the window (events only)."),
        col("source_versions", MapType(StringType(), LongType()), SOURCE_VERSIONS_DOC, False),
    ]),
    ("as_of_date",),
    "User x item implicit-feedback weights for the recommender.",
)

ITEMS = TableSpec(
    GOLD_ITEMS,
    StructType([
        col("as_of_date", DateType(), "Snapshot date.", False),
        col("item_id", StringType(), "Artist id.", False),
        col("name", StringType(), "Display name (from the catalogue, else from play events)."),
        col("top_tags", ArrayType(StringType()), "Most applied tags, most first."),
        col("plays", LongType(), "Plays in the window.", False),
        col("listeners", LongType(), "Distinct users in the window (popularity).", False),
        col("popularity_rank", LongType(), "1 = most listeners.", False),
        col("source_versions", MapType(StringType(), LongType()), SOURCE_VERSIONS_DOC, False),
    ]),
    ("as_of_date",),
    "Catalogue with tags and popularity, for items anyone played in the window.",
)

USER_PROFILES = TableSpec(
    GOLD_USER_PROFILES,
    StructType([
        col("as_of_date", DateType(), "Snapshot date.", False),
        col("user_id", StringType(), "Listener id.", False),
        col("plays", LongType(), "Plays in the window.", False),
        col("distinct_items", LongType(), "Distinct artists played.", False),
        col("tag_distribution", ArrayType(TAG_WEIGHT), "Taste: play-weighted tag shares summing to 1, largest first."),
        col("top_tags", ArrayType(StringType()), "The largest tags of tag_distribution."),
        col("source_versions", MapType(StringType(), LongType()), SOURCE_VERSIONS_DOC, False),
    ]),
    ("as_of_date",),
    "Per-user taste: tag distribution over what they play.",
)

MUSIC_SEQUENCES = TableSpec(
    GOLD_MUSIC_SEQUENCES,
    StructType([
        col("piece_id", StringType(), "Stable id: <source>/<file>[#<tune>].", False),
        col("source", StringType(), "Collection: bach_chorales, essen, oneills, pop909, nottingham.", False),
        col("style", StringType(), "Style label from the collection: chorale, folk or pop.", False),
        col("key", StringType(), "Key such as 'D major' (header, dataset annotation, else Krumhansl-Schmuckler).", False),
        col("tempo", DoubleType(), "Beats per minute (first tempo marking, else 120).", False),
        col("tempo_bucket", StringType(), "slow (< 90 bpm), medium or fast (>= 130 bpm).", False),
        col("n_notes", IntegerType(), "Notes in the piece (all parts merged).", False),
        col("token_ids", ArrayType(IntegerType()), "REMI + BPE token ids (tokenizer of this corpus build).", False),
        col("length", IntegerType(), "Number of token ids.", False),
        col("melody", ArrayType(IntegerType()), "Top-line MIDI pitches in onset order (originality checks).", False),
        col("split", StringType(), "train, validation or test (hash of piece_id).", False),
        col("tokenizer_sha256", StringType(), "Checksum of the tokenizer that produced token_ids.", False),
    ]),
    (),
    "Tokenized symbolic music for the music model; rebuilt whole by `encore corpus`.",
)

MUSIC_QUARANTINE = TableSpec(
    SILVER_MUSIC_QUARANTINE,
    StructType([
        col("piece_id", StringType(), "The piece that failed.", False),
        col("source", StringType(), "Collection.", False),
        col("path", StringType(), "File it came from.", False),
        col("stage", StringType(), "parse or tokenize.", False),
        col("error", StringType(), "What went wrong.", False),
    ]),
    (),
    "Music files or tunes the corpus job could not use, with the error; rebuilt with the corpus.",
)

RUN_COLS_DOC = "MLflow run of the job that wrote this run date's rows (params, metrics, lineage)."

RECOMMENDATIONS = TableSpec(
    WAREHOUSE_RECOMMENDATIONS,
    StructType([
        col("run_date", DateType(), "Logical date of the nightly run.", False),
        col("user_id", StringType(), "Listener id (every user seen in silver up to run_date).", False),
        col("rank", IntegerType(), "1 = best; 1..K without gaps per user.", False),
        col("item_id", StringType(), "Recommended artist id; never one the user played in the gold window.", False),
        col("item_name", StringType(), "Display name of the artist."),
        col("score", DoubleType(), "Score within the row's strategy (comparable within one user and strategy only).", False),
        col("strategy", StringType(), "model, tag_profile or popularity (README: recommendation strategies).", False),
        col("reason", StringType(), "Human reason, e.g. 'because you play Radiohead'.", False),
        col("reason_item_id", StringType(), "The played artist behind the reason (model rows)."),
        col("model_name", StringType(), "MLflow registered recommender.", False),
        col("model_version", IntegerType(), "Its version (the champion at scoring time).", False),
        col("mlflow_run_id", StringType(), RUN_COLS_DOC, False),
        col("source_versions", MapType(StringType(), LongType()), "Delta versions of the gold tables read.", False),
    ]),
    ("run_date",),
    "Top-K artists per user per nightly run, with strategy and reason.",
    constraints={"rank_positive": "rank >= 1",
                 "known_strategy": "strategy IN ('model', 'tag_profile', 'popularity')"},
)

# A sketch's musical facts, as warehouse.sketches and the export's packs both state them.
SKETCH_FACTS = [
    col("style", StringType(), "chorale, folk or pop.", False),
    col("key", StringType(), "Key, e.g. 'D major'.", False),
    col("tempo_bucket", StringType(), "slow, medium or fast.", False),
    col("tempo_bpm", DoubleType(), "Tempo of the MIDI file.", False),
    col("bars", IntegerType(), "Bar budget of the sketch.", False),
    col("seed", LongType(), "Sampling seed (with the model version it reproduces the sketch).", False),
    col("chords", StringType(), "One chord per bar, e.g. 'D | G | A | D'; N.C. for a silent bar.", False),
    col("n_notes", IntegerType(), "Notes in the sketch.", False),
]

SKETCHES = TableSpec(
    WAREHOUSE_SKETCHES,
    StructType([
        col("run_date", DateType(), "Logical date of the nightly run.", False),
        col("sketch_id", StringType(), "Stable id: hash of model version, style, key, tempo bucket and seed; "
            "unique within a run date. warehouse.inspiration_packs refers to it.", False),
        *SKETCH_FACTS,
        col("in_scale", DoubleType(), "Check: share of notes in the key's scale.", False),
        col("longest_shared_intervals", IntegerType(),
            "Check: longest run of melodic intervals shared with a training piece (originality).", False),
        col("midi", BinaryType(), "The Standard MIDI File.", False),
        col("model_name", StringType(), "MLflow registered music model.", False),
        col("model_version", IntegerType(), "Its version (the champion at generation time).", False),
        col("mlflow_run_id", StringType(), RUN_COLS_DOC, False),
    ]),
    ("run_date",),
    "Each distinct sketch of a nightly run once (the night's pools: every sketch that passed the checks), with "
    "its MIDI bytes; packs refer to sketches by id, so a sketch shared by a million listeners is stored once.",
)

# Nested fields are nullable in the schema because Spark reads every Parquet field as nullable;
# generate always sets them. A pack names its sketches (and the facts a query of packs alone
# wants); the MIDI bytes, chords and checks are in warehouse.sketches. Tables written before the
# split keep their older, wider struct: Delta fills the fields no longer written with null.
SKETCH = StructType([
    StructField("sketch_id", StringType()),
    StructField("style", StringType()),
    StructField("key", StringType()),
    StructField("tempo_bucket", StringType()),
])
SEED_ITEM = StructType([StructField("item_id", StringType()), StructField("name", StringType())])

INSPIRATION_PACKS = TableSpec(
    WAREHOUSE_INSPIRATION_PACKS,
    StructType([
        col("run_date", DateType(), "Logical date of the nightly run.", False),
        col("user_id", StringType(), "Listener id.", False),
        col("pack_id", StringType(), "Stable id: hash of user, run date and model version.", False),
        col("styles", ArrayType(StringType()), "The user's dominant styles (README: tags to styles), strongest first.", False),
        col("sketches", ArrayType(SKETCH),
            "2-4 generated sketches: id, style, key, tempo bucket; join warehouse.sketches on (run_date, "
            "sketch_id) for the MIDI, chords, tempo, seed and checks.", False),
        col("seed_items", ArrayType(SEED_ITEM), "The user's top recommendations that motivated the pack.", False),
        col("model_name", StringType(), "MLflow registered music model.", False),
        col("model_version", IntegerType(), "Its version (the champion at generation time).", False),
        col("data_versions", MapType(StringType(), LongType()),
            "Delta versions read: gold.music_sequences, gold.user_profiles, warehouse.recommendations.", False),
        col("mlflow_run_id", StringType(), RUN_COLS_DOC, False),
    ]),
    ("run_date",),
    "One inspiration pack per user per nightly run: generated musical sketches tied to their taste.",
)

ERASURE_LOG = TableSpec(
    OPS_ERASURE_LOG,
    StructType([
        col("erased_at", TimestampType(), "When `encore forget` removed the listener (UTC).", False),
        col("user_hash", StringType(), "SHA-256 (hex) of the salt and the listener id: the raw id is never stored. "
            "Hash an id with the same salt to find its row (docs/privacy.md).", False),
        col("salt_id", StringType(), "The first 12 hex digits of the salt's own SHA-256: which salt made user_hash.",
            False),
        col("rows_removed", MapType(StringType(), LongType()), "Rows deleted per table, e.g. {'silver.plays': 412}.",
            False),
        col("exports_republished", ArrayType(StringType()),
            "Run dates whose published export held the listener and was published again without them.", False),
        col("exports_withdrawn", ArrayType(StringType()),
            "Run dates whose export held the listener and could not be published again (the warehouse no longer "
            "has the date): the folder was deleted.", False),
        col("requested_by", StringType(), "The operating-system user who ran `encore forget`.", False),
    ]),
    (),
    "One row per listener erased on request (`encore forget`): what was removed, never who.",
)

TABLES: dict[str, TableSpec] = {t.name: t for t in [
    PLAYS_RAW, CATALOG_RAW, PLAY_COUNTS_RAW, REJECTED_FILES, PLAYS, QUARANTINE, PLAY_COUNTS, CATALOG,
    INTERACTIONS, ITEMS, USER_PROFILES, MUSIC_SEQUENCES, MUSIC_QUARANTINE, RECOMMENDATIONS, SKETCHES,
    INSPIRATION_PACKS, ERASURE_LOG,
]}
