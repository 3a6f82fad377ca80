"""Benchmark: recommender fit time per epoch, search trials per hour, and the quality table.

    .venv/bin/python tests/benchmarks/bench_recommender.py                       # 10x synthetic only
    .venv/bin/python tests/benchmarks/bench_recommender.py --hetrec-dir ../shared/data/lastfm-hetrec2011
    .venv/bin/python tests/benchmarks/bench_recommender.py --hetrec-dir DIR --trials 8 --skip-synthetic

Each data set goes through the real pipeline into a temporary home (Spark ingest -> clean ->
features into Delta), then:
  * fit time per epoch of LightFM with the configured parameters, at 1 and 2 threads;
  * a real `train-recommender` run (Ray Tune search with --trials trials, final fit, evaluation,
    MLflow in the temporary home): search wall time -> trials per hour on this machine;
  * the comparison table of that run (popularity, item-kNN, EASE, LightFM, and the candidate)
    on the protocol's held-out split.
"10x synthetic" is the embedded synthetic generator at ten times the demo's users, artists and
events (5,000 users, 20,000 artists, 600,000 events over 3 days).
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from encore.config import load_config  # noqa: E402

DAY = dt.date(2026, 11, 20)


def build_gold(config, source: str, hetrec_dir: str | None) -> None:
    from jobs.clean import clean_date
    from jobs.features import build_features
    from encore.sources.generate_logs import generate
    from jobs.ingest import ingest_hetrec, ingest_landing
    from encore.lakehouse import open_lakehouse
    lake = open_lakehouse(config, "bench-recommender")
    try:
        if source == "hetrec":
            ingest_hetrec(lake, hetrec_dir, DAY)
            clean_date(lake, DAY)
        else:
            written = generate(config.path("landing"), "synthetic", DAY, days=3, seed=7, events_per_day=200_000,
                               users=5_000, items=20_000, fault_rate=0.02, bots=2, workers=2)
            ingest_landing(lake)
            for day in sorted(written):
                clean_date(lake, dt.date.fromisoformat(day))
        build_features(lake, DAY)
    finally:
        lake.spark.stop()


def epoch_seconds(config, threads: int, epochs: int = 3) -> float:
    from ray_jobs import lightfm_model as lm
    from ray_jobs import recsys
    from ray_jobs.train_recommender import load_gold
    data, _ = load_gold(config, DAY)
    train, _ = recsys.split_holdout(data)
    params = {**lm.DEFAULT_PARAMS, **config.section("recommender")["params"], "epochs": epochs, "ensemble": 1}
    started = time.perf_counter()
    lm.fit(data, train, params, seed=1, threads=threads)
    return (time.perf_counter() - started) / epochs


def run(label: str, source: str, hetrec_dir: str | None, trials: int, workdir: Path, max_epochs: int | None) -> dict:
    from ray_jobs.train_recommender import train_recommender
    home = workdir / label
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENCORE")}
    if max_epochs:
        env["ENCORE__RECOMMENDER__PARAMS__EPOCHS"] = str(max_epochs)
    config = load_config(environ={**env, "ENCORE_HOME": str(home)})
    started = time.perf_counter()
    build_gold(config, source, hetrec_dir)
    gold_seconds = time.perf_counter() - started
    per_epoch = {t: epoch_seconds(config, t) for t in (1, 2)}
    started = time.perf_counter()
    result = train_recommender(config, DAY, search_trials=trials)
    total = time.perf_counter() - started
    trial_rows = result.trials
    search_wall = float(trial_rows["reported_at"].max() - trial_rows["started_at"].min())
    shape = result.bundle.seen.shape
    return {"label": label, "users": shape[0], "items": shape[1], "interactions": int(result.bundle.seen.nnz),
            "gold_seconds": gold_seconds, "epoch_1t": per_epoch[1], "epoch_2t": per_epoch[2],
            "trials": len(trial_rows), "search_seconds": search_wall,
            "trials_per_hour": len(trial_rows) / search_wall * 3600, "train_seconds": total,
            "params": result.params, "comparison": result.comparison}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hetrec-dir", help="HetRec Last.fm-2K folder (adds the HetRec rows)")
    parser.add_argument("--trials", type=int, default=4, help="search trials per data set (default 4)")
    parser.add_argument("--max-epochs", type=int, help="cap LightFM epochs (default: the configured 150)")
    parser.add_argument("--skip-synthetic", action="store_true")
    parser.add_argument("--workdir", help="where the homes go, kept (default: a temp dir, removed at the end)")
    args = parser.parse_args()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="encore-bench-rec-"))
    results = []
    try:
        if args.hetrec_dir:
            results.append(run("hetrec", "hetrec", args.hetrec_dir, args.trials, workdir, args.max_epochs))
        if not args.skip_synthetic:
            results.append(run("synthetic-10x", "synthetic", None, args.trials, workdir, args.max_epochs))
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)

    print(f"\nMachine: {os.cpu_count()} cores. Fit: LightFM with the configured parameters; "
          f"at most {args.max_epochs or 'the configured'} epochs per trial.\n")
    print(f"{'data':<14} {'users':>6} {'items':>6} {'interactions':>12} {'s/epoch 1 thr':>14} {'s/epoch 2 thr':>14} "
          f"{'trials':>6} {'search s':>9} {'trials/hour':>11}")
    for r in results:
        print(f"{r['label']:<14} {r['users']:>6} {r['items']:>6} {r['interactions']:>12} {r['epoch_1t']:>14.3f} "
              f"{r['epoch_2t']:>14.3f} {r['trials']:>6} {r['search_seconds']:>9.0f} {r['trials_per_hour']:>11.1f}")
    for r in results:
        print(f"\nQuality on {r['label']} (protocol's held-out 20%, seed 42); chosen: "
              f"{ {k: r['params'][k] for k in ('no_components', 'learning_rate', 'max_sampled', 'epochs', 'blend_ease')} }")
        cols = ["model", "precision_at_10", "recall_at_10", "ndcg_at_10", "coverage", "long_tail_share"]
        print(r["comparison"][cols].to_string(index=False, float_format=lambda v: f"{v:.4f}"))


if __name__ == "__main__":
    main()
