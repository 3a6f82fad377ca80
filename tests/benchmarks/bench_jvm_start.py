"""Benchmark: what a step's Spark driver JVM costs to start, with and without the class archive that
``encore setup`` dumps (encore/spark.py, Java's dynamic class data sharing).

    .venv/bin/python tests/benchmarks/bench_jvm_start.py [--runs 5]

Each run is a fresh Python process that builds the profile's Spark session (local[2], the local
profile's JVM options plus the C1-only JIT the tests' step processes use) and answers a first
query on a Delta table; it reports the wall time from the start of the process, and the CPU time
of the JVM up to that point (user + system, from /proc). The archive is the one ``encore setup``
left in paths.jars; runs without it point the JVM at no archive. Medians, and the ratio.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.benchmarks.bench_night import table  # noqa: E402

PROBE = """
import json, os, sys, time
started = time.time()
import psutil
from encore.config import load_config
from encore import spark as factory
if sys.argv[1] == "without":
    factory.class_archive = lambda config: None
config = load_config(environ={**os.environ, "ENCORE_HOME": sys.argv[2]})
session = factory.build_session(config, "bench-jvm-start")
folder = sys.argv[2] + "/probe"
if not os.path.isdir(folder):
    session.range(10).write.format("delta").save(folder)
session.read.format("delta").load(folder).count()
wall = time.time() - started
jvm = psutil.Process().children(recursive=True)
cpu = sum(p.cpu_times().user + p.cpu_times().system for p in jvm if p.name() == "java")
print(json.dumps({"wall": wall, "cpu": cpu}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    from encore.config import load_config
    from encore.spark import class_archive
    base = load_config(environ={**os.environ, "ENCORE__SPARK__MASTER": "local[2]"})
    archive = class_archive(base)
    if archive is None:
        raise SystemExit("no class archive: run `encore setup` (or ./dev.sh setup) first")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENCORE")}
    env.update({"ENCORE__SPARK__MASTER": "local[2]", "ENCORE__SPARK__CONF__SPARK.UI.ENABLED": "false",
                "ENCORE__SPARK__JAVA_OPTIONS": f"{base.spark.java_options} -XX:TieredStopAtLevel=1"})
    results = {"without": [], "with": []}
    with tempfile.TemporaryDirectory() as home:
        for _ in range(args.runs):
            for mode in ("without", "with"):   # interleaved: a busy moment of the host touches both
                done = subprocess.run([sys.executable, "-c", PROBE, mode, home], env=env, capture_output=True,
                                      text=True, timeout=300)
                if done.returncode != 0:
                    raise SystemExit(f"probe failed: {done.stderr.strip().splitlines()[-1:]}")
                results[mode].append(json.loads(done.stdout.strip().splitlines()[-1]))
    rows = []
    for mode in ("without", "with"):
        wall = statistics.median(r["wall"] for r in results[mode])
        cpu = statistics.median(r["cpu"] for r in results[mode])
        rows.append((f"{mode} the archive", f"{wall:.1f}", f"{cpu:.1f}",
                     f"{min(r['cpu'] for r in results[mode]):.1f}-{max(r['cpu'] for r in results[mode]):.1f}"))
    ratio = statistics.median(r["cpu"] for r in results["with"]) / statistics.median(r["cpu"] for r in results["without"])
    print(f"archive: {archive} ({archive.stat().st_size / 2 ** 20:.0f} MiB); {args.runs} runs each, medians")
    table(["driver JVM", "wall s to first query", "JVM CPU s", "JVM CPU range"], rows)
    print(f"JVM CPU with / without the archive: {ratio:.2f}")


if __name__ == "__main__":
    main()
