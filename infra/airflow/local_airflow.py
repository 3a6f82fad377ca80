"""Run the project's DAGs on a real Airflow on this machine and wait for one nightly run.

    .venv/bin/python infra/airflow/local_airflow.py --date 2026-11-20 [--airflow-home var/airflow] [--port 28080]

Starts ``airflow standalone`` (scheduler, DAG processor, triggerer and API server, LocalExecutor,
SQLite) with ``dags/`` as its DAGs folder, waits until ``encore_nightly`` is parsed, triggers it for
the date, waits for the run to finish, prints each task's state, and stops Airflow. Exit status 0
means the run succeeded. The DAGs' schedules are switched off here (``ENCORE_AIRFLOW_SCHEDULES=off``)
so that unpausing does not also start the latest scheduled interval. Encore settings come from the
environment as usual (``ENCORE_HOME``, ``ENCORE_PROFILE``, ``ENCORE__…``).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
AIRFLOW = str(Path(sys.executable).parent / "airflow")


def airflow(env: dict, *args: str, timeout: int = 120) -> str:
    done = subprocess.run([AIRFLOW, *args], env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"airflow {' '.join(args)} failed: {done.stderr.strip().splitlines()[-1:]}")
    return done.stdout


def json_output(text: str):
    """The JSON document in a CLI output that may also carry log lines."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith(("[", "{")) and not line.startswith("[2")), None)
    return json.loads("\n".join(lines[start:])) if start is not None else []


def wait_for(what: str, check, timeout: float, every: float = 5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(every)
    raise TimeoutError(f"gave up waiting for {what} after {timeout:.0f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--date", required=True, help="logical date of the encore_nightly run, YYYY-MM-DD")
    parser.add_argument("--airflow-home", default=str(REPO / "var" / "airflow"))
    parser.add_argument("--port", type=int, default=28080, help="API server port (not 8793: the worker log server uses it)")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds to wait for the run")
    args = parser.parse_args()

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))   # so that `finally` stops Airflow too
    home = Path(args.airflow_home).resolve()
    home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
           "AIRFLOW__CORE__PARALLELISM": "2", "AIRFLOW__API__PORT": str(args.port),
           "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://localhost:{args.port}/execution/",
           "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5", "ENCORE_AIRFLOW_SCHEDULES": "off",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    print(f"airflow home {home}; migrating its database", flush=True)
    airflow(env, "db", "migrate", timeout=600)
    log_path = home / "standalone.log"
    with open(log_path, "ab") as log:
        server = subprocess.Popen([AIRFLOW, "standalone"], env=env, stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    print(f"airflow standalone started (pid {server.pid}, log {log_path})", flush=True)
    try:
        def parsed():
            dags = json_output(airflow(env, "dags", "list", "-o", "json"))
            return any(d.get("dag_id") == "encore_nightly" for d in dags)
        wait_for("the DAG processor to parse encore_nightly", parsed, 300)
        run_id = f"encore-local-{args.date}-{int(time.time())}"
        airflow(env, "dags", "unpause", "encore_nightly")
        airflow(env, "dags", "trigger", "encore_nightly", "-l", f"{args.date}T00:00:00+00:00", "-r", run_id)
        print(f"triggered encore_nightly for {args.date} (run {run_id}); waiting", flush=True)

        def finished():
            if server.poll() is not None:
                raise RuntimeError(f"airflow standalone exited with {server.returncode}: see {log_path}")
            runs = json_output(airflow(env, "dags", "list-runs", "encore_nightly", "-o", "json"))
            state = next((r.get("state") for r in runs if r.get("run_id") == run_id), None)
            return state if state in ("success", "failed") else None
        state = wait_for(f"run {run_id}", finished, args.timeout, every=10)
        states = json_output(airflow(env, "tasks", "states-for-dag-run", "encore_nightly", run_id, "-o", "json"))
        for ti in states:
            print(f"  {ti.get('task_id'):<15} {ti.get('state')}")
        print(f"encore_nightly {args.date}: {state}")
        return 0 if state == "success" else 1
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)


if __name__ == "__main__":
    sys.exit(main())
