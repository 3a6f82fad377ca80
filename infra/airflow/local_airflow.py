"""Run the project's DAGs on a real Airflow on this machine and wait for nightly runs.

    .venv/bin/python infra/airflow/local_airflow.py --date 2026-11-20 [--airflow-home var/airflow] [--port 28080]
    .venv/bin/python infra/airflow/local_airflow.py --backfill 2026-11-19 2026-11-20

Starts ``airflow standalone`` (scheduler, DAG processor, triggerer and API server, LocalExecutor,
SQLite at ``<airflow home>/airflow.db`` in write-ahead-log mode) with ``dags/`` as its DAGs folder
and waits until ``encore_nightly`` is parsed. It then creates an Airflow backfill (``airflow
backfill create --max-active-runs 1``) for ``--date D`` (one run) or ``--backfill FROM TO`` (one
run per date, oldest first), unpauses the DAG, waits for the runs to finish (reading their states
from the database, read-only), prints each task's state, and stops Airflow. Exit status 0 means
every run succeeded. So that unpausing does not also start the latest scheduled interval, the
schedules end on the last date (``ENCORE_AIRFLOW_END_DATE``). Encore settings come from the
environment as usual (``ENCORE_HOME``, ``ENCORE_PROFILE``, ``ENCORE__…``).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from encore.devtools.waiting import wait_until

REPO = Path(__file__).resolve().parents[2]
AIRFLOW = str(Path(sys.executable).parent / "airflow")


def error_line(stderr: str) -> str:
    """The line of a failed CLI call that says what went wrong: the last one naming an error,
    not SQLAlchemy's trailing "Background on this error at: …" link."""
    lines = [line.strip() for line in stderr.strip().splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower() and not line.startswith("(Background on this error")]
    return (errors or lines or ["(no output on stderr)"])[-1]


def airflow(env: dict, *args: str, timeout: int = 120, attempts: int = 5) -> str:
    """Run one Airflow CLI command and return its stdout.

    SQLite allows one writer at a time; a CLI call that meets the scheduler's write gives up
    with "database is locked" after SQLite's 5 s busy timeout. Such a call changed nothing, so
    it is retried (with a growing pause) instead of failing the whole backfill.
    """
    for attempt in range(1, attempts + 1):
        done = subprocess.run([AIRFLOW, *args], env=env, capture_output=True, text=True, timeout=timeout)
        if done.returncode == 0:
            return done.stdout
        if "database is locked" not in done.stderr or attempt == attempts:
            break
        print(f"airflow {' '.join(args)}: database is locked, retrying ({attempt}/{attempts - 1})", flush=True)
        time.sleep(3 * attempt)
    raise RuntimeError(f"airflow {' '.join(args)} failed: {error_line(done.stderr)}")


def use_write_ahead_log(database: Path) -> None:
    """Switch the SQLite database to write-ahead logging, so that reads (the polling below) and
    the scheduler's writes no longer lock each other out. The mode is stored in the database file."""
    connection = sqlite3.connect(database, timeout=30)
    try:
        connection.execute("PRAGMA journal_mode=WAL")
    finally:
        connection.close()


def metadata_rows(database: Path, query: str, *params) -> list[tuple]:
    """Rows from Airflow's SQLite database, opened read-only; [] while it is busy.

    The waits below poll this way, in milliseconds. Each `airflow` CLI call costs ~4 s of CPU
    (importing Airflow): polled every 10 s, that took a seventh of a 2-core machine away from the
    very tasks being waited for.
    """
    try:
        connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30)
        try:
            return connection.execute(query, params).fetchall()
        finally:
            connection.close()
    except sqlite3.OperationalError:
        return []


def json_output(text: str):
    """The JSON document in a CLI output that may also carry log lines."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith(("[", "{")) and not line.startswith("[2")), None)
    return json.loads("\n".join(lines[start:])) if start is not None else []


def _dates(start: str, end: str):
    import datetime as dt
    day, last = dt.date.fromisoformat(start), dt.date.fromisoformat(end)
    while day <= last:
        yield day
        day += dt.timedelta(days=1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--date", help="run encore_nightly for this logical date, YYYY-MM-DD")
    which.add_argument("--backfill", nargs=2, metavar=("FROM", "TO"), help="backfill encore_nightly for the dates FROM..TO")
    parser.add_argument("--airflow-home", default=str(REPO / "var" / "airflow"))
    parser.add_argument("--port", type=int, default=28080, help="API server port (not 8793: the worker log server uses it)")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds to wait for the run")
    args = parser.parse_args()

    start, end = args.backfill or (args.date, args.date)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))   # so that `finally` stops Airflow too
    home = Path(args.airflow_home).resolve()
    home.mkdir(parents=True, exist_ok=True)
    database = home / "airflow.db"
    env = {**os.environ, "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
           "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{database}",
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
           "AIRFLOW__CORE__PARALLELISM": "2", "AIRFLOW__API__PORT": str(args.port),
           "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://localhost:{args.port}/execution/",
           "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
           "ENCORE_AIRFLOW_END_DATE": end,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    print(f"airflow home {home}; migrating its database", flush=True)
    airflow(env, "db", "migrate", timeout=600)
    use_write_ahead_log(database)
    log_path = home / "standalone.log"
    with open(log_path, "ab") as log:
        server = subprocess.Popen([AIRFLOW, "standalone"], env=env, stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    print(f"airflow standalone started (pid {server.pid}, log {log_path})", flush=True)
    try:
        def parsed():
            return metadata_rows(database, "SELECT 1 FROM serialized_dag WHERE dag_id = ?", "encore_nightly")
        def exited():
            return f"airflow standalone exited with {server.returncode}" if server.poll() is not None else None
        wait_until("the DAG processor to parse encore_nightly", parsed, 300, every=5, died=exited, see=f"see {log_path}")
        # One date at a time, oldest first: a date's clean and features read the dates before it.
        airflow(env, "backfill", "create", "--dag-id", "encore_nightly", "--from-date", start, "--to-date", end,
                "--max-active-runs", "1")
        airflow(env, "dags", "unpause", "encore_nightly")
        print(f"backfill of encore_nightly {start}..{end} created; waiting", flush=True)
        dates = {d.isoformat() for d in _dates(start, end)}

        def runs_by_date():
            rows = metadata_rows(database, "SELECT substr(logical_date, 1, 10), run_id, state FROM dag_run "
                                           "WHERE dag_id = ? ORDER BY id", "encore_nightly")
            return {date: {"run_id": run_id, "state": state} for date, run_id, state in rows}

        def finished():
            runs = runs_by_date()
            done = all(runs.get(d, {}).get("state") in ("success", "failed") for d in dates)
            return runs if done else None
        runs = wait_until(f"encore_nightly runs for {', '.join(sorted(dates))}", finished, args.timeout, every=5,
                          died=exited, see=f"see {log_path}")
        ok = True
        for date in sorted(dates):
            run = runs[date]
            states = json_output(airflow(env, "tasks", "states-for-dag-run", "encore_nightly", run["run_id"], "-o", "json"))
            for ti in states:
                print(f"  {date} {ti.get('task_id'):<15} {ti.get('state')}")
            print(f"encore_nightly {date}: {run['state']} (run {run['run_id']})", flush=True)
            ok = ok and run["state"] == "success"
        return 0 if ok else 1
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)


if __name__ == "__main__":
    sys.exit(main())
