"""Lakehouse upkeep, ``encore maintain`` (weekly, the last task of encore_training): retention of old
dates, compaction with Z-order, and VACUUM that keeps the champions' training data readable.

Per table, in this order:

1. **Retention.** A table listed in ``maintain.keep`` keeps its newest N dates (partition values);
   older ones are deleted (a Delta DELETE: readable by time travel until step 3 removes the files).
   The newest date a table holds is the reference, not today, so a lakehouse that has been idle
   keeps its data.
2. **Compaction.** ``OPTIMIZE`` of the partitions of the newest ``maintain.optimize_days`` dates
   (what a week of nights wrote; older dates were compacted by earlier runs), Z-ordered by
   ``maintain.zorder``'s columns where listed (per-user queries then skip most files).
3. **VACUUM** with ``maintain.vacuum_retention_hours``, refused below Delta's safety minimum of
   168 hours unless forced (a shorter window can delete the files of a write still in flight).
4. **Log retention.** The Delta log entries before the newest checkpoint that every version
   committed in the last ``maintain.log_retention_hours`` (and every pinned version) can still be read
   from are deleted. Delta's own cleanup is meant to do this past ``delta.logRetentionDuration``, but
   Delta 4.4 skips entries before an OPTIMIZE or VACUUM commit, so on a weekly-maintained table the
   log (commits, checksums, checkpoints) grew without end. Refused below 168 hours unless forced, as
   VACUUM is: a night still in flight checks its commit against the entries since it started.

The data the current champions were trained on stays readable (their MLflow runs'
``source.<table>.version`` params pin a version). A gold snapshot read takes one ``as_of_date``
(the run's ``as_of_date`` tag, else the newest at that version): retention and compaction leave
that date alone, so its files stay in the current version and VACUUM, with any window, keeps them.
Storage then stays flat however old the champion is. Where a pinned version's files have left the
current version anyway (a rewritten unpartitioned table, a rerun date), the VACUUM window
stretches back to the commit that removed them, and the note says so. Lineage that is lost anyway
(the Delta log no longer reaches the version, or someone vacuumed by hand) is reported by model.

Running beside a night is safe: each commit goes through Delta's optimistic concurrency with the
lakehouse's retries (``encore.lakehouse.retry_conflicts``); the deletes and compactions touch other
partitions than a night writes, or retry after it; VACUUM's window is longer than any write.
Everything removed is logged and recorded in one MLflow run (``maintain.experiment``).
"""
from __future__ import annotations

import datetime as dt
import logging
import math
import time
from dataclasses import dataclass, field

from encore.errors import EncoreError
from encore.lakehouse import retry_conflicts
from schemas.table_names import SILVER_PLAYS
from schemas.tables import TABLES

log = logging.getLogger(__name__)
DELTA_SAFETY_HOURS = 168.0   # Delta's spark.databricks.delta.retentionDurationCheck minimum


@dataclass
class TableUpkeep:
    table: str
    dates_deleted: list[str] = field(default_factory=list)
    rows_deleted: int = 0
    files_compacted: int = 0
    files_written: int = 0
    files_vacuumed: int = 0
    retention_hours: float = 0.0
    log_entries_deleted: int = 0
    log_starts_at: int | None = None    # the oldest version still readable, where the log was cut
    files: int = 0
    bytes: int = 0
    note: str = ""


@dataclass
class MaintainResult:
    run_id: str | None
    tables: list[TableUpkeep]
    lineage: list[str]            # one line per champion: kept, or which pinned versions are lost
    seconds: float
    dry_run: bool


def check_settings(config, force: bool) -> float:
    """The VACUUM window, after refusing settings that would lose data a night still needs."""
    section = config.maintain
    hours = section.vacuum_retention_hours
    if hours < DELTA_SAFETY_HOURS and not force:
        raise EncoreError(f"maintain.vacuum_retention_hours is {hours:g}, below Delta's safety minimum of "
                          f"{DELTA_SAFETY_HOURS:g} hours: a shorter window can delete files a running night is still "
                          "writing; raise it, or pass --force if no night can run meanwhile")
    silver = section.keep.get(SILVER_PLAYS)
    needed = config.features.window_days + config.clean.dedupe_lookback_days + 1
    if silver is not None and silver < needed:
        raise EncoreError(f"maintain.keep.{SILVER_PLAYS} is {silver}, fewer dates than features need "
                          f"(features.window_days {config.features.window_days} + clean.dedupe_lookback_days "
                          f"{config.clean.dedupe_lookback_days} + 1 = {needed}): keep at least {needed}")
    if section.log_retention_hours < DELTA_SAFETY_HOURS and not force:
        raise EncoreError(f"maintain.log_retention_hours is {section.log_retention_hours:g}, below Delta's safety "
                          f"minimum of {DELTA_SAFETY_HOURS:g} hours: a night still running checks its commit against "
                          "the log entries since it started; raise it, or pass --force if no night can run meanwhile")
    return hours


@dataclass(frozen=True)
class Pin:
    """Data a champion was trained on: a table version, and the snapshot date it read (None: all of it)."""
    model: str                     # e.g. "encore-recommender v3"
    version: int
    as_of: dt.date | None = None

    def partition(self) -> tuple | None:
        return None if self.as_of is None else (SNAPSHOT_COLUMN, self.as_of)


SNAPSHOT_COLUMN = "as_of_date"   # gold's snapshot tables are partitioned by it; a training run reads one


def pinned_versions(config) -> dict[str, list[Pin]]:
    """table -> the data the current champions were trained on."""
    from encore import tracking
    pins: dict[str, list[Pin]] = {}
    for name in (config.recommender.model_name, config.music.model_name):
        champion = tracking.champion(config, name)
        if champion is None:
            continue
        run = tracking.client(config).get_run(champion.run_id)
        for key, value in run.data.params.items():
            if key.startswith("source.") and key.endswith(".version") and key[7:-8] in TABLES:
                table, version = key[7:-8], int(value)
                as_of = _snapshot_read(config, table, version, run.data.tags.get("as_of_date"))
                pins.setdefault(table, []).append(Pin(f"{name} v{champion.version}", version, as_of))
    return pins


def _snapshot_read(config, table: str, version: int, tagged: str | None) -> dt.date | None:
    """The as_of_date a training read of a snapshot table took: the run's tag, else (a run on "latest")
    the newest date at that version; None for other tables, or when the version can no longer be read."""
    import pyarrow.compute as pc
    from encore.delta_reader import data_files
    if TABLES[table].partition_by != (SNAPSHOT_COLUMN,):
        return None
    try:
        return dt.date.fromisoformat(tagged or "")
    except ValueError:
        pass
    try:
        actions = data_files(config, table, version)
    except EncoreError:
        return None
    return pc.max(actions[f"partition.{SNAPSHOT_COLUMN}"]).as_py() if actions.num_rows else None


def maintain(lake, force: bool = False, dry_run: bool = False) -> MaintainResult:
    """Retention, compaction and VACUUM of every table that exists (see the module docstring)."""
    import mlflow
    from encore import tracking

    config = lake.config
    hours = check_settings(config, force)
    started = time.perf_counter()
    pins = pinned_versions(config)
    results = []
    for name in TABLES:
        if not lake.exists(name):
            continue
        upkeep = TableUpkeep(name, retention_hours=hours)
        held = {pin.as_of for pin in pins.get(name, []) if pin.as_of is not None}
        _apply_retention(lake, upkeep, config.maintain.keep.get(name), dry_run, held)
        if not dry_run:
            _compact(lake, upkeep, config.maintain.optimize_days, config.maintain.zorder.get(name), held)
        upkeep.retention_hours = _window_for_pins(lake, name, hours, pins.get(name, []), upkeep)
        _vacuum(lake, upkeep, force or upkeep.retention_hours < DELTA_SAFETY_HOURS, dry_run)
        _trim_log(lake, upkeep, config.maintain.log_retention_hours, pins.get(name, []), dry_run)
        upkeep.files, upkeep.bytes = _current_size(lake, name)
        log.info("maintain %s: %s", name, _summary(upkeep, dry_run))
        results.append(upkeep)
    lineage = _check_lineage(lake, pins)
    for line in lineage:
        log.info("maintain: %s", line)
    seconds = time.perf_counter() - started
    run_id = None
    if not dry_run:
        tracking.experiment(config, config.maintain.experiment)
        with mlflow.start_run(run_name=f"maintain {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M}") as run:
            mlflow.set_tags({"job": "maintain", "forced": str(force)})
            mlflow.log_params({"vacuum_retention_hours": hours, "optimize_days": config.maintain.optimize_days,
                               "log_retention_hours": config.maintain.log_retention_hours})
            metrics = {"seconds": seconds}
            for u in results:
                metrics.update({f"{u.table}.rows_deleted": u.rows_deleted, f"{u.table}.dates_deleted": len(u.dates_deleted),
                                f"{u.table}.files_compacted": u.files_compacted,
                                f"{u.table}.files_vacuumed": u.files_vacuumed, f"{u.table}.files": u.files,
                                f"{u.table}.log_entries_deleted": u.log_entries_deleted,
                                f"{u.table}.bytes": u.bytes})
            mlflow.log_metrics(metrics)
            mlflow.log_dict({"tables": [u.__dict__ for u in results], "lineage": lineage}, "maintain.json")
            run_id = run.info.run_id
    return MaintainResult(run_id, results, lineage, seconds, dry_run)


def _summary(u: TableUpkeep, dry_run: bool) -> str:
    verb = "would delete" if dry_run else "deleted"
    parts = [f"{verb} {len(u.dates_deleted)} dates ({u.rows_deleted} rows)" if u.dates_deleted else "no dates deleted"]
    if u.files_compacted:
        parts.append(f"compacted {u.files_compacted} files into {u.files_written}")
    parts.append(f"vacuum ({u.retention_hours:g} h) {'would remove' if dry_run else 'removed'} {u.files_vacuumed} files")
    if u.log_entries_deleted:
        parts.append(f"{'would delete' if dry_run else 'deleted'} {u.log_entries_deleted} log entries before "
                     f"version {u.log_starts_at}")
    parts.append(f"now {u.files} files, {u.bytes / 1e6:.1f} MB")
    if u.note:
        parts.append(u.note)
    return "; ".join(parts)


def _files_by_date(lake, name: str) -> dict:
    """Data files of the table's current version per partition value (one key, None, when unpartitioned)."""
    from encore.delta_reader import data_files
    actions = data_files(lake.config, name)
    partition = TABLES[name].partition_by
    values = actions[f"partition.{partition[0]}"].to_pylist() if partition else [None] * actions.num_rows
    counts: dict = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return counts


def _not_in(column: str, dates) -> str:
    """`` AND column NOT IN (DATE'…', …)``, or nothing when there are no dates."""
    if not dates:
        return ""
    listed = ", ".join(f"DATE'{d.isoformat()}'" for d in sorted(dates))
    return f" AND {column} NOT IN ({listed})"


def _apply_retention(lake, upkeep: TableUpkeep, keep: int | None, dry_run: bool, held: set) -> None:
    """Delete the dates past the newest ``keep``, except ``held`` ones (a champion's training snapshot)."""
    if keep is None:
        return
    from delta.tables import DeltaTable
    column = TABLES[upkeep.table].partition_by[0]
    values = sorted((v for v in _files_by_date(lake, upkeep.table) if v is not None), reverse=True)
    spared = sorted(v for v in values[keep:] if v in held)
    if spared:
        upkeep.note = f"kept {column} {', '.join(map(str, spared))}: a champion was trained on it"
    old = [v for v in values[keep:] if v not in held]
    if not old:
        return
    cutoff = old[0]
    upkeep.dates_deleted = [str(v) for v in sorted(old)]
    condition = f"{column} <= DATE'{cutoff.isoformat()}'" + _not_in(column, spared)
    # Counted first: a delete of whole partitions removes files without reading them and may not count rows.
    upkeep.rows_deleted = lake.read(upkeep.table).where(condition).count()
    if not dry_run:
        table = DeltaTable.forPath(lake.spark, lake.path(upkeep.table))
        retry_conflicts(lambda: table.delete(condition))


def _compact(lake, upkeep: TableUpkeep, days: int, zorder: list[str] | None, held: set) -> None:
    """OPTIMIZE the newest ``days`` dates, when one of them has more than one file (else nothing to gain:
    a weekly run over compacted dates rewrites nothing). ``held`` dates are left as they are: rewriting
    a champion's training snapshot would take its files out of the current version."""
    from delta.tables import DeltaTable
    files = _files_by_date(lake, upkeep.table)
    partition = TABLES[upkeep.table].partition_by
    newest = sorted((v for v in files if v is not None), reverse=True)[:days] if partition else [None]
    if not any(files.get(v, 0) > 1 for v in newest if v not in held):
        return
    builder = DeltaTable.forPath(lake.spark, lake.path(upkeep.table)).optimize()
    if partition:
        builder = builder.where(f"{partition[0]} >= DATE'{min(newest).isoformat()}'"
                                + _not_in(partition[0], held & set(newest)))
    run = (lambda: builder.executeZOrderBy(*zorder)) if zorder else builder.executeCompaction
    metrics = retry_conflicts(run).collect()[0]["metrics"]
    upkeep.files_compacted, upkeep.files_written = int(metrics["numFilesRemoved"]), int(metrics["numFilesAdded"])


def _commit_times(lake, name: str) -> dict[int, dt.datetime]:
    from delta.tables import DeltaTable
    history = DeltaTable.forPath(lake.spark, lake.path(name)).history().select("version", "timestamp").collect()
    return {int(r["version"]): r["timestamp"] for r in history}


def _window_for_pins(lake, name: str, hours: float, pins: list[Pin], upkeep: TableUpkeep) -> float:
    """The VACUUM window for ``name``: ``hours``, or longer where a pinned version's files have left the
    current version, so that they stay.

    VACUUM only deletes files the current version does not use, once their removal is older than the
    window. A pin whose files are all current needs nothing more; otherwise the window must reach back
    to the first commit after the pinned version."""
    from encore.delta_reader import version_files
    if not pins:
        return hours
    current = set(version_files(lake.config, name, None))
    times = None
    now = dt.datetime.now()
    needed = hours
    for pin in pins:
        try:
            if set(version_files(lake.config, name, pin.version, pin.partition())) <= current:
                continue
        except EncoreError:
            continue   # its log is gone: nothing to keep, and the lineage check says so
        times = times or _commit_times(lake, name)
        after = times.get(pin.version + 1)
        if after is None:
            continue   # the pinned version is the newest: none of its files has been removed
        age = (now - after).total_seconds() / 3600
        if age + 1 > needed:
            needed = math.ceil(age + 1)
            upkeep.note = "; ".join(filter(None, [upkeep.note, f"window {needed:g} h to keep version {pin.version} "
                                                                f"({pin.model})"]))
    return needed


# Delta 4.4 ignores VACUUM's RETAIN clause unless it is 0 hours (the table property
# delta.deletedFileRetentionDuration, 7 days by default, applies instead) while this is on; maintain
# turns it off for its VACUUM so that its window, and a window stretched for a pin, are what apply.
IGNORE_RETAIN = "spark.databricks.delta.vacuum.retentionWindowIgnore.enabled"
RETENTION_CHECK = "spark.databricks.delta.retentionDurationCheck.enabled"


def _vacuum(lake, upkeep: TableUpkeep, unchecked: bool, dry_run: bool) -> None:
    path = lake.path(upkeep.table)
    spark = lake.spark
    previous = {key: spark.conf.get(key, None) for key in (RETENTION_CHECK, IGNORE_RETAIN)}
    spark.conf.set(IGNORE_RETAIN, "false")
    if unchecked:
        spark.conf.set(RETENTION_CHECK, "false")
    try:
        sql = f"VACUUM delta.`{path}` RETAIN {upkeep.retention_hours:g} HOURS"
        upkeep.files_vacuumed = spark.sql(sql + " DRY RUN").count()   # the files it deletes, listed
        if not dry_run and upkeep.files_vacuumed:
            retry_conflicts(lambda: spark.sql(sql).collect())
    finally:
        for key, value in previous.items():
            if value is None:
                spark.conf.unset(key)
            else:
                spark.conf.set(key, value)


def _trim_log(lake, upkeep: TableUpkeep, hours: float, pins: list[Pin], dry_run: bool) -> None:
    """Delete the log entries before the newest checkpoint from which every version committed in the
    last ``hours``, and every pinned version that can still be read, can be read."""
    times = _commit_times(lake, upkeep.table)
    cutoff = dt.datetime.now() - dt.timedelta(hours=hours)
    recent = [version for version, at in times.items() if at >= cutoff]
    needed = min(recent) if recent else max(times)          # the current version always stays readable
    needed = min([needed, *(pin.version for pin in pins if pin.version in times)])
    cut = max((c for c in lake.checkpoint_versions(upkeep.table) if c <= needed), default=None)
    if cut is None or cut <= min(times):
        return
    upkeep.log_starts_at = cut
    upkeep.log_entries_deleted = lake.truncate_history(upkeep.table, cut, dry_run=dry_run)


def _current_size(lake, name: str) -> tuple[int, int]:
    """(files, bytes) of the table's current version, from its Delta log."""
    import pyarrow.compute as pc
    from encore.delta_reader import data_files
    actions = data_files(lake.config, name)
    size = int(pc.sum(actions["size_bytes"]).as_py() or 0) if actions.num_rows else 0
    return actions.num_rows, size


def _check_lineage(lake, pins: dict[str, list[Pin]]) -> list[str]:
    """One line per champion: the data it was trained on all readable, or which is not (and why)."""
    from encore.delta_reader import version_files
    lost: dict[str, list[str]] = {}
    labels = sorted({pin.model for entries in pins.values() for pin in entries})
    for name, entries in sorted(pins.items()):
        for pin in entries:
            try:
                missing = _missing(lake, version_files(lake.config, name, pin.version, pin.partition()))
            except EncoreError as exc:
                lost.setdefault(pin.model, []).append(f"{name} v{pin.version} ({exc})")
                continue
            if missing:
                lost.setdefault(pin.model, []).append(f"{name} v{pin.version} ({missing} data files vacuumed)")
    return [f"{label}: lineage lost, its training data can no longer be read: {'; '.join(lost[label])}"
            if label in lost else f"{label}: the table versions it was trained on are still readable"
            for label in labels]


def _missing(lake, uris: list[str]) -> int:
    """How many of the files do not exist (through Hadoop's file systems: local, s3a, ...)."""
    jvm = lake.spark.sparkContext._jvm
    conf = lake.spark.sparkContext._jsc.hadoopConfiguration()
    missing = 0
    for uri in uris:
        path = jvm.org.apache.hadoop.fs.Path(uri)
        if not path.getFileSystem(conf).exists(path):
            missing += 1
    return missing
