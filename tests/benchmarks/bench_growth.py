"""Benchmark: months of nights on a small world, with the weekly upkeep. Does the lakehouse stay flat?

    .venv/bin/python tests/benchmarks/bench_growth.py                  # 60 nights (about an hour on 2 cores)
    .venv/bin/python tests/benchmarks/bench_growth.py --nights 21 --home /tmp/growth

A fresh home gets --nights days of synthetic logs (--users listeners). Every night runs the whole
nightly DAG in this process (``run_night``: ingest -> ... -> validate); every 7th night then runs
what encore_training's weekly run ends with: a new recommender (promoted only past its gate) and
``encore maintain``. The retention settings are shortened so that retention starts inside the
run: 14-day feature window, silver and bronze (plays and catalogue) 16 dates, quarantine 14, gold 7 snapshots, warehouse
14 run dates, exports 7. The run compresses months into an hour, so VACUUM runs with a window of
0 hours and the Delta log keeps no history past its pins and newest checkpoint (both forced; nothing
else writes to this home). The recommender's champion pins its training
snapshot of gold.interactions and gold.items: retention and compaction leave that one date alone, so
its files stay current and the 0-hour window applies to those tables too.

Per night it prints: lakehouse bytes on storage (and how many of them are Delta logs), data files
on storage per table (Parquet files, Delta log excluded), and the median time of a per-user query on silver.plays and on
warehouse.recommendations (DuckDB through ``encore sql``'s reader, 5 runs). At the end: the
ratios of the last upkeep night to the first upkeep night past every window (night 28), and of the
last night to the night 4 weeks before it (the same point of the weekly cycle), which should be
near 1 for bytes, files and query times.
Results go to --out (JSON) as well; docs/benchmarks.md keeps the latest table.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.benchmarks.bench_night import table  # noqa: E402
from tests.homes import LENIENT_CHECKS, TINY  # noqa: E402

SHOWN = ("bronze.plays_raw", "silver.plays", "silver.plays_quarantine", "gold.interactions",
         "warehouse.recommendations", "warehouse.inspiration_packs")
SETTINGS = {
    "ENCORE__FEATURES__WINDOW_DAYS": "14",
    "ENCORE__MAINTAIN__VACUUM_RETENTION_HOURS": "0", "ENCORE__MAINTAIN__LOG_RETENTION_HOURS": "0",
    "ENCORE__MAINTAIN__KEEP__BRONZE.PLAYS_RAW": "16", "ENCORE__MAINTAIN__KEEP__BRONZE.CATALOG_RAW": "16",
    "ENCORE__MAINTAIN__KEEP__SILVER.PLAYS": "16",
    "ENCORE__MAINTAIN__KEEP__SILVER.PLAYS_QUARANTINE": "14", "ENCORE__MAINTAIN__KEEP__GOLD.INTERACTIONS": "7",
    "ENCORE__MAINTAIN__KEEP__GOLD.ITEMS": "7", "ENCORE__MAINTAIN__KEEP__GOLD.USER_PROFILES": "7",
    "ENCORE__MAINTAIN__KEEP__WAREHOUSE.RECOMMENDATIONS": "14", "ENCORE__MAINTAIN__KEEP__WAREHOUSE.SKETCHES": "14",
    "ENCORE__MAINTAIN__KEEP__WAREHOUSE.INSPIRATION_PACKS": "14", "ENCORE__EXPORT__KEEP_RUNS": "7",
    # A small night: few sketches, no search; no bots (with 300 listeners, the generator's bots alone would
    # put a third of the events in quarantine and clean would hold every date back).
    "ENCORE__GENERATE__BOTS": "0",
    "ENCORE__RECOMMENDER__SEARCH__TRIALS": "0", "ENCORE__RECOMMENDER__PARAMS__EPOCHS": "10",
    "ENCORE__RECOMMENDER__PARAMS__ENSEMBLE": "1", "ENCORE__SCORE__TOP_K": "20",
    "ENCORE__PACKS__POOL_PER_CONDITION": "2", "ENCORE__PACKS__CONDITIONS_PER_STYLE": "2", "ENCORE__PACKS__BARS": "4",
    **TINY, **LENIENT_CHECKS,   # the tests' tiny music model and lenient checks: sketches only need to decode
}


def storage(lakehouse: Path) -> tuple[int, int, dict[str, int]]:
    """(bytes of every file under the lakehouse, bytes of the Delta logs among them, data files per table)
    as they are on storage."""
    total, log_bytes, files = 0, 0, {}
    for path in lakehouse.rglob("*"):
        if path.is_file():
            size = path.stat().st_size
            total += size
            parts = path.relative_to(lakehouse).parts
            if "_delta_log" in parts:
                log_bytes += size
            if len(parts) >= 2 and path.suffix == ".parquet" and "_delta_log" not in parts:
                name = f"{parts[0]}.{parts[1]}"
                files[name] = files.get(name, 0) + 1
    return total, log_bytes, files


def query_ms(config, query: str, runs: int = 5) -> float:
    from encore import sql
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        sql.run_duckdb(config, query, None)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nights", type=int, default=60)
    parser.add_argument("--users", type=int, default=300)
    parser.add_argument("--events-per-day", type=int, default=6000)
    parser.add_argument("--home", type=Path, help="a new folder (default: a temporary one)")
    parser.add_argument("--out", type=Path, default=Path("growth-results.json"))
    args = parser.parse_args()

    import logging
    logging.basicConfig(level=logging.WARNING)
    from encore.config import load_config
    from encore.lakehouse import open_lakehouse
    from encore.pipeline.night import run_night
    from encore.sources.generate_logs import generate_from_config
    from jobs.maintain import maintain
    from ray_jobs.train_recommender import train_recommender

    home = args.home or Path(tempfile.mkdtemp(prefix="encore-growth-"))
    end = dt.date(2026, 11, 20)
    first = end - dt.timedelta(days=args.nights - 1)
    env = {**SETTINGS, "ENCORE_HOME": str(home), "ENCORE__GENERATE__DAYS": str(args.nights),
           "ENCORE__GENERATE__END_DATE": end.isoformat(), "ENCORE__GENERATE__USERS": str(args.users),
           "ENCORE__GENERATE__ITEMS": str(args.users * 3), "ENCORE__GENERATE__EVENTS_PER_DAY": str(args.events_per_day)}
    config = load_config(environ=env)
    generate_from_config(config)
    lake = open_lakehouse(config, "encore-bench-growth")
    lakehouse = Path(config.path("lakehouse"))
    rows, results = [], []
    columns = ["night", "date", "lakehouse MB", "of which log MB", *(f"files {t}" for t in SHOWN), "silver user query ms",
               "recs user query ms", "night s", "upkeep"]
    for night in range(1, args.nights + 1):
        day = first + dt.timedelta(days=night - 1)
        started = time.perf_counter()
        run_night(lake, day)
        seconds = time.perf_counter() - started
        upkeep = ""
        if night % 7 == 0:
            trained = train_recommender(config, day, search_trials=0)
            done = maintain(lake, force=True)
            upkeep = (f"recommender v{trained.model_version} {'promoted' if trained.decision.promoted else 'kept out'}; "
                      f"maintain: {sum(len(u.dates_deleted) for u in done.tables)} dates, "
                      f"{sum(u.files_vacuumed for u in done.tables)} files vacuumed, "
                      f"{sum(u.log_entries_deleted for u in done.tables)} log entries deleted")
        size, log_bytes, files = storage(lakehouse)
        user = lake.read("warehouse.recommendations").where(f"run_date = DATE'{day}'").first()["user_id"]
        silver_ms = query_ms(config, f"SELECT count(*), sum(ms_played) FROM silver.plays WHERE user_id = '{user}'")
        recs_ms = query_ms(config, f"SELECT rank, item_id FROM warehouse.recommendations WHERE user_id = '{user}' "
                                   f"AND run_date = DATE'{day}' ORDER BY rank")
        result = {"night": night, "date": str(day), "bytes": size, "log_bytes": log_bytes, "files": files, "silver_query_ms": silver_ms,
                  "recs_query_ms": recs_ms, "night_seconds": seconds, "upkeep": upkeep}
        results.append(result)
        rows.append((night, day, f"{size / 1e6:.1f}", f"{log_bytes / 1e6:.1f}", *(files.get(t, 0) for t in SHOWN), f"{silver_ms:.1f}",
                     f"{recs_ms:.1f}", f"{seconds:.0f}", upkeep or "-"))
        print(f"night {night}/{args.nights} {day}: {size / 1e6:.1f} MB ({log_bytes / 1e6:.1f} MB of Delta log), {sum(files.values())} data files, "
              f"{seconds:.0f} s {upkeep}", flush=True)
        args.out.write_text(json.dumps({"settings": SETTINGS, "users": args.users, "nights": results}, indent=1))

    table(columns, rows)
    # Compare nights at the same point of the weekly cycle: the last upkeep night with the first one
    # past every window (4 weeks), and the last night with the night 4 weeks before it.
    settled = next((r for r in results if r["night"] >= 28 and r["upkeep"]), None)
    last_upkeep = next((r for r in reversed(results) if r["upkeep"]), None)
    same_phase = {r["night"]: r for r in results}
    for later, earlier, what in ((last_upkeep, settled, "after upkeep"),
                                 (results[-1], same_phase.get(results[-1]["night"] - 28), "4 weeks apart")):
        if later and earlier and later is not earlier:
            print(f"\nnight {later['night']} vs night {earlier['night']} ({what}): bytes x"
                  f"{later['bytes'] / earlier['bytes']:.2f}, data files x"
                  f"{sum(later['files'].values()) / max(sum(earlier['files'].values()), 1):.2f}, silver query x"
                  f"{later['silver_query_ms'] / earlier['silver_query_ms']:.2f}, recs query x"
                  f"{later['recs_query_ms'] / earlier['recs_query_ms']:.2f}")
    print(f"\nhome: {home}; results: {args.out}")


if __name__ == "__main__":
    main()
