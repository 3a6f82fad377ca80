"""SQL over the lakehouse for analysts: read-only by default, fast on one machine.

Two engines answer the same table names (``silver.plays``, ``warehouse.recommendations``, …):

* ``duckdb`` (the default): DuckDB over each Delta table's current version, read through
  ``deltalake`` as an Arrow dataset; no JVM, so a query answers in about a second. The tables are
  views over those datasets, so nothing a query does can change them.
* ``spark``: Spark SQL with Delta, for tables too large for one machine and for the few
  statements only Delta has (``DESCRIBE HISTORY``).

Statements that write or change tables (DML, DDL, ``VACUUM``, ``RESTORE``, ``OPTIMIZE``, ``COPY``,
``ATTACH``, …) are refused with one line before anything runs, unless the operator passes
``allow_writes`` (the CLI's ``--allow-writes``), which only the Spark engine honours and which is
logged, with the statement, to the log and to ``<home>/logs/sql-writes.log``.
"""
from __future__ import annotations

import datetime as dt
import getpass
import logging
import re
from pathlib import Path

from encore.config import Config
from encore.errors import EncoreError
from encore.locations import log_file
from schemas import table_names

log = logging.getLogger(__name__)

ENGINES = ("duckdb", "spark")
FORMATS = ("table", "csv", "json", "parquet")
TABLES = tuple(v for k, v in vars(table_names).items() if k.isupper() and isinstance(v, str))

# DuckDB statement types that only read: a query, EXPLAIN, DESCRIBE/SHOW/SUMMARIZE (parsed as SELECT).
_DUCKDB_READS = {"SELECT", "EXPLAIN"}
# Spark: a statement only reads when its parsed plan's root is a query operator or a description.
# An allowlist, not "not a Command": INSERT (InsertIntoStatement) and RESTORE (RestoreTableStatement)
# parse to plans that are not Commands.
_SPARK_QUERY_ROOTS = {"Project", "Filter", "Aggregate", "Sort", "GlobalLimit", "LocalLimit", "Offset", "Tail",
                      "Distinct", "Deduplicate", "Union", "Intersect", "Except", "Join", "Window", "Generate",
                      "Expand", "Sample", "Pivot", "Unpivot", "UnresolvedRelation", "LocalRelation",
                      "OneRowRelation", "UnresolvedInlineTable", "UnresolvedTableValuedFunction",
                      "Repartition", "RepartitionByExpression", "UnresolvedSubqueryColumnAliases"}
_SPARK_WRAPPERS = {"UnresolvedWith", "WithCTE", "UnresolvedHint", "WithWindowDefinition", "SubqueryAlias"}
_SPARK_DESCRIPTIONS = {"DescribeRelation", "DescribeColumn", "DescribeDeltaHistory", "DescribeDeltaDetailCommand",
                       "DescribeFunction", "DescribeNamespace", "ShowTables", "ShowColumns", "ShowNamespaces",
                       "ShowNamespacesCommand", "ShowTableProperties", "ShowCreateTable", "ShowFunctions",
                       "ShowViews", "ShowPartitions", "ExplainCommand"}
# What a BI client's session also sends: SET, USE, SHOW CATALOGS and the like change nothing stored.
_SPARK_SESSION_STATEMENTS = {"SetCommand", "ResetCommand", "SetCatalogAndNamespace", "SetNamespaceCommand",
                             "SetCatalogCommand", "ShowCatalogsCommand", "ShowCurrentNamespaceCommand"}


def read_only_plans(endpoint: bool = False) -> tuple[set[str], set[str]]:
    """(the parsed plans that only read, the wrappers judged by what they wrap): the allowlist of
    ``encore sql --engine spark`` and, with ``endpoint``, of ``encore sql-server`` (encore/java/ReadOnlySql.java)."""
    reads = _SPARK_QUERY_ROOTS | _SPARK_DESCRIPTIONS | (_SPARK_SESSION_STATEMENTS if endpoint else set())
    return reads, set(_SPARK_WRAPPERS)


def referenced_tables(query: str) -> list[str]:
    """The registered tables a query names (a table name is ``layer.table``, case-insensitive)."""
    return [name for name in TABLES if re.search(rf"(?<![\w.`]){re.escape(name)}(?![\w])", query, re.IGNORECASE)]


def check_table_names(query: str) -> None:
    """One line for a ``layer.table`` name that is not a registered table, before any engine starts."""
    layers = sorted({name.split(".")[0] for name in TABLES})
    named = {m.lower() for m in re.findall(rf"(?<![\w.`])((?:{'|'.join(layers)})\.\w+)", query, re.IGNORECASE)}
    unknown = sorted(named - set(TABLES))
    if unknown:
        raise EncoreError(f"sql: unknown table {', '.join(unknown)}: `encore tables` lists the tables")


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else exc.__class__.__name__


# --- DuckDB ------------------------------------------------------------------------------------------

def duckdb_statement_types(query: str) -> list[str]:
    import duckdb
    try:
        return [s.type.name for s in duckdb.extract_statements(query)]
    except duckdb.Error as exc:
        raise EncoreError(f"sql: the query does not parse ({_first_line(exc)}): fix the SQL") from None


def duckdb_connection(config: Config, names: list[str], into=None):
    """An in-memory DuckDB (or ``into``, an open one) whose schemas and views are the named lakehouse
    tables (current versions)."""
    import duckdb
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    from encore.locations import storage_uri, table_path

    con = duckdb.connect(":memory:") if into is None else into
    for name in names:
        layer, short = name.split(".")
        uri, options = storage_uri(table_path(config, name), config)
        try:
            dataset = DeltaTable(uri, storage_options=options).to_pyarrow_dataset()
        except TableNotFoundError:
            raise EncoreError(f"sql: table {name} has no data yet at {table_path(config, name)}: run the step that "
                              "writes it first (`encore tables` lists every table)") from None
        except OSError as exc:   # an unreachable object store
            raise EncoreError(f"sql: cannot read {name} at {uri} ({_first_line(exc)}): check paths.lakehouse and the "
                              "spark.hadoop.fs.s3a.* settings of the profile") from None
        internal = f"__{layer}__{short}"
        con.register(internal, dataset)
        con.execute(f'CREATE SCHEMA IF NOT EXISTS "{layer}"')
        con.execute(f'CREATE VIEW "{layer}"."{short}" AS SELECT * FROM "{internal}"')
    return con


def run_duckdb(config: Config, query: str, limit: int | None):
    """The query's result as an Arrow table (at most ``limit`` rows when given) and whether it was cut."""
    import duckdb
    kinds = duckdb_statement_types(query)
    check_table_names(query)
    if len(kinds) != 1:
        raise EncoreError(f"sql: give one statement, not {len(kinds)}: run them one at a time")
    if kinds[0] not in _DUCKDB_READS:
        raise EncoreError(f"sql: {kinds[0]} statements change data and `encore sql` is read-only: query with "
                          "SELECT (operators who mean to write: --engine spark --allow-writes)")
    con = duckdb_connection(config, referenced_tables(query))
    try:
        relation = con.sql(query)
        if relation is None:
            raise EncoreError("sql: the statement returned no rows to show")
        result = relation.limit(limit + 1).to_arrow_table() if limit is not None else relation.to_arrow_table()
    except duckdb.CatalogException as exc:
        hint = ("`encore tables` lists the tables" if "Table with name" in str(exc) else
                "DuckDB's SQL is the default; Spark SQL's functions need --engine spark")
        raise EncoreError(f"sql: {_first_line(exc)}: {hint}") from None
    except duckdb.BinderException as exc:
        raise EncoreError(f"sql: {_first_line(exc)}: `encore schema NAME` lists a table's columns") from None
    except duckdb.ParserException as exc:
        raise EncoreError(f"sql: the query does not parse ({_first_line(exc)}): fix the SQL") from None
    except duckdb.Error as exc:
        raise EncoreError(f"sql: query failed ({_first_line(exc)})") from None
    finally:
        con.close()
    return _cut(result, limit)


def _cut(result, limit: int | None):
    if limit is not None and result.num_rows > limit:
        return result.slice(0, limit), True
    return result, False


# --- Spark -------------------------------------------------------------------------------------------

def spark_plan_kind(spark, query: str) -> tuple[str, bool]:
    """(the parsed plan's class name, whether it only reads), before anything runs."""
    try:
        plan = spark._jsparkSession.sessionState().sqlParser().parsePlan(query)
    except Exception as exc:   # py4j wraps Spark's ParseException
        raise EncoreError(f"sql: the query does not parse ({_first_line(exc).split(': ', 1)[-1][:200]}): "
                          "fix the SQL") from None
    name = plan.getClass().getSimpleName()
    while name in _SPARK_WRAPPERS:   # WITH … INSERT parses to a CTE above the INSERT: judge what it wraps
        plan = plan.child()
        name = plan.getClass().getSimpleName()
    return name, name in read_only_plans()[0]


def audit_write(config: Config, query: str) -> None:
    """Every statement run with --allow-writes: a warning in the log and a line in <home>/logs/sql-writes.log."""
    user = getpass.getuser()
    log.warning("sql --allow-writes by %s: %s", user, query)
    path = log_file(config, "sql-writes.log")
    if path is not None:
        with open(path, "a") as out:
            out.write(f"{dt.datetime.now(dt.timezone.utc).isoformat()}\t{user}\t{config.profile}\t"
                      f"{' '.join(query.split())}\n")


def run_spark(lake, query: str, limit: int | None, allow_writes: bool = False):
    """The query through Spark SQL, refused before it runs if it writes (unless ``allow_writes``)."""
    import pyarrow as pa
    check_table_names(query)
    kind, reads = spark_plan_kind(lake.spark, query)
    if not reads:
        if not allow_writes:
            raise EncoreError(f"sql: {kind} changes data and `encore sql` is read-only: query with SELECT "
                              "(operators who mean to write: --allow-writes, which is logged)")
        audit_write(lake.config, query)
    try:
        frame = lake.spark.sql(query)
        rows = frame.limit(limit + 1).collect() if limit is not None else frame.collect()
    except Exception as exc:   # analysis errors: Spark's first line, not a JVM trace
        message = _first_line(exc)
        if "TABLE_OR_VIEW_NOT_FOUND" in message:
            raise EncoreError(f"sql: {message[:200]}: `encore tables` lists the tables") from None
        raise EncoreError(f"sql: query failed ({message[:300]})") from None
    columns = frame.columns
    table = pa.Table.from_pylist([dict(zip(columns, r)) for r in rows]) if rows else \
        pa.table({c: pa.array([], pa.string()) for c in columns})
    return _cut(table, limit)


# --- output ------------------------------------------------------------------------------------------

def _json_value(value):
    """JSON for what the json module cannot write: bytes (MIDI) as base64, dates and times in ISO form."""
    import base64
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode()
    if isinstance(value, (dt.date, dt.datetime, dt.time)):
        return value.isoformat()
    return str(value)


def write_result(result, fmt: str, output: str | None) -> None:
    """The result as a printed table, CSV, JSON lines or Parquet, to ``output`` or standard output."""
    import sys
    if fmt == "parquet":
        import pyarrow.parquet as pq
        if not output:
            raise EncoreError("sql: --format parquet needs --output FILE")
        pq.write_table(result, output)
        return
    if fmt == "csv":
        import pyarrow.csv as pcsv
        import io
        buffer = io.BytesIO()
        pcsv.write_csv(result, buffer)
        text = buffer.getvalue().decode()
    elif fmt == "json":
        import json
        import pyarrow as pa
        maps = [f.name for f in result.schema if pa.types.is_map(f.type)]
        rows = result.to_pylist()
        for row in rows:   # Arrow hands maps over as (key, value) pairs: JSON readers expect an object
            for name in maps:
                row[name] = dict(row[name]) if row[name] is not None else None
        text = "".join(json.dumps(row, default=_json_value, ensure_ascii=False) + "\n" for row in rows)
    else:
        raise EncoreError(f"sql: unknown format {fmt}: use one of {', '.join(FORMATS)}")
    if output:
        Path(output).write_text(text)
    else:
        sys.stdout.write(text)
