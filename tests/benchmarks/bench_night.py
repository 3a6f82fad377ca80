"""Benchmark: nightly scoring against the machine's matrix-multiply roofline and LightFM's own
``predict``, sketch generation, and (optionally) the wall time of a whole night on HetRec.

    .venv/bin/python tests/benchmarks/bench_night.py                        # scoring + generation
    .venv/bin/python tests/benchmarks/bench_night.py --hetrec-dir ../shared/data/lastfm-hetrec2011 --night

Scoring (HetRec's shape: 1,892 users x 17,632 artists, 128 factors, or --users/--items):
  * roofline: float32 GEMM rate of this machine (numpy/BLAS, all cores), best of 3;
  * matrix part: the blocked ``U[block] @ V.T + b`` products alone, as a share of that roofline;
  * scoring: the whole per-block work of a scoring actor (matrix product, played-item mask,
    top-50, reasons) in one process, users/s;
  * Ray Data: the same through ``map_batches`` with the actor pool (what ``encore score`` runs);
  * LightFM ``predict`` over the same (user, item) pairs, 2 threads (on a sample of users), and
    the ratio.
Generation: sketches/s of ``generate_checked`` (KV cache, batched, checks included) with the
champion music model of --home (run ``./dev.sh demo`` first), or skipped.
Night (--night): HetRec replayed at --scale 0.1 over --days dates (30: fewer days make most heavy
HetRec listeners exceed the bot rule) into a fresh home; the earlier
dates are ingested and cleaned, then ``encore night`` runs for the last date twice: first with
no models (it trains them, demo profile), then again as a steady-state night.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))


def table(columns, rows):
    widths = [max(len(str(c)), *(len(str(r[i])) for r in rows)) for i, c in enumerate(columns)]
    print("| " + " | ".join(str(c).ljust(w) for c, w in zip(columns, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print("| " + " | ".join(str(v).ljust(w) for v, w in zip(r, widths)) + " |")


def gemm_rate(n: int = 2048) -> float:
    a, b = np.random.rand(n, n).astype(np.float32), np.random.rand(n, n).astype(np.float32)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(3))
    return 2 * n ** 3 / best


def _timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def synthetic_interactions(users: int, items: int, per_user: int, seed: int = 0) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    popularity = 1 / np.arange(1, items + 1) ** 0.9
    popularity /= popularity.sum()
    rows = np.repeat(np.arange(users), per_user)
    cols = rng.choice(items, size=users * per_user, p=popularity)
    m = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(users, items))
    m.data[:] = 1.0
    return m


def scoring(users: int, items: int, dim: int, top_k: int, block: int, actors: int) -> None:
    from lightfm import LightFM
    import pandas as pd
    from ray_jobs.recommender_model import RecommenderBundle
    from ray_jobs.score import BlockScorer, ScoringContext

    plays = synthetic_interactions(users, items, 50)
    # As deployed: item features are the identity plus ~10 of 500 tags (tag_share 0.8), so LightFM's
    # predict sums each item's feature embeddings per pair; the bundle holds the summed factors.
    rng = np.random.default_rng(1)
    tag_rows = np.repeat(np.arange(items), 10)
    tag_matrix = sp.csr_matrix((np.full(items * 10, 0.08, dtype=np.float32), (tag_rows, rng.integers(0, 500, items * 10))),
                               shape=(items, 500))
    item_features = sp.hstack([sp.identity(items, dtype=np.float32, format="csr") * 0.2, tag_matrix]).tocsr()
    model = LightFM(no_components=dim, loss="warp", random_state=1)
    model.fit(plays.tocoo(), item_features=item_features, epochs=1, num_threads=2)
    item_bias, item_factors = model.get_item_representations(item_features)
    _, user_factors = model.get_user_representations()
    plain = LightFM(no_components=dim, loss="warp", random_state=1)
    plain.fit(plays.tocoo(), epochs=1, num_threads=2)
    user_ids = np.array([f"u{i}" for i in range(users)], dtype=object)
    item_ids = np.array([f"i{i}" for i in range(items)], dtype=object)
    bundle = RecommenderBundle(user_ids, item_ids, user_factors.astype(np.float32), item_factors.astype(np.float32),
                               item_bias.astype(np.float32), plays, np.asarray(plays.sum(axis=0)).reshape(-1))
    tags = sp.csr_matrix((items, 1), dtype=np.float32)
    context = ScoringContext(bundle, item_ids, item_ids, np.linspace(1, 0, items, dtype=np.float32), tags,
                             np.array(["t"], dtype=object), user_ids, np.arange(users), sp.csr_matrix((users, 1)),
                             plays, top_k)
    peak = gemm_rate()
    flops = 2.0 * users * items * dim
    blocks = [np.arange(s, min(s + block, users)) for s in range(0, users, block)]
    import ray
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    ref = ray.put(context)
    scorer = BlockScorer([ref])
    # The product as the scoring actor computes it (torch, into its reused buffer).
    matrix = min(_timed(lambda: [scorer._scores(b) for b in blocks]) for _ in range(3))
    whole = min(_timed(lambda: [scorer({"row": b}) for b in blocks]) for _ in range(2))
    import ray.data
    ray.data.DataContext.get_current().enable_progress_bars = False

    def through_ray():
        ds = ray.data.from_pandas(pd.DataFrame({"row": np.arange(users)}), override_num_blocks=len(blocks))
        out = ds.map_batches(BlockScorer, fn_constructor_kwargs={"context_ref": [ref]}, batch_format="numpy",
                             batch_size=block, num_cpus=1, compute=ray.data.ActorPoolStrategy(size=actors))
        assert out.count() == users * top_k
    through_ray()   # actor start-up and first-call costs, as on a cold night
    ray_seconds = _timed(through_ray)

    sample = min(users, 100)
    u = np.repeat(np.arange(sample, dtype=np.int32), items)
    i = np.tile(np.arange(items, dtype=np.int32), sample)
    predict = _timed(lambda: model.predict(u, i, item_features=item_features, num_threads=2)) * users / sample
    predict_plain = _timed(lambda: plain.predict(u, i, num_threads=2)) * users / sample
    ray.shutdown()

    print(f"\nScoring {users:,} users x {items:,} items, {dim} factors, top-{top_k}, blocks of {block} users "
          f"({os.cpu_count()} cores)\n")
    table(["what", "seconds", "users/s", "GFLOP/s", "vs roofline / vs predict"], [
        ("float32 GEMM roofline (2048^3, BLAS)", "-", "-", f"{peak / 1e9:.1f}", "1.00"),
        ("matrix part: U[block] @ V.T + b", f"{matrix:.3f}", f"{users / matrix:,.0f}", f"{flops / matrix / 1e9:.1f}",
         f"{flops / matrix / peak:.2f} of roofline"),
        ("scoring actor work (matmul, mask, top-50, reasons)", f"{whole:.3f}", f"{users / whole:,.0f}", "-",
         f"{predict / whole:.1f}x faster than predict"),
        (f"Ray Data map_batches, {actors} actors", f"{ray_seconds:.3f}", f"{users / ray_seconds:,.0f}", "-",
         f"{predict / ray_seconds:.1f}x faster than predict"),
        (f"LightFM predict with the tag features, 2 threads ({sample} users, extrapolated)", f"{predict:.3f}",
         f"{users / predict:,.0f}", "-", "1"),
        ("LightFM predict, identity features only (its best case)", f"{predict_plain:.3f}",
         f"{users / predict_plain:,.0f}", "-", f"actor work {predict_plain / whole:.1f}x faster"),
    ])


def generation(home: str, sketches: int, bars: int) -> None:
    from encore.config import load_config
    from encore import tracking
    from encore.delta_reader import read_table
    from ray_jobs.music_bundle import generate_checked, load_generator
    os.environ["ENCORE_HOME"] = home
    config = load_config()
    name = str(config.get("music.model_name"))
    champion = tracking.champion(config, name)
    if champion is None:
        print(f"\nGeneration: skipped, no champion music model in {home} (run ./dev.sh demo first)")
        return
    generator = load_generator(f"models:/{name}/{champion.version}")
    corpus = read_table(config, "gold.music_sequences", None, ["melody", "split", "style"]).frame
    train = corpus[corpus["split"] == "train"]
    intervals = [np.diff(np.asarray(m)) for m in train["melody"]]
    style = train["style"].mode()[0]
    rules = config.section("music")["generate"]
    conditions = [(style, "D major", "medium")] * sketches
    started = time.perf_counter()
    done, counts = generate_checked(generator, conditions, list(range(sketches)), bars=bars, corpus_intervals=intervals,
                                    rules=rules)
    seconds = time.perf_counter() - started
    kept = sum(s is not None for s in done)
    print(f"\nGeneration with {name} v{champion.version} ({sum(p.numel() for p in generator.model.parameters()):,} "
          f"parameters, {generator.device}), {bars} bars, one batch, checks against {len(intervals):,} pieces\n")
    table(["sketches asked", "generated (with retries)", "kept", "seconds", "sketches/s (kept)"],
          [(sketches, counts["generated"], kept, f"{seconds:.1f}", f"{kept / seconds:.2f}")])


def night(hetrec_dir: str, scale: float, days: int, keep: bool) -> None:
    home = tempfile.mkdtemp(prefix="encore-night-")
    try:
        _night_in(home, hetrec_dir, scale, days)
    finally:
        if keep:
            print(f"(kept the home {home})")
        else:
            shutil.rmtree(home, ignore_errors=True)


def _night_in(home: str, hetrec_dir: str, scale: float, days: int) -> None:
    import datetime as dt
    # A replay puts years of a heavy listener's plays into days: the bot rule quarantines them (about a
    # quarter of the events at 30 days), more than clean's default 25% guard allows.
    env = {**os.environ, "ENCORE_HOME": home, "ENCORE_PROFILE": "demo", "ENCORE__CLEAN__MAX_QUARANTINE_SHARE": "0.6"}
    encore = str(Path(sys.executable).parent / "encore")
    end = dt.date(2026, 11, 20)
    dates = [end - dt.timedelta(days=i) for i in range(days - 1, -1, -1)]
    rows = []

    def run(label, *args):
        started = time.perf_counter()
        subprocess.run([encore, *args], env=env, check=True, stdout=subprocess.DEVNULL)
        rows.append((label, f"{time.perf_counter() - started:.0f}"))
        print(f"  {label}: {rows[-1][1]} s", file=sys.stderr)

    run(f"generate-logs hetrec --scale {scale} --days {days}", "generate-logs", "--source", "hetrec", "--hetrec-dir",
        hetrec_dir, "--scale", str(scale), "--days", str(days), "--end-date", end.isoformat())
    run(f"ingest the {days - 1} earlier dates", "ingest", "--from", dates[0].isoformat(), "--to", dates[-2].isoformat())
    run(f"clean the {days - 1} earlier dates (backfill)", "clean", "--from", dates[0].isoformat(), "--to",
        dates[-2].isoformat())
    run(f"night {end}, first (trains both models, demo profile)", "night", "--date", end.isoformat())
    run(f"night {end}, again (champions exist: the steady state)", "night", "--date", end.isoformat())
    print(f"\nWhole night on HetRec at --scale {scale} ({days} landing dates)\n")
    table(["step", "seconds"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=1892)
    parser.add_argument("--items", type=int, default=17632)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--top-k", type=int, default=50)
    parser.add_argument("--block", type=int, default=512)
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--home", default=str(REPO / "var"), help="an Encore home with a champion music model")
    parser.add_argument("--sketches", type=int, default=16)
    parser.add_argument("--bars", type=int, default=8)
    parser.add_argument("--hetrec-dir", help="HetRec Last.fm-2K folder (for --night)")
    parser.add_argument("--night", action="store_true", help="time a whole night on HetRec (long)")
    parser.add_argument("--scale", type=float, default=0.1)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--keep", action="store_true", help="keep the --night home (default: removed, it holds GBs)")
    args = parser.parse_args()
    scoring(args.users, args.items, args.dim, args.top_k, args.block, args.actors)
    generation(args.home, args.sketches, args.bars)
    if args.night:
        if not args.hetrec_dir:
            parser.error("--night needs --hetrec-dir")
        night(args.hetrec_dir, args.scale, args.days, args.keep)


if __name__ == "__main__":
    main()
