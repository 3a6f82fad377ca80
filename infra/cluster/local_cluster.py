"""Real Spark and Ray clusters on this machine, for the ``cluster`` profile.

    .venv/bin/python infra/cluster/local_cluster.py up      # start both, wait until every node has joined
    .venv/bin/python infra/cluster/local_cluster.py status
    .venv/bin/python infra/cluster/local_cluster.py down

Spark standalone: a master (spark://127.0.0.1:7077, web UI :18080) and two workers (1 core, 2 GiB
each), started with pyspark's own ``spark-class``. Ray: a head (GCS :6379, dashboard and job
server :8265) and one more node, two logical CPUs each, started with ``ray start --block``. Each
Ray node's dashboard agent (which runs submitted jobs) listens on a free port chosen at start: on
Ray's default (52365) it would clash with any other Ray on the machine, and an agent that cannot
bind stays up without serving, so the head answers every job with "No available agent". These
are the addresses the ``cluster`` profile in encore/defaults.yaml uses. Every process runs from this
Python environment, so nodes import the same Encore and the same libraries; the lakehouse,
MLflow store and exports stay on the local disk, which every node of a one-machine cluster shares.

Processes and logs live under ``--state`` (default var/cluster); ``down`` stops exactly the
processes ``up`` started (never other Ray or Spark processes of the same user).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

from encore.devtools.waiting import wait_until

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

SPARK_MASTER_PORT = 7077
SPARK_UI_PORT = 18080
RAY_PORT = 6379
RAY_DASHBOARD_PORT = 8265
SPARK_WORKERS = 2
RAY_NODES = 2


def _spark_home() -> Path:
    import pyspark
    return Path(pyspark.__file__).parent


def _env() -> dict:
    return {**os.environ, "SPARK_HOME": str(_spark_home()), "PYSPARK_PYTHON": sys.executable,
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_AUTH_MODE": "token"}


def _ensure_ray_token() -> None:
    """Token auth on every node and client (the cluster profile's ray.auth_mode): the token is the
    user's ~/.ray/auth_token, created here when missing; processes of the same user read it there."""
    os.environ["RAY_AUTH_MODE"] = "token"   # this script is a client too (the health checks)
    subprocess.run([str(BIN / "ray"), "get-auth-token", "--generate"], env=_env(), check=True,
                   capture_output=True, text=True)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(2)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _processes(state: Path) -> dict:
    path = state / "processes.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _start(state: Path, name: str, argv: list[str]) -> None:
    log = open(state / f"{name}.log", "ab")
    proc = subprocess.Popen(argv, env=_env(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True, cwd=state)
    procs = _processes(state)
    procs[name] = proc.pid
    (state / "processes.json").write_text(json.dumps(procs, indent=1))
    print(f"  started {name} (pid {proc.pid}, log {state / (name + '.log')})", flush=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


def _wait(what: str, check, state: Path, timeout: float = 180.0) -> None:
    def died():
        dead = [name for name, pid in _processes(state).items() if not _alive(pid)]
        return f"{', '.join(dead)} exited" if dead else None
    wait_until(what, check, timeout, died=died, see=f"see the logs in {state}")


def spark_workers_alive() -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{SPARK_UI_PORT}/json/", timeout=5) as response:
        return sum(1 for w in json.load(response).get("workers", []) if w.get("state") == "ALIVE")


def ray_nodes_alive() -> int:
    """Alive Ray nodes, asked through Ray's own SDK: it carries the cluster's auth token (Ray 2.59+
    turns token auth on for new clusters and a plain HTTP request gets 401)."""
    from ray.util.state import list_nodes
    try:
        nodes = list_nodes(address=f"http://127.0.0.1:{RAY_DASHBOARD_PORT}", timeout=5, raise_on_missing_output=False)
    except Exception as exc:   # the dashboard is not up yet: connection refused, timeouts, 5xx
        raise OSError(str(exc)) from None
    return sum(1 for node in nodes if node.state == "ALIVE")


def up(state: Path) -> None:
    state.mkdir(parents=True, exist_ok=True)
    if any(_alive(pid) for pid in _processes(state).values()):
        raise SystemExit(f"a cluster from {state} is already running: run `down` first")
    (state / "processes.json").unlink(missing_ok=True)
    spark_class = str(_spark_home() / "bin" / "spark-class")
    print("spark standalone:", flush=True)
    _start(state, "spark-master", [spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                                   "--port", str(SPARK_MASTER_PORT), "--webui-port", str(SPARK_UI_PORT)])
    for n in range(1, SPARK_WORKERS + 1):
        work = state / f"spark-worker-{n}"
        work.mkdir(exist_ok=True)
        _start(state, f"spark-worker-{n}", [
            spark_class, "org.apache.spark.deploy.worker.Worker", f"spark://127.0.0.1:{SPARK_MASTER_PORT}",
            "--host", "127.0.0.1", "--cores", "1", "--memory", "2g", "--webui-port", str(SPARK_UI_PORT + n),
            "--work-dir", str(work)])
    _wait(f"{SPARK_WORKERS} Spark workers", lambda: spark_workers_alive() >= SPARK_WORKERS, state)
    print(f"  spark://127.0.0.1:{SPARK_MASTER_PORT} has {SPARK_WORKERS} workers", flush=True)

    print("ray:", flush=True)
    _ensure_ray_token()
    ray = str(BIN / "ray")
    # A short temp dir: Ray's Unix sockets live there and their paths have a length limit.
    temp_dir = f"/tmp/encore-ray-{RAY_PORT}"
    head_agent_port = _free_port()
    _start(state, "ray-head", [ray, "start", "--head", "--block", "--node-ip-address", "127.0.0.1",
                               "--port", str(RAY_PORT), "--num-cpus", "2", "--num-gpus", "0",
                               "--include-dashboard", "true", "--dashboard-host", "127.0.0.1",
                               "--dashboard-port", str(RAY_DASHBOARD_PORT), "--temp-dir", temp_dir,
                               "--dashboard-agent-listen-port", str(head_agent_port), "--disable-usage-stats"])
    _wait("the Ray head", lambda: ray_nodes_alive() >= 1, state)
    _wait(f"the Ray head's job agent on port {head_agent_port}", lambda: _listening(head_agent_port), state)
    for n in range(2, RAY_NODES + 1):
        _start(state, f"ray-node-{n}", [ray, "start", "--block", "--address", f"127.0.0.1:{RAY_PORT}",
                                        "--node-ip-address", "127.0.0.1", "--num-cpus", "2", "--num-gpus", "0",
                                        "--dashboard-agent-listen-port", str(_free_port()), "--disable-usage-stats"])
    _wait(f"{RAY_NODES} Ray nodes", lambda: ray_nodes_alive() >= RAY_NODES, state)
    print(f"  ray 127.0.0.1:{RAY_PORT} has {RAY_NODES} nodes; jobs at http://127.0.0.1:{RAY_DASHBOARD_PORT}", flush=True)
    print("cluster up: run steps with ENCORE_PROFILE=cluster", flush=True)


def down(state: Path) -> None:
    procs = _processes(state)
    # Ray nodes first (the head last), then Spark workers, then the master.
    for name in sorted(procs, key=lambda n: (not n.startswith("ray-node"), n != "ray-head",
                                             not n.startswith("spark-worker"))):
        pid = procs[name]
        if not _alive(pid):
            continue
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        try:
            wait_until(f"{name} to stop", lambda: not _alive(pid), 30, every=0.5)
        except TimeoutError:
            os.killpg(pid, signal.SIGKILL)
        print(f"  stopped {name} (pid {pid})", flush=True)
    (state / "processes.json").unlink(missing_ok=True)


def status(state: Path) -> int:
    os.environ["RAY_AUTH_MODE"] = "token"
    procs = _processes(state)
    for name, pid in procs.items():
        print(f"  {name:<15} pid {pid:<8} {'running' if _alive(pid) else 'exited'}")
    try:
        print(f"  spark workers alive: {spark_workers_alive()}; ray nodes alive: {ray_nodes_alive()}")
    except OSError as exc:
        print(f"  cluster not answering: {exc}")
        return 1
    return 0 if procs and all(_alive(p) for p in procs.values()) else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["up", "down", "status"])
    parser.add_argument("--state", default=str(REPO / "var" / "cluster"), help="pid files and logs")
    args = parser.parse_args()
    state = Path(args.state).resolve()
    if args.action == "up":
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        try:
            up(state)
        except BaseException:
            down(state)
            raise
        return 0
    if args.action == "down":
        down(state)
        return 0
    return status(state)


if __name__ == "__main__":
    sys.exit(main())
