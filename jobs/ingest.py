"""Ingest: raw files into the append-only bronze tables, each file exactly once.

Sources (``encore ingest --source``):
  * ``landing`` (default): ``landing/plays/date=D/*`` -> bronze.plays_raw and
    ``landing/catalog/date=D/*`` -> bronze.catalog_raw, lines kept verbatim;
  * ``lastfm1k``: Last.fm-1K TSV (user, ISO time, artist MBID, artist, track MBID, track; no
    header, MBIDs may be empty) turned into play-event JSON lines with a content-derived event id;
    a line without six fields is kept verbatim for clean to quarantine;
  * ``hetrec``: HetRec Last.fm-2K as-is: ``user_artists.dat`` play counts -> bronze.play_counts_raw
    (counts stay counts; no fake events), artists + tags -> bronze.catalog_raw.
A file already in bronze (same path) is skipped, so re-ingesting adds nothing.
"""
from __future__ import annotations

import datetime as dt
import logging
import re
from pathlib import Path

from pyspark.sql import functions as F

from encore.sources import hetrec
from encore.errors import EncoreError
from encore.lakehouse import Lakehouse
from schemas.table_names import BRONZE_CATALOG_RAW, BRONZE_PLAYS_RAW, BRONZE_PLAY_COUNTS_RAW

log = logging.getLogger(__name__)

DATE_DIR = re.compile(r"^date=(\d{4}-\d{2}-\d{2})$")


def _now():
    return F.lit(dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)).cast("timestamp")


def _data_files(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.rglob("*")
                  if p.is_file() and not p.name.startswith((".", "_")) and ".tmp" not in p.parent.name)


def _landing_dates(root: Path, dates: list[dt.date] | None) -> dict[dt.date, Path]:
    found = {}
    if root.is_dir():
        for child in root.iterdir():
            match = DATE_DIR.match(child.name)
            if match and child.is_dir():
                found[dt.date.fromisoformat(match.group(1))] = child
    if dates is not None:
        missing = [d for d in dates if d not in found]
        if missing:
            raise EncoreError(f"no landing data for {', '.join(d.isoformat() for d in missing)} under {root}: "
                              "run `encore generate-logs` or deliver files to date=YYYY-MM-DD folders")
        found = {d: found[d] for d in dates}
    return dict(sorted(found.items()))


def _uri(path: str) -> str:
    """A local path as Spark records it in ``_metadata.file_path`` (URIs pass through)."""
    return "file:" + path if path.startswith("/") else path


def _new_files(lake: Lakehouse, table: str, files: list[str]) -> list[str]:
    if not files or not lake.exists(table):
        return files
    uris = {f: _uri(f) for f in files}
    seen = {r[0] for r in lake.read(table).where(F.col("source_file").isin(list(uris.values())))
            .select("source_file").distinct().collect()}
    return [f for f, uri in uris.items() if uri not in seen]


def _read_lines(lake: Lakehouse, files: list[str]):
    return (lake.spark.read.option("lineSep", "\n").text(files)
            .select(F.col("value"), F.col("_metadata.file_path").alias("source_file")))


def ingest_landing(lake: Lakehouse, dates: list[dt.date] | None = None) -> dict[str, int]:
    """Landing folders -> bronze; returns new rows per table."""
    landing = Path(lake.config.path("landing"))
    added = {BRONZE_PLAYS_RAW: 0, BRONZE_CATALOG_RAW: 0}
    plays = _landing_dates(landing / "plays", dates)
    if not plays:
        raise EncoreError(f"no landing data under {landing / 'plays'}: run `encore generate-logs` first")
    catalog = _landing_dates(landing / "catalog", None)
    for table, folders in ((BRONZE_PLAYS_RAW, plays),
                           (BRONZE_CATALOG_RAW, {d: p for d, p in catalog.items() if d in plays})):
        files = {f: day for day, folder in folders.items() for f in _data_files(folder)}
        new = set(_new_files(lake, table, list(files)))
        log.info("%s: %d files found, %d new", table, len(files), len(new))
        if not new:
            continue
        # One read per landing date, its date a literal (no per-row parsing of the file path).
        parts = [_read_lines(lake, [f for f in files if f in new and files[f] == day]).withColumn("landing_date", F.lit(day))
                 for day in sorted({files[f] for f in new})]
        df = parts[0]
        for part in parts[1:]:
            df = df.unionByName(part)
        added[table] = lake.append(df.withColumn("source_format", F.lit("jsonl")).withColumn("ingested_at", _now()), table)
    return added


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
    if _new_files(lake, BRONZE_CATALOG_RAW, [artists_file]):
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
                                 F.lit(_uri(artists_file)).alias("source_file"), _now().alias("ingested_at"))
        added[BRONZE_CATALOG_RAW] = lake.append(catalog, BRONZE_CATALOG_RAW)
    return added
