"""`encore sql` on DuckDB over real Delta tables (written with deltalake, no JVM): answers by table
name, writes CSV, JSON and Parquet, and refuses anything that would change a table with one line.
The comparison with Spark on the analyst guide's queries is in test_night.py (it needs a night)."""
from __future__ import annotations

import datetime as dt
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from encore import sql
from encore.errors import EncoreError
from encore.locations import table_path
from tests.conftest import make_config

pytestmark = pytest.mark.unit
DAY = dt.date(2026, 11, 20)


@pytest.fixture
def home(tmp_path):
    from deltalake import write_deltalake
    config = make_config(tmp_path / "home")
    recs = pa.table({"run_date": [DAY] * 4, "user_id": ["u1", "u1", "u2", "u2"], "rank": [1, 2, 1, 2],
                     "item_name": ["Abba", "Blur", "Cream", "Dido"], "strategy": ["model", "model", "popularity",
                                                                                  "popularity"],
                     "midi": [b"MThd\x00", b"", b"x", b"y"]})
    write_deltalake(table_path(config, "warehouse.recommendations"), recs, partition_by=["run_date"])
    items = pa.table({"as_of_date": [DAY] * 3, "item_id": ["a", "b", "c"], "popularity_rank": [2, 1, 3],
                      "top_tags": [["rock"], ["pop", "rock"], []]})
    write_deltalake(table_path(config, "gold.items"), items)
    return config


def cli(config, *args):
    """The CLI in this process, with the fixture's home; (exit code, the error line or None)."""
    from encore.pipeline.cli import main
    saved = os.environ.get("ENCORE_HOME")
    os.environ["ENCORE_HOME"] = config.home
    try:
        return main(["sql", *args])
    finally:
        os.environ.pop("ENCORE_HOME") if saved is None else os.environ.__setitem__("ENCORE_HOME", saved)


def test_queries_answer_by_table_name_joining_tables(home):
    result, cut = sql.run_duckdb(home, "SELECT strategy, count(*) AS n FROM warehouse.recommendations "
                                       "GROUP BY strategy ORDER BY strategy", 100)
    assert result.to_pylist() == [{"strategy": "model", "n": 2}, {"strategy": "popularity", "n": 2}] and not cut
    result, _ = sql.run_duckdb(home, "SELECT i.item_id, i.top_tags FROM gold.items i WHERE as_of_date = DATE'2026-11-20' "
                                     "ORDER BY popularity_rank LIMIT 2", 100)
    assert result.to_pylist() == [{"item_id": "b", "top_tags": ["pop", "rock"]}, {"item_id": "a", "top_tags": ["rock"]}]
    result, cut = sql.run_duckdb(home, "SELECT * FROM Warehouse.Recommendations", 3)
    assert result.num_rows == 3 and cut


@pytest.mark.parametrize("statement, kind", [
    ("DELETE FROM warehouse.recommendations WHERE rank > 1", "DELETE"),
    ("UPDATE warehouse.recommendations SET rank = 0", "UPDATE"),
    ("INSERT INTO warehouse.recommendations SELECT * FROM warehouse.recommendations", "INSERT"),
    ("DROP VIEW warehouse.recommendations", "DROP"),
    ("CREATE TABLE t AS SELECT 1", "CREATE"),
    ("ALTER VIEW warehouse.recommendations RENAME TO r", "ALTER"),
    ("COPY (SELECT 1) TO '/tmp/encore-sql-copy.csv'", "COPY"),
    ("ATTACH '/tmp/encore-sql.db'", "ATTACH"),
    ("INSTALL httpfs", "LOAD"),
])
def test_writes_are_refused_with_one_line_and_change_nothing(home, statement, kind, capsys):
    before = sql.run_duckdb(home, "SELECT * FROM warehouse.recommendations ORDER BY user_id, rank", None)[0]
    assert cli(home, statement) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"encore: error: sql: {kind} statements change data and `encore sql` is read-only: query with "
                   "SELECT (operators who mean to write: --engine spark --allow-writes)"]
    after = sql.run_duckdb(home, "SELECT * FROM warehouse.recommendations ORDER BY user_id, rank", None)[0]
    assert after.equals(before)
    assert not os.path.exists("/tmp/encore-sql-copy.csv")


@pytest.mark.parametrize("args, message", [
    (["SELEC 1"], "encore: error: sql: the query does not parse (Parser Error: syntax error at or near \"SELEC\")"),
    (["SELECT * FROM gold.nope"], "encore: error: sql: unknown table gold.nope: `encore tables` lists the tables"),
    (["SELECT * FROM silver.plays"], "encore: error: sql: table silver.plays has no data yet"),
    (["SELECT 1; SELECT 2"], "encore: error: sql: give one statement, not 2"),
    (["SELECT nope FROM gold.items"], "encore: error: sql: Binder Error"),
    (["SELECT 1", "--format", "parquet"], "encore: error: sql: --format parquet needs --output FILE"),
    (["SELECT 1", "--allow-writes"], "encore: error: sql: --allow-writes needs --engine spark"),
])
def test_bad_queries_end_in_one_line_and_exit_2(home, args, message, capsys):
    assert cli(home, *args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(message), err


def test_results_go_out_as_csv_json_and_parquet(home, tmp_path, capsys):
    query = "SELECT user_id, rank, midi FROM warehouse.recommendations WHERE user_id = 'u1' ORDER BY rank"
    assert cli(home, query, "--format", "csv") == 0
    assert capsys.readouterr().out.splitlines()[0] == '"user_id","rank","midi"'
    assert cli(home, query, "--format", "json", "--output", str(tmp_path / "r.json")) == 0
    rows = [json.loads(line) for line in (tmp_path / "r.json").read_text().splitlines()]
    assert rows == [{"user_id": "u1", "rank": 1, "midi": "TVRoZAA="}, {"user_id": "u1", "rank": 2, "midi": ""}]
    assert cli(home, query, "--format", "parquet", "-o", str(tmp_path / "r.parquet")) == 0
    assert pq.read_table(tmp_path / "r.parquet").column("midi").to_pylist() == [b"MThd\x00", b""]
    assert cli(home, "SELECT * FROM warehouse.recommendations", "--limit", "1") == 0
    printed = capsys.readouterr().out
    assert "(first 1 rows; raise --limit for more)" in printed


def test_table_names_are_found_in_queries():
    assert sql.referenced_tables("select * from silver.plays p join GOLD.items i on true") == ["silver.plays",
                                                                                               "gold.items"]
    assert sql.referenced_tables("select 'silver.plays_quarantine' from silver.plays_quarantine") == [
        "silver.plays_quarantine"]
    with pytest.raises(EncoreError, match="unknown table silver.play"):
        sql.check_table_names("SELECT * FROM silver.play")


SPARK_READS = ["SELECT 1", "WITH a AS (SELECT 1) SELECT * FROM a", "SELECT 1 UNION ALL SELECT 2", "VALUES (1)",
               "SELECT /*+ BROADCAST(a) */ * FROM a", "DESCRIBE TABLE gold.items", "DESCRIBE HISTORY silver.plays",
               "SHOW TABLES", "SHOW TBLPROPERTIES silver.plays", "EXPLAIN SELECT 1", "TABLE silver.plays"]
SPARK_WRITES = ["DELETE FROM warehouse.recommendations WHERE rank > 5", "UPDATE silver.plays SET user_id = 'x'",
                "INSERT INTO silver.plays SELECT * FROM silver.plays", "WITH a AS (SELECT 1) INSERT INTO t SELECT * FROM a",
                "INSERT OVERWRITE TABLE silver.plays SELECT * FROM silver.plays", "RESTORE TABLE silver.plays TO VERSION AS OF 1",
                "MERGE INTO t USING s ON t.a = s.a WHEN MATCHED THEN DELETE", "VACUUM silver.plays", "OPTIMIZE silver.plays",
                "CREATE TABLE x AS SELECT 1", "DROP TABLE silver.plays", "TRUNCATE TABLE silver.plays",
                "ALTER TABLE silver.plays SET TBLPROPERTIES ('a' = 'b')", "CACHE TABLE silver.plays", "SET spark.x = 1"]


@pytest.mark.spark
def test_spark_reads_only_queries_and_descriptions(spark):
    """The Spark engine's check, on Spark's own parser: INSERT and RESTORE are not Commands in Spark's
    plans, so only an allowlist of query and description roots is safe."""
    assert [q for q in SPARK_READS if not sql.spark_plan_kind(spark, q)[1]] == []
    assert [q for q in SPARK_WRITES if sql.spark_plan_kind(spark, q)[1]] == []


@pytest.mark.spark
def test_the_endpoint_s_parser_check_refuses_writes_or_logs_them_when_allowed(spark, tmp_path):
    """encore/java/ReadOnlySql.java, which `encore sql-server` puts in front of Spark's parser (tests/test_night.py
    drives the server itself): the CLI's verdicts, plus a BI client's session statements; with an audit file
    (--allow-writes), a write passes and is logged."""
    checker = spark.sparkContext._jvm.encore.jvm.ReadOnlySql
    parser = spark._jsparkSession.sessionState().sqlParser()
    reads, wrappers = (",".join(sorted(names)) for names in sql.read_only_plans(endpoint=True))
    audit = tmp_path / "sql-writes.log"
    try:
        checker.enforce(reads, wrappers, None)
        for query in SPARK_READS + ["SET spark.sql.shuffle.partitions = 3", "USE silver", "SHOW CATALOGS"]:
            checker.check(parser.parsePlan(query), query)
        refused = []
        for query in [q for q in SPARK_WRITES if not q.startswith("SET")]:
            try:
                checker.check(parser.parsePlan(query), query)
            except Exception as exc:   # py4j's Py4JJavaError around the IllegalArgumentException
                refused.append(query)
                assert "encore sql-server is read-only: " in str(exc) and " changes data; query with SELECT" in str(exc)
        assert refused == [q for q in SPARK_WRITES if not q.startswith("SET")]
        checker.enforce(reads, wrappers, str(audit))
        statement = "DELETE FROM silver.plays\n  WHERE user_id = 'u1'"
        checker.check(parser.parsePlan(statement), statement)
        assert audit.read_text().split("\t")[1:] == ["sql-server", "DELETE FROM silver.plays WHERE user_id = 'u1'\n"]
    finally:
        checker.release()
