"""``encore sql-server``: a SQL endpoint for BI tools, the Spark Thrift Server (HiveServer2's protocol,
so JDBC ``jdbc:hive2://host:port/default``, ODBC, beeline, DBeaver, Superset through PyHive) over
the lakehouse tables, read-only.

* The tables are registered by name (``silver.plays``, …) in a persistent Hive metastore: Derby
  under ``paths.catalog`` for ``local`` (one server per home: Derby admits one process), the
  database the profile's ``spark.hadoop.javax.jdo.option.*`` settings name elsewhere (compose:
  its Postgres). Registration happens at start; a table first written later appears after a restart.
* Every statement is parsed through ``encore.jvm.ReadOnlySql`` (encore/java), which refuses what
  is not a read with the same allowlist as ``encore sql --engine spark``. ``--allow-writes`` lets
  writes through and appends each to ``<home>/logs/sql-writes.log``.
* SIGTERM or SIGINT stops the server and Spark, and the command exits 0.
"""
from __future__ import annotations

import logging
import signal
import socket
import threading

from encore.config import Config
from encore.errors import EncoreError
from encore.locations import log_file
from encore.sql import read_only_plans

log = logging.getLogger(__name__)


def check_port_free(host: str, port: int) -> None:
    """One line before Spark starts when something already listens on the port."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise EncoreError(f"sql-server: port {port} on {host} is in use ({exc.strerror}): stop what holds it or "
                              "pick another with --port (or sql_server.port)") from None


def server_settings(config: Config, host: str, port: int) -> dict[str, str]:
    """Spark settings on top of the profile's: a Hive metastore, the read-only parser after Delta's, the port."""
    import os
    from encore.spark import session_settings
    profile = session_settings(config)[0]
    return {
        # The Thrift server opens sessions on threads of its own, whose class loader does not see
        # spark.jars (ClassNotFoundException: DeltaCatalog): Delta's jars and Encore's go on the JVM's class path.
        "spark.driver.extraClassPath": os.pathsep.join(j for j in profile.get("spark.jars", "").split(",") if j),
        "spark.sql.catalogImplementation": "hive",
        "spark.sql.extensions": f"{profile['spark.sql.extensions']},encore.jvm.ReadOnlySql",
        "spark.hadoop.hive.server2.thrift.port": str(port),
        "spark.hadoop.hive.server2.thrift.bind.host": host,
        # No web UI of its own: the Thrift server is long-lived, its Spark UI port would be one more to keep free.
        "spark.ui.enabled": config.spark.conf.get("spark.ui.enabled", "false"),
    }


def serve(config: Config, host: str, port: int, allow_writes: bool = False,
          stop: threading.Event | None = None) -> None:
    """Run the endpoint until SIGTERM/SIGINT (or ``stop`` is set)."""
    from encore.lakehouse import Lakehouse
    from encore.spark import build_session
    check_port_free(host, port)
    stop = stop or threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    spark = build_session(config, "encore-sql-server", extra=server_settings(config, host, port))
    try:
        lake = Lakehouse(config, spark, catalog=True)
        tables = lake.register_all()
        reads, wrappers = read_only_plans(endpoint=True)
        audit = None
        if allow_writes:
            audit = str(log_file(config, "sql-writes.log"))
            log.warning("sql-server --allow-writes: statements that change tables run, each logged to %s", audit)
        jvm = spark.sparkContext._jvm
        jvm.encore.jvm.ReadOnlySql.enforce(",".join(sorted(reads)), ",".join(sorted(wrappers)), audit)
        try:
            server = jvm.org.apache.spark.sql.hive.thriftserver.HiveThriftServer2.startWithSparkSession(
                spark._jsparkSession, False)
        except Exception as exc:   # py4j: the Thrift service failed to bind or start
            raise EncoreError(f"sql-server: the Thrift server did not start ({str(exc).splitlines()[0][:200]}): "
                              "check the port and the metastore under paths.catalog") from None
        mode = "read and write (every write logged)" if allow_writes else "read-only"
        print(f"encore sql-server: jdbc:hive2://{host}:{port}/default ready, {mode}, {len(tables)} tables "
              f"({', '.join(tables)}); SIGTERM or Ctrl-C stops it", flush=True)
        while not stop.wait(0.5):   # short waits: the signal handlers run between them
            pass
        log.info("sql-server: stopping")
        _quietly(server.stop)
    finally:
        _quietly(spark.stop)
    print("encore sql-server: stopped", flush=True)


def _quietly(stop_fn) -> None:
    """Stop a part; a JVM that already ended (the signal reached its process group too) has nothing left to stop."""
    from py4j.protocol import Py4JError
    try:
        stop_fn()
    except Py4JError as exc:
        log.info("sql-server: the JVM had already stopped (%s)", exc.__class__.__name__)
