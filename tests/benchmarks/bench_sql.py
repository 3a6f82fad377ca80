"""How fast `encore sql` answers the analyst guide's queries, against bare DuckDB on the same files.

    .venv/bin/python tests/benchmarks/bench_sql.py [--home var] [--repeat 3]

Each query runs as a whole process, as an analyst runs it: `encore sql "…"` (config, table
lookup, DuckDB over the Delta tables through deltalake) against a bare Python process that opens
the same Delta tables with deltalake, hands them to DuckDB and runs the same query (the peer: what
one would write by hand). The median of ``--repeat`` runs of each; the ratio is encore / bare.
Goal: within 1.5x of bare DuckDB and under 2 s per query on the demo's tables (`./dev.sh demo`).
Both answers are compared row for row.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

QUERIES = {
    "top items": "SELECT * FROM gold.items WHERE as_of_date = (SELECT max(as_of_date) FROM gold.items) "
                 "ORDER BY popularity_rank LIMIT 10",
    "quarantine reasons": "SELECT reason, count(*) AS n FROM silver.plays_quarantine GROUP BY reason ORDER BY n DESC",
    "one listener's list": "SELECT rank, item_name, strategy, reason FROM warehouse.recommendations "
                           "WHERE user_id = (SELECT min(user_id) FROM warehouse.recommendations) ORDER BY rank LIMIT 10",
    "strategy mix": "SELECT strategy, count(DISTINCT user_id) AS users FROM warehouse.recommendations GROUP BY strategy",
    "pack sketches": "SELECT p.user_id, s.style, s.key, s.chords FROM (SELECT user_id, run_date, unnest(sketches) AS ref "
                     "FROM warehouse.inspiration_packs) p JOIN warehouse.sketches s ON s.run_date = p.run_date "
                     "AND s.sketch_id = p.ref.sketch_id ORDER BY p.user_id LIMIT 10",
    "plays per day": "SELECT date, count(*) AS plays, count(DISTINCT user_id) AS listeners FROM silver.plays "
                     "GROUP BY date ORDER BY date",
}

BARE = """
import json, re, sys, duckdb
from deltalake import DeltaTable
lakehouse, query = sys.argv[1], sys.argv[2]
con = duckdb.connect()
for layer, table in set(re.findall(r"\\b(bronze|silver|gold|warehouse)\\.(\\w+)", query)):
    con.register(f"{layer}_{table}", DeltaTable(f"{lakehouse}/{layer}/{table}").to_pyarrow_dataset())
rows = con.sql(re.sub(r"\\b(bronze|silver|gold|warehouse)\\.(\\w+)", r"\\1_\\2", query)).fetchall()
print(json.dumps(rows, default=str))
"""


def timed(argv: list[str], env: dict) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"bench_sql: {' '.join(argv[:3])} failed:\n{done.stderr[-2000:]}")
    return seconds, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", default=str(REPO / "var"), help="an Encore home with a night in it (default: var)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    home = Path(args.home).resolve()
    lakehouse = home / "lakehouse"
    if not (lakehouse / "warehouse" / "recommendations" / "_delta_log").is_dir():
        raise SystemExit(f"bench_sql: no night under {home}: run ./dev.sh demo first, or pass --home")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENCORE")}
    env["ENCORE_HOME"] = str(home)
    rows = []
    for label, query in QUERIES.items():
        ours, bare, same = [], [], None
        for _ in range(args.repeat):
            seconds, out = timed([str(BIN / "encore"), "sql", query, "--format", "json", "--limit", "100000"], env)
            ours.append(seconds)
            mine = [list(json.loads(line).values()) for line in out.splitlines()]
            seconds, out = timed([sys.executable, "-c", BARE, str(lakehouse), query], env)
            bare.append(seconds)
            peer = json.loads(out)
            same = json.dumps(mine, default=str, sort_keys=True) == json.dumps(
                [list(r) for r in peer], default=str, sort_keys=True) if same is not False else False
        a, b = statistics.median(ours), statistics.median(bare)
        rows.append((label, f"{a:.2f} s", f"{b:.2f} s", f"{a / b:.2f}x", "yes" if a < 2 and a / b <= 1.5 else "NO",
                     "yes" if same else "NO (see note)"))
    header = ("query", "encore sql", "bare DuckDB", "ratio", "goal met (<2 s, <=1.5x)", "same rows")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print(f"encore sql vs bare DuckDB, whole processes, median of {args.repeat}, home {home}")
    for r in [header, *rows]:
        print(" | ".join(str(c).ljust(w) for c, w in zip(r, widths)))


if __name__ == "__main__":
    main()
