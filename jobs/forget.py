"""Erasure on request, ``encore forget``: a listener's rows out of every table and every published
export, and an audit row in ``ops.erasure_log`` that names what was removed but never the id.

What holds a listener, from the table registry: every table with a ``user_id`` column, plus the raw
lines of ``bronze.plays_raw`` and of ``silver.plays_quarantine`` (read by the id the line carries, so a
line clean could not parse is found too). Each table loses its rows in one Delta MERGE against the
ids: a MERGE keeps the ids out of the Delta log (a ``DELETE ... WHERE user_id IN ('…')`` writes its
predicate, the id, into the commit). Published exports that held a listener are published again from
the warehouse; one whose date the warehouse no longer has is withdrawn (its folder deleted).

After ``forget`` no version of a table that can still be read holds the listener: the erasure's
version gets a checkpoint and the log entries before it are deleted (their file statistics may
name the listener; Delta would keep them for 30 days), so time travel ends at the erasure. The files
the erasure replaced stay until ``encore maintain`` vacuums them, after its window (a champion's
pinned versions do not hold an erasure back). docs/privacy.md has the timeline.
"""
from __future__ import annotations

import datetime as dt
import getpass
import hashlib
import logging
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

from encore.errors import EncoreError
from encore.lakehouse import retry_conflicts
from schemas.table_names import BRONZE_PLAYS_RAW, OPS_ERASURE_LOG, SILVER_PLAYS_QUARANTINE
from schemas.tables import TABLES

log = logging.getLogger(__name__)
SALT_FILE = "erasure-salt"
# The id a raw line carries, however it came: a JSON play event (also one clean could not parse),
# or a Last.fm-1K line ingest kept as TSV because it did not have six fields.
_USER_IN_JSON = r'"user_id"\s*:\s*"([^"\\]*)"'
RAW_LINE_TABLES = (BRONZE_PLAYS_RAW, SILVER_PLAYS_QUARANTINE)


@dataclass
class ForgetResult:
    found: dict[str, dict[str, int]]             # id -> table -> rows removed (ids with any row)
    unknown: list[str]                           # ids no table held
    exports_holding: list[str]                   # run dates whose published export held one of the ids
    exports_republished: list[str]
    exports_withdrawn: list[str]
    seconds: float
    dry_run: bool
    tables: list[str] = field(default_factory=list)   # every table searched


def read_ids(users: list[str] | None, users_file: str | None) -> list[str]:
    """The ids to forget, in order, without repeats: ``--user`` values, then a file's lines (blank
    lines and ``#`` comments skipped)."""
    ids = [u.strip() for u in users or []]
    if users_file:
        try:
            text = Path(users_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise EncoreError(f"--users-file {users_file} cannot be read ({exc.__class__.__name__}: {exc}): pass a "
                              "UTF-8 text file with one listener id per line") from None
        ids += [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if any(not u for u in ids):
        raise EncoreError("an empty listener id: pass --user ID with the id as the tables hold it")
    if not ids:
        raise EncoreError("no listener to forget: pass --user ID (repeatable) or --users-file FILE")
    return list(dict.fromkeys(ids))


def user_tables() -> list[str]:
    """Every registered table that holds listener ids (``ops.erasure_log`` holds only hashes)."""
    return [name for name, spec in TABLES.items()
            if name != OPS_ERASURE_LOG and ("user_id" in spec.schema.fieldNames() or name in RAW_LINE_TABLES)]


def _listener(df, name: str):
    """The column a table's rows are matched on: its user_id, else the id its raw line carries."""
    from pyspark.sql import functions as F
    if name not in RAW_LINE_TABLES:
        return F.col("user_id")
    value = F.col("value")
    from_line = F.coalesce(
        F.nullif(F.trim(F.get_json_object(value, "$.user_id")), F.lit("")),
        F.nullif(F.trim(F.regexp_extract(value, _USER_IN_JSON, 1)), F.lit("")),
        F.when(~value.startswith("{") & value.contains("\t"),
               F.nullif(F.trim(F.split(value, "\t").getItem(0)), F.lit(""))))
    return F.coalesce(F.col("user_id"), from_line) if "user_id" in df.columns else from_line


def salt(config) -> bytes:
    """The erasure log's salt, made on first use (32 random bytes, hex, mode 0600)."""
    path = Path(config.path("secrets")) / SALT_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as out:
            out.write(secrets.token_hex(32) + "\n")
        log.info("forget: made the erasure salt %s (keep it: hashes in %s are checked with it)", path, OPS_ERASURE_LOG)
    return path.read_bytes().strip()


def user_hash(salt_bytes: bytes, user_id: str) -> str:
    return hashlib.sha256(salt_bytes + b"\x00" + user_id.encode("utf-8")).hexdigest()


def forget(lake, user_ids: list[str], dry_run: bool = False) -> ForgetResult:
    """Remove ``user_ids`` from every table and published export; one audit row per id found."""
    from delta.tables import DeltaTable
    from pyspark.sql import functions as F
    from pyspark.sql.types import StringType, StructField, StructType

    started = time.perf_counter()
    spark = lake.spark
    ids = spark.createDataFrame([(u,) for u in user_ids], StructType([StructField("_forget_id", StringType(), False)]))
    ids = F.broadcast(ids.cache())
    tables = [name for name in user_tables() if lake.exists(name)]
    found: dict[str, dict[str, int]] = {}
    matches: dict[str, int] = {}
    for name in tables:
        table = lake.read(name)
        counts = (table.select(_listener(table, name).alias("_forget_id")).join(ids, "_forget_id")
                  .groupBy("_forget_id").count().collect())
        for row in counts:
            found.setdefault(row["_forget_id"], {})[name] = int(row["count"])
        matches[name] = sum(int(row["count"]) for row in counts)
        log.info("forget: %s holds %d rows of the listeners", name, matches[name])

    exports = _exports_holding(lake.config, user_ids)
    republished: list[str] = []
    withdrawn: list[str] = []
    if not dry_run and found:
        for name in tables:
            if not matches[name]:
                continue
            target = DeltaTable.forPath(spark, lake.path(name))
            key = _listener(lake.read(name), name)
            # The condition names the source's column, never a literal id: the commit keeps no id.
            def merge(target=target, key=key):
                return target.alias("t").merge(ids.alias("s"), key == F.col("s._forget_id")).whenMatchedDelete().execute()
            deleted = retry_conflicts(merge).collect()[0]["num_deleted_rows"]
            # The log before the erasure goes now: its file statistics may name the listener.
            erased = lake.checkpoint(name)
            entries = lake.truncate_history(name, erased)
            log.info("forget: %s: %d rows deleted; %d log files before version %d deleted", name, deleted, entries,
                     erased)
        republished, withdrawn = _republish(lake, exports)
        _audit(lake, found, republished, withdrawn)
    ids.unpersist()
    return ForgetResult(found, [u for u in user_ids if u not in found], exports, republished, withdrawn,
                        time.perf_counter() - started, dry_run, tables)


def _exports_holding(config, user_ids: list[str]) -> list[str]:
    """Run dates of published exports whose recommendations or packs name one of the ids."""
    import pyarrow.dataset as ds
    from encore.export_store import ExportStore
    store = ExportStore(config)
    dates = []
    for day in store.run_dates():
        run = store.published(day)
        if run is None:
            continue
        files = store.files(run.folder)
        for dataset in ("recommendations", "packs"):
            parts = sorted(f"{run.folder}/{p}" for p in files if p.startswith(f"{dataset}/") and p.endswith(".parquet"))
            if parts and ds.dataset(parts, filesystem=store.fs).count_rows(filter=ds.field("user_id").isin(user_ids)):
                dates.append(day)
                break
    return dates


def _republish(lake, dates: list[str]) -> tuple[list[str], list[str]]:
    """Export each date again from the (now erased) warehouse; withdraw a date it cannot export."""
    from encore.export_store import ExportStore
    from jobs.export import export_run
    republished, withdrawn = [], []
    for text in dates:
        day = dt.date.fromisoformat(text)
        try:
            export_run(lake, day)
            republished.append(text)
        except EncoreError as exc:
            ExportStore(lake.config).withdraw(day)
            withdrawn.append(text)
            log.warning("forget: the export of %s held a forgotten listener and could not be published again (%s): "
                        "withdrawn", text, exc)
    return republished, withdrawn


def _audit(lake, found: dict[str, dict[str, int]], republished: list[str], withdrawn: list[str]) -> None:
    salt_bytes = salt(lake.config)
    salt_id = hashlib.sha256(salt_bytes).hexdigest()[:12]
    now = dt.datetime.now(dt.timezone.utc)
    try:
        who = getpass.getuser()
    except Exception:   # no name for this uid (a container): the uid itself
        who = str(os.getuid())
    rows = [(now, user_hash(salt_bytes, user_id), salt_id, removed, republished, withdrawn, who)
            for user_id, removed in found.items()]
    spec = TABLES[OPS_ERASURE_LOG]
    lake.append(lake.spark.createDataFrame(rows, spec.schema), OPS_ERASURE_LOG)
