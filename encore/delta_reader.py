"""Reading lakehouse tables from Ray jobs: through ``deltalake`` (no JVM), always at a pinned version.

A Ray job never reads "latest": it resolves the version once (or takes the one it is given), reads
exactly that version and records it for lineage. A version that was vacuumed away or never existed
stops with one line that says which versions are available.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING

from encore.config import Config
from encore.errors import EncoreError
from encore.locations import storage_uri, table_path

if TYPE_CHECKING:   # pandas costs a quarter of a second to import: `encore sql` needs only storage_uri
    import pandas as pd
    import pyarrow as pa
from schemas.table_names import (GOLD_INTERACTIONS, GOLD_ITEMS, GOLD_MUSIC_SEQUENCES, GOLD_USER_PROFILES,
                                   SILVER_PLAYS, WAREHOUSE_INSPIRATION_PACKS, WAREHOUSE_RECOMMENDATIONS,
                                   WAREHOUSE_SKETCHES)


# The command that writes each table, for "missing table" errors.
PRODUCERS = {
    SILVER_PLAYS: "`encore clean --date D`", GOLD_INTERACTIONS: "`encore features --date D`",
    GOLD_ITEMS: "`encore features --date D`", GOLD_USER_PROFILES: "`encore features --date D`",
    GOLD_MUSIC_SEQUENCES: "`encore corpus`", WAREHOUSE_RECOMMENDATIONS: "`encore score --date D`",
    WAREHOUSE_INSPIRATION_PACKS: "`encore generate --date D`", WAREHOUSE_SKETCHES: "`encore generate --date D`",
}


@dataclass(frozen=True)
class PinnedRead:
    name: str
    path: str
    version: int
    frame: pd.DataFrame | pa.Table   # an Arrow table where the read asked for ``arrow=True``


def _open(config: Config, name: str, version: int | None):
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError
    path = table_path(config, name)
    uri, options = storage_uri(path, config)
    try:
        table = DeltaTable(uri, storage_options=options)
    except TableNotFoundError:
        raise EncoreError(f"table {name} does not exist at {path}: run the step that writes it first"
                          f" ({PRODUCERS.get(name, 'see `encore tables`')})") from None
    latest = table.version()
    if version is None:
        return table, path, latest
    if version > latest or version < 0:
        raise EncoreError(f"{name} has no version {version} (latest is {latest}): pass a version that exists")
    try:
        table.load_as_version(version)
    except Exception as exc:  # delta-rs raises a generic error when the log entries are gone
        raise EncoreError(f"{name} version {version} can no longer be read ({str(exc).splitlines()[0]}): its log "
                          f"entries were deleted (encore maintain's log retention, or an erasure); use a newer "
                          f"version (latest is {latest})") from None
    return table, path, version


def read_snapshot(config: Config, name: str, as_of: dt.date | None, version: int | None = None,
                  columns: list[str] | None = None, arrow: bool = False) -> PinnedRead:
    """One ``as_of_date`` snapshot of a gold table at a pinned Delta version.

    ``as_of=None`` takes the newest snapshot present at that version. ``arrow=True`` keeps the rows
    in Arrow: at a million listeners, pandas would hold a Python object per string, list and map.
    """
    table, path, pinned = _open(config, name, version)
    if as_of is None:
        dates = table.to_pyarrow_table(columns=["as_of_date"]).column("as_of_date").unique().to_pylist()
        if not dates:
            raise EncoreError(f"{name} is empty at version {pinned}: run `encore features --date D` first")
        as_of = max(dates)
    return PinnedRead(name, path, pinned, _frame(table, name, pinned, [("as_of_date", "=", as_of)], columns, arrow))


def _frame(table, name: str, pinned: int, filters, columns, arrow: bool = False) -> pd.DataFrame | pa.Table:
    try:
        if arrow:
            return table.to_pyarrow_table(filters=filters, columns=columns)
        return table.to_pandas(filters=filters, columns=columns)
    except OSError as exc:  # the log still lists files that VACUUM removed
        raise _vacuumed(table, name, pinned, exc) from None


def _vacuumed(table, name: str, pinned: int, exc: OSError) -> EncoreError:
    return EncoreError(f"{name} version {pinned} can no longer be read ({str(exc).splitlines()[0][:160]}): "
                       f"its files were vacuumed; use a newer version (latest is {table_latest(table)})")


def table_latest(table) -> int:
    from deltalake import DeltaTable
    return DeltaTable(table.table_uri).version()


def latest_version(config: Config, name: str) -> int:
    return _open(config, name, None)[2]


def read_table(config: Config, name: str, version: int | None = None, columns: list[str] | None = None) -> PinnedRead:
    """A whole (unpartitioned) table at a pinned Delta version."""
    table, path, pinned = _open(config, name, version)
    return PinnedRead(name, path, pinned, _frame(table, name, pinned, None, columns))


def read_filtered(config: Config, name: str, filters: list[tuple], columns: list[str] | None = None,
                  version: int | None = None, arrow: bool = False) -> PinnedRead:
    """Rows of a table matching partition/column ``filters`` (deltalake DNF tuples) at a pinned version."""
    table, path, pinned = _open(config, name, version)
    return PinnedRead(name, path, pinned, _frame(table, name, pinned, filters, columns, arrow))


def distinct_values(config: Config, name: str, column: str, filters: list[tuple],
                    version: int | None = None) -> tuple[int, pa.Array]:
    """(pinned version, the distinct values of ``column``) over the rows matching ``filters``, read batch by
    batch: memory holds the distinct values, never the whole column (silver.plays has tens of millions of
    rows at a million listeners)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    from pyarrow.parquet import filters_to_expression
    table, _, pinned = _open(config, name, version)
    dataset = table.to_pyarrow_dataset()
    parts: list = [pa.array([], type=dataset.schema.field(column).type)]
    try:
        for batch in dataset.to_batches(columns=[column], filter=filters_to_expression(filters)):
            parts.append(pc.unique(batch.column(0)))
            if len(parts) >= 64:
                parts = [pc.unique(pa.chunked_array(parts))]
    except OSError as exc:  # the log still lists files that VACUUM removed
        raise _vacuumed(table, name, pinned, exc) from None
    return pinned, pc.unique(pa.chunked_array(parts))


def data_files(config: Config, name: str, version: int | None = None):
    """The data files of a table version (latest by default) as an Arrow table: path, size_bytes,
    num_records, partition.<column>; from the Delta log alone, no data read."""
    import pyarrow as pa
    table, _, _ = _open(config, name, version)
    return pa.table(table.get_add_actions(flatten=True))


def partition_size(config: Config, name: str, version: int, column: str, value) -> tuple[int, int]:
    """(bytes, rows) of one partition's data files at ``version``, from the Delta log alone (no data read);
    rows are 0 when the files carry no statistics."""
    import pyarrow as pa
    import pyarrow.compute as pc
    actions = data_files(config, name, version)
    if actions.num_rows == 0:
        return 0, 0
    chosen = actions.filter(pc.equal(actions[f"partition.{column}"], pa.scalar(value)))
    size = pc.sum(chosen["size_bytes"]).as_py() or 0
    rows = pc.sum(chosen["num_records"]).as_py() if "num_records" in chosen.column_names else 0
    return int(size), int(rows or 0)


def version_files(config: Config, name: str, version: int | None, partition: tuple | None = None) -> list[str]:
    """The data files (URIs) a version of a table reads (the latest with ``version=None``), or those of one
    partition, ``(column, value)``; raises ``EncoreError`` when its log is gone."""
    table, _, _ = _open(config, name, version)
    if partition is None:
        return table.file_uris()
    column, value = partition
    return table.file_uris(file_pruning_predicate=[(column, "=", str(value))])


def current_version(config: Config, name: str) -> int | None:
    """The table's latest version, or None when it does not exist yet."""
    try:
        return latest_version(config, name)
    except EncoreError:
        return None


def commits(config: Config, name: str, after: int | None, upto: int) -> list[dict]:
    """The Delta commits of a table with ``after < version <= upto``, oldest first: version, operation,
    rows (the commit's numOutputRows), timestamp (ms) and the writer's userMetadata as a dict."""
    import json
    table, _, _ = _open(config, name, None)
    wanted = upto - (-1 if after is None else after)
    out = []
    for commit in table.history(wanted):
        version = commit.get("version")
        if version is None or version > upto or (after is not None and version <= after):
            continue
        metrics = commit.get("operationMetrics") or {}
        try:
            meta = json.loads(commit.get("userMetadata") or "{}")
        except ValueError:
            meta = {"userMetadata": commit.get("userMetadata")}
        out.append({"version": int(version), "operation": commit.get("operation"),
                    "rows": int(metrics["numOutputRows"]) if "numOutputRows" in metrics else None,
                    "timestamp": commit.get("timestamp"), "metadata": meta})
    return sorted(out, key=lambda c: c["version"])
