"""Ingest: raw files into the append-only bronze tables, each file exactly once.

Sources (``encore ingest --source``):
  * ``landing`` (default): ``landing/plays/date=D/*`` -> bronze.plays_raw and
    ``landing/catalog/date=D/*`` -> bronze.catalog_raw, lines kept verbatim;
  * ``lastfm1k``: Last.fm-1K TSV (user, ISO time, artist MBID, artist, track MBID, track; no
    header, MBIDs may be empty) turned into play-event JSON lines with a content-derived event id;
    a line without six fields is kept verbatim for clean to quarantine;
  * ``hetrec``: HetRec Last.fm-2K as-is: ``user_artists.dat`` play counts -> bronze.play_counts_raw
    (counts stay counts; no fake events), artists + tags -> bronze.catalog_raw.
Each file is ingested exactly once, wherever the home or the landing root is mounted: a file's
identity is its path under the landing root (``plays/date=D/name``) and the SHA-256 of its content,
stored with every bronze row it produced (``source_key``, ``source_sha256``), in the same commit.
A landing file that cannot be read (corrupt or truncated gzip, not text), one whose content changed
under a name already ingested, or one whose content was already ingested under another name goes
to ``bronze.rejected_files`` with the reason; the date's other files are ingested, and the
command ends with one line naming what was not taken. A good copy delivered again is picked up.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from isal import igzip, isal_zlib
from pyspark.sql import functions as F

from encore.sources import hetrec
from encore.errors import EncoreError
from encore.lakehouse import Lakehouse
from schemas.table_names import BRONZE_CATALOG_RAW, BRONZE_PLAYS_RAW, BRONZE_PLAY_COUNTS_RAW, BRONZE_REJECTED_FILES

log = logging.getLogger(__name__)

DATE_DIR = re.compile(r"^date=(\d{4}-\d{2}-\d{2})$")


def _now():
    return F.lit(dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)).cast("timestamp")


def _data_files(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.rglob("*")
                  if p.is_file() and not p.name.startswith((".", "_")) and ".tmp" not in p.parent.name)


def _landing_dates(root: Path, dates: list[dt.date] | None, missing_ok: bool = False) -> dict[dt.date, Path]:
    found = {}
    if root.is_dir():
        for child in root.iterdir():
            match = DATE_DIR.match(child.name)
            if match and child.is_dir():
                found[dt.date.fromisoformat(match.group(1))] = child
    if dates is not None:
        missing = [d for d in dates if d not in found]
        if missing and missing_ok:
            log.info("no landing data for %s: skipped", ", ".join(d.isoformat() for d in missing))
        elif missing:
            raise EncoreError(f"no landing data for {', '.join(d.isoformat() for d in missing)} under {root}: "
                              "run `encore generate-logs` or deliver files to date=YYYY-MM-DD folders")
        found = {d: found[d] for d in dates if d in found}
    return dict(sorted(found.items()))


def _uri(path: str) -> str:
    """A local path as Spark records it in ``_metadata.file_path`` (URIs pass through)."""
    return "file:" + path if path.startswith("/") else path


CHUNK = 1 << 20


@dataclass(frozen=True)
class FileFacts:
    """What ingest knows of a delivered file before Spark reads it."""
    path: str
    key: str                 # identity with sha256: the path under the landing root, or the file name
    size: int
    sha256: str | None       # of the content as read (gzip decompressed); of the raw bytes when unreadable
    error: str | None        # why it cannot be read, or None


def _raw_sha256(path: Path) -> str | None:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as raw:
            for block in iter(lambda: raw.read(CHUNK), b""):
                digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()


def inspect(path: str, key: str) -> FileFacts:
    """Size, content checksum and readability of one file. The checksum is of the content as read
    (a gzip file decompressed), so a client that compresses the same lines again (a new gzip
    timestamp) delivers the same file. A gzip file must decompress to its end: a truncated or
    corrupt one would stop Spark's whole read. No file may be binary (NUL bytes).

    Decompression is ISA-L's (python-isal, a drop-in for the standard gzip module): it reads the
    same files 2.5x faster than zlib, and this pass reads every byte Spark reads after it."""
    p = Path(path)
    try:
        size = p.stat().st_size
        with open(p, "rb") as raw:
            magic = raw.read(2)
    except OSError as exc:
        return FileFacts(path, key, 0, None, f"cannot be read ({exc.strerror or exc})")
    gzipped = p.name.endswith(".gz")
    if gzipped and size and magic != b"\x1f\x8b":
        return FileFacts(path, key, size, _raw_sha256(p), "not gzip (named .gz, but its content is not gzip)")
    digest = hashlib.sha256()
    try:
        with (igzip.open if gzipped else open)(p, "rb") as content:
            first = content.read(CHUNK)
            if b"\x00" in first:
                return FileFacts(path, key, size, _raw_sha256(p), "not text (NUL bytes in its content)")
            digest.update(first)
            for block in iter(lambda: content.read(CHUNK), b""):
                digest.update(block)
    except (OSError, EOFError, isal_zlib.error) as exc:   # BadGzipFile is an OSError
        kind = "truncated gzip" if isinstance(exc, EOFError) else "corrupt gzip" if gzipped else "unreadable"
        return FileFacts(path, key, size, _raw_sha256(p), f"{kind} ({str(exc) or exc.__class__.__name__})")
    return FileFacts(path, key, size, digest.hexdigest(), None)


def inspect_all(files: dict[str, str]) -> list[FileFacts]:
    """``inspect`` for {path: key}, two files at a time (hashing and gzip release the GIL)."""
    from encore.progress import tracked
    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(tracked(pool.map(lambda item: inspect(*item), sorted(files.items())),
                            "ingest: checking landing files", len(files)))


def key_of(path: str) -> str:
    """A landing file's identity path: from its ``plays/`` or ``catalog/`` folder on (URL-decoded)."""
    text = urllib.parse.unquote(path)
    match = re.search(r"(?:^|/)((?:plays|catalog)/date=\d{4}-\d{2}-\d{2}/.+)$", text)
    return match.group(1) if match else Path(text).name


def _known(lake: Lakehouse, table: str, dates: list[dt.date] | None) -> dict[str, str | None]:
    """{identity key: sha256 (None for rows of an older release)} of the files already in ``table``."""
    if not lake.exists(table):
        return {}
    frame = lake.read(table)
    if dates is not None:
        frame = frame.where(F.col("landing_date").isin(dates))
    has_key = "source_key" in frame.columns
    columns = ["source_file"] + (["source_key", "source_sha256"] if has_key else [])
    known: dict[str, str | None] = {}
    for row in frame.select(*columns).distinct().collect():
        key = row["source_key"] if has_key and row["source_key"] else key_of(row["source_file"])
        known[key] = row["source_sha256"] if has_key else None
    return known


GLOB_CHARACTERS = re.compile(r"([\\\[\]{}*?])")


def _read_lines(lake: Lakehouse, files: list[FileFacts], days: dict[str, dt.date] | None = None):
    """The lines of ``files`` in one read, each row with its file's identity (``source_key``,
    ``source_sha256``) and, given ``days`` ({path: date}), its ``landing_date``.

    Spark names each row's file in ``_metadata.file_path`` as a URI (``file:`` + the path with
    space, %, ?, #, [ and ] escaped); decoded, it is looked up in a small table of the files' facts.
    A row whose file is not found there fails the read rather than lose its identity. Paths are
    passed with glob characters escaped: Spark globs every path it is given, and a file named
    ``export[1].jsonl`` would otherwise not be found."""
    facts = lake.spark.createDataFrame(
        [(_uri(f.path), f.key, f.sha256, days[f.path] if days else None) for f in files],
        "decoded_file string, source_key string, source_sha256 string, landing_date date")
    decoded = F.url_decode(F.replace(F.col("source_file"), F.lit("+"), F.lit("%2B")))   # '+' is not a space here
    lines = (lake.spark.read.option("lineSep", "\n").text([GLOB_CHARACTERS.sub(r"\\\1", f.path) for f in files])
             .select(F.col("value"), F.col("_metadata.file_path").alias("source_file"))
             .withColumn("decoded_file", decoded))
    joined = lines.join(F.broadcast(facts), "decoded_file", "left")
    unknown = F.raise_error(F.concat(F.lit("ingest: a line's file was not among the files inspected: "),
                                     F.col("source_file")))
    joined = joined.withColumn("source_key", F.when(F.col("source_key").isNull(), unknown)
                               .otherwise(F.col("source_key")))
    return joined.select("value", "source_file", "source_key", "source_sha256",
                         *(["landing_date"] if days else []))


def _reject(lake: Lakehouse, table: str, rejected: list[tuple[FileFacts, dt.date | None, str, str]]) -> None:
    """Append the files not taken to bronze.rejected_files, each (facts, landing date, status, error) once."""
    seen = set()
    if lake.exists(BRONZE_REJECTED_FILES):
        seen = {(r["source_key"], r["sha256"], r["status"]) for r in lake.read(BRONZE_REJECTED_FILES)
                .where(F.col("table_name") == table).select("source_key", "sha256", "status").collect()}
    rows = [(f, day, status, error) for f, day, status, error in rejected if (f.key, f.sha256, status) not in seen]
    if not rows:
        return
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    frame = lake.spark.createDataFrame(
        [(now, table, day, f.key, _uri(f.path), f.size, f.sha256, status, error) for f, day, status, error in rows],
        "recorded_at timestamp, table_name string, landing_date date, source_key string, source_file string, "
        "size long, sha256 string, status string, error string")
    lake.append(frame, BRONZE_REJECTED_FILES)


EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def _sort_files(table: str, facts: list[FileFacts], days: dict[str, dt.date], known: dict[str, str | None]):
    """(files to ingest, files not taken with their status and reason) against what bronze holds."""
    by_sha = {sha: key for key, sha in known.items() if sha}
    take, refuse = [], []
    for f in facts:
        day = days[f.path]
        if f.error:
            refuse.append((f, day, "unreadable", f.error))
        elif f.key in known and known[f.key] in (f.sha256, None):
            continue                                   # ingested before (None: by an older release)
        elif f.key in known:
            refuse.append((f, day, "changed", f"its content changed since it was ingested (sha256 {known[f.key][:12]}…, "
                                              f"now {f.sha256[:12]}…): deliver changes under a new name"))
        elif f.sha256 in by_sha and f.sha256 != EMPTY_SHA256:   # empty files hold nothing to take twice
            log.warning("%s: %s has the same content as %s, already ingested: not taken twice", table, f.key,
                        by_sha[f.sha256])
            refuse.append((f, day, "duplicate", f"same content as {by_sha[f.sha256]}, already ingested"))
        else:
            by_sha[f.sha256] = f.key
            take.append(f)
    return take, refuse


def ingest_landing(lake: Lakehouse, dates: list[dt.date] | None = None, missing_ok: bool = False) -> dict[str, int]:
    """Landing folders -> bronze; returns new rows per table. ``missing_ok`` (a backfill over a range)
    skips dates that have no landing folder instead of refusing the whole range."""
    landing = Path(lake.config.path("landing"))
    added = {BRONZE_PLAYS_RAW: 0, BRONZE_CATALOG_RAW: 0}
    plays = _landing_dates(landing / "plays", dates, missing_ok)
    if not plays:
        raise EncoreError(f"no landing data under {landing / 'plays'}: run `encore generate-logs` first")
    catalog = _landing_dates(landing / "catalog", None)
    problems = []
    for table, folders in ((BRONZE_PLAYS_RAW, plays),
                           (BRONZE_CATALOG_RAW, {d: p for d, p in catalog.items() if d in plays})):
        days = {f: day for day, folder in folders.items() for f in _data_files(folder)}
        facts = inspect_all({f: Path(f).relative_to(landing).as_posix() for f in days})
        take, refuse = _sort_files(table, facts, days, _known(lake, table, sorted(folders)))
        log.info("%s: %d files found, %d new, %d not taken", table, len(facts), len(take), len(refuse))
        if refuse:
            _reject(lake, table, refuse)
            problems += [(f, status, error) for f, _, status, error in refuse if status != "duplicate"]
        if not take:
            continue
        df = _read_lines(lake, take, days)
        added[table] = lake.append(df.withColumn("source_format", F.lit("jsonl")).withColumn("ingested_at", _now()), table)
    if problems:
        named = "; ".join(f"{f.key} ({status}: {error})" for f, status, error in problems)
        raise EncoreError(f"ingest: {len(problems)} landing file{'s' if len(problems) > 1 else ''} not ingested: "
                          f"{named}. The other files were ingested (rows added: "
                          f"{', '.join(f'{k} +{v}' for k, v in added.items())}). Deliver a good copy and rerun; "
                          "`encore sql \"SELECT * FROM bronze.rejected_files\"` lists them")
    return added


def _new_files(lake: Lakehouse, table: str, files: list[str]) -> list[FileFacts]:
    """Files of another source (Last.fm-1K, HetRec) not yet in ``table``: by content, wherever they lie."""
    facts = inspect_all({f: Path(f).name for f in files})
    bad = [f for f in facts if f.error]
    if bad:
        raise EncoreError(f"ingest: {bad[0].path} {bad[0].error}: deliver a readable copy")
    if not lake.exists(table):
        return facts
    frame = lake.read(table)
    shas = set()
    if "source_sha256" in frame.columns:
        shas = {r[0] for r in frame.where(F.col("source_sha256").isin([f.sha256 for f in facts]))
                .select("source_sha256").distinct().collect()}
    legacy = {r[0] for r in frame.where(F.col("source_file").isin([_uri(f.path) for f in facts]))
              .select("source_file").distinct().collect()}
    return [f for f in facts if f.sha256 not in shas and _uri(f.path) not in legacy]


def ingest_lastfm1k(lake: Lakehouse, path: str, fallback_date: dt.date | None = None) -> int:
    """Last.fm-1K TSV file or folder -> bronze.plays_raw, landing date = the play's UTC date."""
    source = Path(path)
    if not source.exists():
        raise EncoreError(f"--path {path} does not exist: pass a Last.fm-1K .tsv file or a folder of them")
    files = [str(source)] if source.is_file() else _data_files(source)
    new = _new_files(lake, BRONZE_PLAYS_RAW, files)
    log.info("lastfm1k: %d files, %d new", len(files), len(new))
    if not new:
        return 0
    fallback = fallback_date or dt.datetime.now(dt.timezone.utc).date()
    parts = F.split(F.col("value"), "\t", -1)
    cell = lambda i: F.nullif(F.trim(parts.getItem(i)), F.lit(""))  # noqa: E731
    well_formed = F.size(parts) == 6
    event = F.to_json(F.struct(
        F.substring(F.sha2(F.col("value"), 256), 1, 32).alias("event_id"),
        cell(0).alias("user_id"), cell(2).alias("artist_id"), cell(3).alias("artist_name"),
        cell(4).alias("track_id"), cell(5).alias("track_name"), cell(1).alias("ts")))
    event_date = F.to_date(F.try_to_timestamp(cell(1)))
    df = (_read_lines(lake, new)
          .withColumn("landing_date", F.when(well_formed, F.coalesce(event_date, F.lit(fallback))).otherwise(F.lit(fallback)))
          .withColumn("value", F.when(well_formed, event).otherwise(F.col("value")))
          .withColumn("source_format", F.lit("lastfm1k"))
          .withColumn("ingested_at", _now()))
    return lake.append(df, BRONZE_PLAYS_RAW)


def ingest_hetrec(lake: Lakehouse, path: str, snapshot_date: dt.date | None = None) -> dict[str, int]:
    """HetRec Last.fm-2K folder as-is: counts -> bronze.play_counts_raw, artists+tags -> bronze.catalog_raw."""
    root = hetrec.check_dir(path)
    day = snapshot_date or dt.datetime.now(dt.timezone.utc).date()
    spark = lake.spark
    added = {BRONZE_PLAY_COUNTS_RAW: 0, BRONZE_CATALOG_RAW: 0}

    def tsv(name: str, encoding: str = "UTF-8"):
        return (spark.read.option("sep", "\t").option("header", True).option("encoding", encoding)
                .option("quote", "").csv(str(root / name)))

    counts_file = str(root / "user_artists.dat")
    if _new_files(lake, BRONZE_PLAY_COUNTS_RAW, [counts_file]):
        counts = (tsv("user_artists.dat").select(
            F.lit(day).alias("snapshot_date"), F.lit("hetrec").alias("source"),
            F.col("userID").alias("user_id"), F.col("artistID").alias("item_id"),
            F.col("weight").alias("play_count"), F.lit(_uri(counts_file)).alias("source_file"),
            _now().alias("ingested_at")))
        added[BRONZE_PLAY_COUNTS_RAW] = lake.append(counts, BRONZE_PLAY_COUNTS_RAW)

    artists_file = str(root / "artists.dat")
    artists = _new_files(lake, BRONZE_CATALOG_RAW, [artists_file])
    if artists:
        tags = tsv("tags.dat", "ISO-8859-1").select(F.col("tagID"), F.lower(F.trim("tagValue")).alias("tag"))
        year = F.col("year").try_cast("int")
        when_tagged = F.when(year.between(hetrec.FIRST_VALID_YEAR, hetrec.LAST_VALID_YEAR), F.try_to_date(
            F.format_string("%s-%s-%s", F.col("year"), F.lpad("month", 2, "0"), F.lpad("day", 2, "0")), "yyyy-MM-dd"))
        tagged = (tsv("user_taggedartists.dat").join(tags, "tagID")
                  .groupBy("artistID", "tag")
                  .agg(F.count(F.lit(1)).alias("count"), F.min(when_tagged).alias("first_tagged")))
        per_artist = tagged.groupBy("artistID").agg(F.sort_array(F.collect_list(F.struct(
            (-F.col("count")).alias("_order"), "tag", "count", F.col("first_tagged").cast("string").alias("first_tagged")))).alias("t"))
        entries = (tsv("artists.dat").select(F.col("id").alias("artistID"), "name")
                   .join(per_artist, "artistID", "left")
                   .select(F.to_json(F.struct(
                       F.col("artistID").alias("artist_id"), "name",
                       F.transform(F.coalesce("t", F.array()), lambda x: x.dropFields("_order")).alias("tags")))
                       .alias("value")))
        catalog = entries.select(F.lit(day).alias("landing_date"), "value", F.lit("hetrec").alias("source_format"),
                                 F.lit(_uri(artists_file)).alias("source_file"), _now().alias("ingested_at"),
                                 F.lit(artists[0].key).alias("source_key"), F.lit(artists[0].sha256).alias("source_sha256"))
        added[BRONZE_CATALOG_RAW] = lake.append(catalog, BRONZE_CATALOG_RAW)
    return added
