"""Lakehouse access: where each registered table lives, creating it from its contract, writing it
idempotently, reading its Delta version, and registering it in the Spark catalog.

Tables are path-based Delta tables under ``paths.lakehouse`` (``<root>/<layer>/<table>``). The
Spark catalog is in memory and rebuilt from the registry (``schemas.tables``) by the sessions that
query tables by name (``encore sql``), so any number of processes can read the same tables at
once; an embedded Derby metastore would admit only one JVM at a time. The pipeline's steps read
and write by path and skip the catalog: filling it cost each step ~4 s on a fresh JVM.
"""
from __future__ import annotations

import json
import logging
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from encore.config import Config
from encore.errors import DELTA_CONFLICTS, EncoreError
from encore.locations import table_path
from schemas.tables import TABLES, TableSpec

log = logging.getLogger(__name__)

# A commit that loses to another run's commit on the same table (two runs of a date at once, a
# retried Airflow task beside a straggler) is tried again, from a fresh snapshot, this many times in
# all, waiting 1, 2, 4... s (with jitter) between tries; then the step fails with one line.
COMMIT_ATTEMPTS = 4


def _delta_conflicts() -> tuple[type[BaseException], ...]:
    import delta.exceptions as conflicts   # also maps the JVM's exceptions to these classes
    return tuple(getattr(conflicts, name) for name in DELTA_CONFLICTS)


def retry_conflicts(action):
    """Run ``action()`` and return its result, again after a Delta commit conflict (tenacity)."""
    from tenacity import (before_sleep_log, retry_if_exception_type, stop_after_attempt, wait_exponential,
                          wait_random, Retrying)
    for attempt in Retrying(retry=retry_if_exception_type(_delta_conflicts()), reraise=True,
                            stop=stop_after_attempt(COMMIT_ATTEMPTS),
                            wait=wait_exponential(multiplier=1, max=30) + wait_random(0, 1),
                            before_sleep=before_sleep_log(log, logging.WARNING)):
        with attempt:
            return action()


def spec(name: str) -> TableSpec:
    try:
        return TABLES[name]
    except KeyError:
        raise EncoreError(f"unknown table '{name}': registered tables are {', '.join(TABLES)}") from None



@dataclass
class Lakehouse:
    """One profile's lakehouse, bound to a Spark session."""

    config: Config
    spark: object  # pyspark.sql.SparkSession
    # Register the tables this object writes in the session's catalog. On for an object built
    # directly (tests, notebooks); open_lakehouse turns it off for the steps, which read by path.
    catalog: bool = True
    _registered: dict = field(default_factory=dict)  # name -> location registered by this object
    _synced: set = field(default_factory=set)        # tables whose properties this object has checked

    @property
    def root(self) -> str:
        return self.config.path("lakehouse")

    def path(self, name: str) -> str:
        return table_path(self.config, name)

    def exists(self, name: str) -> bool:
        from delta.tables import DeltaTable
        return DeltaTable.isDeltaTable(self.spark, self.path(name))

    # --- creation and catalog -------------------------------------------------------------
    def ensure(self, name: str) -> None:
        """Create the table from its contract (schema, partitioning, comments, constraints, properties)
        if absent; an existing table gets the contract's properties it lacks (checked once per object)."""
        from delta.tables import DeltaTable
        table = spec(name)
        if not self.exists(name):
            builder = (DeltaTable.createIfNotExists(self.spark).location(self.path(name))
                       .addColumns(table.schema).comment(table.doc))
            if table.partition_by:
                builder = builder.partitionedBy(*table.partition_by)
            for key, value in table.properties.items():
                builder = builder.property(key, value)
            # Delta keeps a CHECK constraint as the table property delta.constraints.<name> (what
            # ALTER TABLE ADD CONSTRAINT writes, after checking existing rows: a new table has none).
            # Declared at creation, the table and its constraints are one commit instead of one per
            # constraint (~3 s less for silver.plays).
            for cname, expr in table.constraints.items():
                builder = builder.property(f"delta.constraints.{cname.lower()}", expr)
            retry_conflicts(builder.execute)   # another run may be creating it too
            log.info("created %s at %s", name, self.path(name))
        elif name not in self._synced:
            self._sync_properties(name)
        self._synced.add(name)
        if self.catalog:
            self.register(name)

    def _sync_properties(self, name: str) -> None:
        """Give a table created by an older release the properties its contract now declares."""
        wanted = spec(name).properties
        if not wanted:
            return
        current = self.properties(name)
        missing = {k: v for k, v in wanted.items() if current.get(k) != v}
        if missing:
            # Properties may name columns the contract added since (statistics columns): add those first.
            present = set(self.spark.read.format("delta").load(self.path(name)).columns)
            added = [f for f in spec(name).schema if f.name not in present]
            if added:
                comment = lambda f: f.metadata.get("comment", "").replace("\\", "").replace("'", "\\'")  # noqa: E731
                columns = ", ".join(f"`{f.name}` {f.dataType.simpleString()} COMMENT '{comment(f)}'" for f in added)
                self.spark.sql(f"ALTER TABLE delta.`{self.path(name)}` ADD COLUMNS ({columns})")
                log.info("%s: added columns %s", name, ", ".join(f.name for f in added))
            settings = ", ".join(f"'{k}' = '{v}'" for k, v in missing.items())
            self.spark.sql(f"ALTER TABLE delta.`{self.path(name)}` SET TBLPROPERTIES ({settings})")
            log.info("%s: set %s", name, settings)

    def register(self, name: str) -> None:
        table = spec(name)
        location = self.path(name)
        if self._registered.get(name) == location:
            return
        if not self.spark.catalog.databaseExists(table.layer):
            self.spark.sql(f"CREATE DATABASE IF NOT EXISTS {table.layer}")
        current = self._registered_location(name)
        if current is not None and current != location:
            self.spark.sql(f"DROP TABLE IF EXISTS {name}")  # external: drops the name, not the data
        if current != location:
            self.spark.sql(f"CREATE TABLE IF NOT EXISTS {name} USING DELTA LOCATION '{location}'")
        self._registered[name] = location

    def _registered_location(self, name: str) -> str | None:
        if not self.spark.catalog.tableExists(name):
            return None
        rows = self.spark.sql(f"DESCRIBE TABLE EXTENDED {name}").collect()
        for row in rows:
            if row[0] == "Location":
                return row[1].replace("file:", "", 1) if row[1].startswith("file:/") else row[1]
        return None

    def register_all(self) -> list[str]:
        """Register every table that exists on storage; returns their names."""
        present = [name for name in TABLES if self.exists(name)]
        for name in present:
            self.register(name)
        return present

    # --- reading ---------------------------------------------------------------------------
    def read(self, name: str, version: int | None = None):
        if not self.exists(name):
            raise EncoreError(f"table {name} does not exist yet at {self.path(name)}: run the step that writes it first")
        reader = self.spark.read.format("delta")
        if version is not None:
            reader = reader.option("versionAsOf", version)
        return reader.load(self.path(name))

    def empty(self, schema: str):
        """An empty DataFrame of a DDL schema (``"a long, b string"``), planned in the JVM alone.

        ``spark.createDataFrame([], schema)`` scans a Python RDD: a pass that reads it starts
        Python workers (a daemon and one per core) just to find no rows.
        """
        from pyspark.sql import functions as F
        from pyspark.sql.types import StructType
        fields = StructType.fromDDL(schema).fields
        return self.spark.range(0).select([F.lit(None).cast(f.dataType).alias(f.name) for f in fields])

    def version(self, name: str) -> int:
        from delta.tables import DeltaTable
        return DeltaTable.forPath(self.spark, self.path(name)).history(1).collect()[0]["version"]

    def properties(self, name: str) -> dict[str, str]:
        """The table's Delta properties (its CHECK constraints among them, as delta.constraints.<name>).

        SHOW TBLPROPERTIES reads only the snapshot's metadata; DeltaTable.detail() also sums the
        size of every file, a Spark job that cost 4-11 s on a fresh JVM and made every step start
        slower than its work on a small date.
        """
        rows = self.spark.sql(f"SHOW TBLPROPERTIES delta.`{self.path(name)}`").collect()
        return {row["key"]: row["value"] for row in rows}

    def checkpoint(self, name: str) -> int:
        """Write a checkpoint of the table's current version and return that version.

        Through the JVM: neither Delta's Python API nor its SQL has a checkpoint command
        (``DeltaLog.checkpoint`` has been public since Delta 1.0)."""
        jvm = self.spark.sparkContext._jvm
        none = jvm.scala.Option.empty()
        delta_log = jvm.org.apache.spark.sql.delta.DeltaLog.forTable(self.spark._jsparkSession, self.path(name))
        snapshot = delta_log.update(False, none, none)
        delta_log.checkpoint(snapshot, none)
        return int(snapshot.version())

    def _log_folder(self, name: str):
        """(Hadoop path of the table's _delta_log, its file system)."""
        jvm = self.spark.sparkContext._jvm
        log_path = jvm.org.apache.hadoop.fs.Path(f"{self.path(name)}/_delta_log")
        return log_path, log_path.getFileSystem(self.spark.sparkContext._jsc.hadoopConfiguration())

    def checkpoint_versions(self, name: str) -> list[int]:
        """The versions that have a (single-file) checkpoint in the table's log, oldest first."""
        import re
        log_path, fs = self._log_folder(name)
        single = re.compile(r"^(\d{20})\.checkpoint\.parquet$")
        found = (single.match(status.getPath().getName()) for status in fs.listStatus(log_path))
        return sorted(int(match.group(1)) for match in found if match)

    def truncate_history(self, name: str, version: int, dry_run: bool = False) -> int:
        """Delete the table's log entries before ``version``, which must have a checkpoint: its versions
        before ``version`` can no longer be read. Returns the number of files deleted (with ``dry_run``,
        that would be).

        Delta's own cleanup does this for entries past ``delta.logRetentionDuration``, at a checkpoint
        (and, as measured with Delta 4.4, not at all for entries before an OPTIMIZE or VACUUM commit);
        an erasure cannot wait for it: those entries' file statistics may name the listener."""
        import re
        jvm = self.spark.sparkContext._jvm
        log_path, fs = self._log_folder(name)
        checkpoint = jvm.org.apache.hadoop.fs.Path(log_path, f"{version:020d}.checkpoint.parquet")
        if not fs.exists(checkpoint):
            raise EncoreError(f"{name} has no checkpoint at version {version}: its history is kept")
        entry = re.compile(r"^\.?(\d{20})\.")   # commits, checksums, checkpoints and their .crc files
        deleted = 0
        for folder in (log_path, jvm.org.apache.hadoop.fs.Path(log_path, "_staged_commits")):
            if not fs.exists(folder):
                continue
            for status in fs.listStatus(folder):
                match = entry.match(status.getPath().getName())
                if match and int(match.group(1)) < version and (dry_run or fs.delete(status.getPath(), False)):
                    deleted += 1
        return deleted

    @contextmanager
    def staging(self, label: str):
        """A scratch path under the lakehouse root (shared storage on a cluster), removed afterwards."""
        path = f"{self.root}/_staging/{label}-{uuid.uuid4().hex[:12]}"
        jvm = self.spark.sparkContext._jvm
        hadoop_path = jvm.org.apache.hadoop.fs.Path(path)
        fs = hadoop_path.getFileSystem(self.spark.sparkContext._jsc.hadoopConfiguration())
        try:
            yield path
        finally:
            fs.delete(hadoop_path, True)

    # --- writing ---------------------------------------------------------------------------
    def _select_contract(self, df, name: str):
        # Cast to the contract so a job cannot silently widen or reorder a table.
        table = spec(name)
        missing = [f.name for f in table.schema if f.name not in df.columns]
        if missing:
            raise EncoreError(f"writing {name}: columns {missing} missing from the job's output")
        return df.select([df[f.name].cast(f.dataType).alias(f.name) for f in table.schema])

    def _write(self, df, name: str, mode: str, run_info: dict | None, **options: str) -> None:
        """Create the table if needed, cast to its contract and commit, recording ``run_info``."""
        self.ensure(name)
        writer = self._select_contract(df, name).write.format("delta").mode(mode)
        if mode == "append":
            # A table created by an older release gains the columns its contract added since (the
            # output was cast to the contract above, so only contract columns can be added).
            writer = writer.option("mergeSchema", "true")
        for key, value in options.items():
            writer = writer.option(key, value)
        if run_info:
            writer = writer.option("userMetadata", json.dumps(run_info, sort_keys=True))
        retry_conflicts(lambda: writer.save(self.path(name)))

    def append(self, df, name: str, run_info: dict | None = None) -> int:
        """Append and return the number of rows written (from the Delta commit's metrics)."""
        self._write(df, name, "append", run_info)
        return self.last_commit_rows(name)

    def last_commit_rows(self, name: str) -> int:
        from delta.tables import DeltaTable
        metrics = DeltaTable.forPath(self.spark, self.path(name)).history(1).collect()[0]["operationMetrics"]
        return int(metrics.get("numOutputRows", 0))

    def overwrite(self, df, name: str, run_info: dict | None = None) -> None:
        """Replace the whole table (for tables rebuilt from scratch, like the music corpus)."""
        self._write(df, name, "overwrite", run_info)

    def replace_partition(self, df, name: str, column: str, value: date, run_info: dict | None = None) -> None:
        """Overwrite exactly the rows where ``column = value``: a rerun replaces, never duplicates."""
        self._write(df, name, "overwrite", run_info, replaceWhere=f"{column} = DATE'{value.isoformat()}'")


def open_lakehouse(config: Config, app_name: str = "encore", catalog: bool = False) -> Lakehouse:
    """Start Spark for this profile; with ``catalog``, also register the existing tables in its
    catalog, for SQL by table name."""
    from encore.spark import build_session
    root = config.path("lakehouse")
    if "://" not in root:
        Path(root).mkdir(parents=True, exist_ok=True)
    lake = Lakehouse(config, build_session(config, app_name), catalog=catalog)
    if catalog:
        lake.register_all()
    return lake
