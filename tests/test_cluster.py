"""The night through real clusters equals the local night.

infra/cluster/local_cluster.py brings up a Spark standalone cluster (master + 2 workers) and a Ray
cluster (head + 1 node) on this machine; ``airflow dags test encore_nightly`` then runs the date with
``ENCORE_PROFILE=cluster``: Spark steps through SparkSubmitOperator to the master, Ray steps as Ray
jobs to the head. The local night is the session's ``dag_night`` (a real scheduler's backfill in the
local profile, ending on this date); the cluster night runs on a copy of its home, so both use the same landing files, the same
champion models and the same seeds on the same lakehouse: the cluster night replaces the local night's
partitions, so this also checks that a rerun on another
engine gives the same tables. Recommendation lists and packs must be identical: scores come from
the same float32 products per user, whatever the number of actors, and every sketch is seeded.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import subprocess
import sys
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import REPO, make_config
from tests.homes import copy_home, small_night_env

DAY = dt.date(2026, 11, 20)
BIN = Path(sys.executable).parent
CLUSTER_SCRIPT = REPO / "infra" / "cluster" / "local_cluster.py"


RAY_JOB_CHECKS = """
import json, sys
from encore.config import load_config
from encore.pipeline.submission import _client, run_as_ray_job
config = load_config()
client = _client(config)
jobs = {j.entrypoint: j for j in client.list_jobs()}
said = []
score = jobs[f"encore score --date {sys.argv[1]}"].submission_id
run_as_ray_job(config, ["score", "--date", sys.argv[1]], score, echo=said.append)
jobs_after = len(client.list_jobs())
# A job that fails: its own error line comes back as the step's one line.
from encore.errors import EncoreError
try:
    run_as_ray_job(config, ["score", "--date", "1999-01-01"], "encore-failing-probe", echo=said.append, poll_s=1)
    failed = None
except EncoreError as exc:
    failed = str(exc)
print(json.dumps({"jobs": {e: j.status.value for e, j in jobs.items()}, "reattached": said[0],
                  "jobs_after": jobs_after, "failed": failed}))
"""


ANOTHER_RAY = """
import sys, time, ray
ray.init(address="local", num_cpus=1, include_dashboard=False)
print("ready", flush=True)
sys.stdin.read()
"""


@contextmanager
def another_ray_on_this_machine():
    """A local Ray of another process (as a local `encore` step or another test worker starts): its agent
    holds Ray's default agent port, which the cluster's nodes must not need."""
    holder = subprocess.Popen([sys.executable, "-c", ANOTHER_RAY], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, env={**os.environ, "RAY_AUTH_MODE": "disabled"})
    try:
        assert holder.stdout.readline().strip() == "ready"
        yield
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)


@contextmanager
def local_clusters(state: Path):
    up = subprocess.run([sys.executable, str(CLUSTER_SCRIPT), "up", "--state", str(state)],
                        capture_output=True, text=True, timeout=600)
    try:
        assert up.returncode == 0, up.stdout[-2000:] + up.stderr[-2000:]
        yield
    finally:
        subprocess.run([sys.executable, str(CLUSTER_SCRIPT), "down", "--state", str(state)],
                       capture_output=True, text=True, timeout=300)


def _outputs(config):
    """The date's recommendation lists and packs, without the run-specific columns (run ids, versions)."""
    from encore.delta_reader import read_filtered
    recs = read_filtered(config, "warehouse.recommendations", [("run_date", "=", DAY)],
                         ["user_id", "rank", "item_id", "score", "strategy", "reason_item_id"]).frame
    recs = recs.sort_values(["user_id", "rank"]).reset_index(drop=True)
    packs = read_filtered(config, "warehouse.inspiration_packs", [("run_date", "=", DAY)],
                          ["user_id", "pack_id", "styles", "sketches", "seed_items"]).frame
    stored = read_filtered(config, "warehouse.sketches", [("run_date", "=", DAY)],
                           ["sketch_id", "seed", "key", "chords", "midi"]).frame
    sketches = {s.sketch_id: (s.seed, s.key, s.chords, hashlib.sha256(s.midi).hexdigest()) for s in stored.itertuples()}
    pack_keys = sorted(
        (row.user_id, row.pack_id, tuple(row.styles), tuple(s["item_id"] for s in row.seed_items),
         tuple((s["sketch_id"], *sketches[s["sketch_id"]]) for s in row.sketches))
        for row in packs.itertuples())
    return recs, pack_keys


def _run(argv: list[str], env: dict, timeout: int) -> str:
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    return output


@pytest.mark.cluster
def test_the_night_through_spark_and_ray_clusters_equals_the_local_night(airflow_home, dag_night, tmp_path):
    assert dag_night.returncode == 0, "the local night (the scheduler's backfill) failed: " + dag_night.output[-3000:]
    env = small_night_env(copy_home(dag_night.home, tmp_path / "encore"))
    config = make_config(Path(env["ENCORE_HOME"]), **{k: v for k, v in env.items() if k.startswith("ENCORE__")})
    base = {k: v for k, v in os.environ.items() if not k.startswith("ENCORE")}
    local_recs, local_packs = _outputs(config)
    assert len(local_recs) > 0 and len(local_packs) > 0

    # The cluster profile's own Spark settings, less the C2 compiler (tests/conftest.py PROCESS_ENV):
    # each step starts a driver and an executor per worker for seconds of work.
    cluster_env = {k: v for k, v in env.items()
                   if not k.startswith("ENCORE__SPARK__") or k == "ENCORE__SPARK__JAVA_OPTIONS"}
    cluster_env.update({"ENCORE_PROFILE": "cluster", "ENCORE__AIRFLOW__RETRIES": "0"})
    with another_ray_on_this_machine(), local_clusters(tmp_path / "cluster"):
        output = _run([str(BIN / "airflow"), "dags", "test", "encore_nightly", DAY.isoformat()],
                      {**base, **cluster_env}, 1500)
        finished = [line for line in output.splitlines() if "DagRun Finished: dag_id=encore_nightly" in line]
        assert finished and "state=success" in finished[-1], output[-4000:]
        assert output.count("Spark-Submit cmd: spark-submit --master spark://127.0.0.1:7077") == 5
        with urllib.request.urlopen("http://127.0.0.1:18080/json/", timeout=10) as response:
            apps = [(a["name"], a["state"]) for a in json.load(response)["completedapps"]]
        for step in ("ingest", "clean", "features", "score", "generate", "export", "validate"):
            assert (f"encore-{step}", "FINISHED") in apps, apps   # score and generate: Spark from a Ray job
        # Ray's job client reads RAY_AUTH_MODE once per process, and this test process has used Ray
        # before with auth off: the client checks run in a process of their own, in the cluster profile.
        checks = _run([sys.executable, "-c", RAY_JOB_CHECKS, str(DAY)],
                      {**base, **cluster_env, "PYTHONPATH": str(REPO)}, 300)
        result = json.loads(checks.strip().splitlines()[-1])
        for step in ("ensure-models", "score", "generate"):
            assert result["jobs"][f"encore {step} --date {DAY}"] == "SUCCEEDED", result
        # A retried task with the same submission id re-attaches to the finished job: no second run.
        assert result["reattached"].startswith("re-attaching to Ray job ") and "(SUCCEEDED)" in result["reattached"]
        assert result["jobs_after"] == len(result["jobs"])
        # A failed Ray job ends the step with the job's own error line, once.
        failed = result["failed"] or ""
        assert failed.startswith("Ray job encore-failing-probe (score --date 1999-01-01) ended FAILED: "
                                 "score 1999-01-01: "), failed
        assert "encore: error" not in failed and "Traceback" not in failed, failed

    cluster_recs, cluster_packs = _outputs(config)
    assert cluster_recs.drop(columns="score").equals(local_recs.drop(columns="score"))
    assert (cluster_recs["score"] - local_recs["score"]).abs().max() < 1e-6
    assert cluster_packs == local_packs
    assert (Path(config.path("exports")) / f"run_date={DAY}" / "_SUCCESS").is_file()
