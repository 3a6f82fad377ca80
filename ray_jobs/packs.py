"""Nightly inspiration packs: 2-4 sketches per user from the champion music model, tied to their
taste and recommendations, into ``warehouse.inspiration_packs``; each sketch of the night once, with
its MIDI, into ``warehouse.sketches`` (packs refer to sketches by id).

Taste to styles: each tag of the user's ``gold.user_profiles`` distribution maps to the music
styles whose keywords it contains (``packs.style_tags``; "indie folk" counts for pop and folk,
split evenly). The user's strongest ``styles_per_pack`` styles that the model was trained on
share the pack's sketches in proportion to their weight; a user whose tags map to no known
style gets ``packs.default_style``.

Cost: sketches come from pools, one per condition, not one generation per user. A condition is
(style, key, tempo bucket); each style uses its ``conditions_per_style`` most common (key,
tempo) pairs in the training corpus, and each condition's pool holds ``pool_per_condition``
sketches. The night costs (styles x conditions_per_style x pool_per_condition) generations
whatever the number of users; users sharing a condition on the same night may get the same
sketch, but never twice in one pack. Pools are seeded by (run date, model version, condition,
index) and users draw with a generator seeded by (user, run date, model version), so a pack is
the same for the same user, date and model.

Every pool sketch passes the quality and originality checks (``music.generate``; failures are
regenerated, then dropped and counted). Generation runs as Ray Data ``map_batches`` with an
actor pool; each actor loads the model once (one GPU each when ``use_gpu``).
"""
from __future__ import annotations

import datetime as dt
import functools
import hashlib
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from encore import music
from encore.errors import EncoreError
from encore import tracking
from encore.delta_reader import read_filtered, read_snapshot, read_table
from schemas.table_names import (GOLD_MUSIC_SEQUENCES, GOLD_USER_PROFILES, WAREHOUSE_INSPIRATION_PACKS,
                                   WAREHOUSE_RECOMMENDATIONS, WAREHOUSE_SKETCHES)

log = logging.getLogger(__name__)


def stable_hash(*parts) -> int:
    """A 63-bit integer from the parts that does not change between processes (unlike ``hash``)."""
    return int.from_bytes(hashlib.sha256("|".join(map(str, parts)).encode()).digest()[:8], "big") >> 1


def tag_styles(tag: str, style_tags: dict[str, list[str]], known: list[str]) -> list[str]:
    """The known styles a tag counts for (keyword contained in the lower-cased tag)."""
    text = str(tag).lower()
    return [style for style in known if any(word in text for word in style_tags.get(style, []))]


def user_styles(distribution, style_tags: dict, known: list[str], limit: int, default: str,
                styles_of=None) -> list[tuple[str, float]]:
    """(style, share) of a user's strongest known styles, strongest first, shares summing to 1.
    ``styles_of(tag)``, when given, stands in for ``tag_styles`` (a cache)."""
    weights: dict[str, float] = {}
    for entry in (distribution if distribution is not None else []):
        styles = styles_of(entry["tag"]) if styles_of else tag_styles(entry["tag"], style_tags, known)
        for style in styles:
            weights[style] = weights.get(style, 0.0) + float(entry["weight"]) / len(styles)
    ranked = sorted(((s, w) for s, w in weights.items() if w > 0), key=lambda sw: (-sw[1], sw[0]))[:limit]
    if not ranked:
        return [(default, 1.0)]
    total = sum(w for _, w in ranked)
    return [(s, w / total) for s, w in ranked]


def allocate(styles: list[tuple[str, float]], n: int) -> list[str]:
    """n sketch slots over the styles by largest remainder; the strongest style always gets one."""
    exact = [share * n for _, share in styles]
    counts = [int(np.floor(x)) for x in exact]
    for i in sorted(range(len(styles)), key=lambda i: (-(exact[i] - counts[i]), i))[: n - sum(counts)]:
        counts[i] += 1
    if counts[0] == 0:
        counts[0], counts[int(np.argmax(counts))] = 1, counts[int(np.argmax(counts))] - 1
    return [s for (s, _), c in zip(styles, counts) for _ in range(c)]


class SketchGenerator:
    """Ray Data actor: loads the music model once and generates checked sketches for a batch of pool slots."""

    def __init__(self, payload_ref: list):
        import ray
        import torch
        from ray_jobs.music_bundle import MusicGenerator
        payload = ray.get(payload_ref[0])
        if not torch.cuda.is_available():
            torch.set_num_threads(1)   # one core per actor; the pool is the parallelism
        self.tmp = tempfile.TemporaryDirectory()
        state, tokenizer = Path(self.tmp.name) / "state.pt", Path(self.tmp.name) / "tokenizer.json"
        state.write_bytes(payload["state"])
        tokenizer.write_bytes(payload["tokenizer"])
        self.generator = MusicGenerator(state, tokenizer)
        self.corpus = payload["corpus_intervals"]
        self.rules = payload["rules"]
        self.sampling = payload["sampling"]
        self.bars = payload["bars"]

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        import symusic
        from ray_jobs.music_bundle import generate_checked
        conditions = list(zip(batch["style"], batch["key"], batch["tempo_bucket"]))
        seeds = [int(s) for s in batch["seed"]]
        sketches, _ = generate_checked(self.generator, conditions, seeds, bars=self.bars, corpus_intervals=self.corpus,
                                       rules=self.rules, **self.sampling)
        rows = []
        retries = int(self.rules["retries"])
        for base, sketch in zip(seeds, sketches):
            row = {"passed": sketch is not None, "attempts": retries + 1, "used_seed": base, "midi": b"", "chords": "",
                   "tempo_bpm": 0.0, "n_notes": 0, "in_scale": 0.0, "longest_shared_intervals": 0}
            if sketch is not None:
                score = music.merged(symusic.Score.from_midi(sketch.midi))
                row.update(attempts=(sketch.seed - base) // 7919 + 1, used_seed=sketch.seed, midi=sketch.midi,
                           chords=music.chord_progression(score, self.bars), tempo_bpm=round(music.tempo_at_first_note(score), 1),
                           n_notes=int(sketch.checks["notes"]), in_scale=float(sketch.checks["in_scale"]),
                           longest_shared_intervals=int(sketch.checks["longest_shared_intervals"]))
            rows.append(row)
        return pd.concat([batch.reset_index(drop=True), pd.DataFrame(rows)], axis=1)


@dataclass
class PackResult:
    run_date: dt.date
    run_id: str
    model_version: int
    packs: int
    sketches: int
    short_packs: int
    pool_counts: dict[str, int]
    seconds: float


def _model_files(name: str, version: int) -> tuple[bytes, bytes]:
    import mlflow.artifacts
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}", dst_path=tmp))
        state = next(root.rglob("state.pt"), None)
        tokenizer = next(root.rglob("tokenizer.json"), None)
        if state is None or tokenizer is None:
            raise EncoreError(f"{name} v{version} has no state.pt/tokenizer.json: it was not logged by train-music")
        return state.read_bytes(), tokenizer.read_bytes()


def _use_gpu(section) -> bool:
    import ray
    setting = str(section.use_gpu).lower()
    if setting == "auto":
        return ray.cluster_resources().get("GPU", 0) > 0
    return setting in ("true", "1", "yes")


def generate_packs(lake, run_date: dt.date) -> PackResult:
    """One pack per user of ``run_date``'s recommendations, and the night's sketches once each, replacing that
    date in warehouse.inspiration_packs and warehouse.sketches."""
    import mlflow
    import ray
    from pyspark.sql import functions as F
    from encore.ray_runtime import connect

    config = lake.config
    section = config.packs
    started = time.perf_counter()
    name = config.music.model_name
    champion = tracking.require_champion(config, name, "run `encore train-music` (or `encore night`, which trains "
                                                       "when there is no champion)")
    params = tracking.client(config).get_run(champion.run_id).data.params
    corpus_version = int(params["source.gold.music_sequences.version"])
    corpus = read_table(config, GOLD_MUSIC_SEQUENCES, corpus_version,
                        ["style", "key", "tempo_bucket", "melody", "split"])
    train = corpus.frame[corpus.frame["split"] == "train"]
    known = sorted(train["style"].unique())
    default = section.default_style if section.default_style in known else known[0]
    # Every listener with a list has a rank-1 row, so the seed items' ranks name every user: at a million
    # listeners that is 3 rows each instead of the whole list.
    recs = read_filtered(config, WAREHOUSE_RECOMMENDATIONS,
                         [("run_date", "=", run_date), ("rank", "<=", max(1, section.seed_items))],
                         ["user_id", "rank", "item_id", "item_name"])
    if recs.frame.empty:
        raise EncoreError(f"warehouse.recommendations has no rows for {run_date}: run `encore score --date {run_date}` "
                          "first")
    recs.frame["user_id"] = recs.frame["user_id"].astype(str)
    recs.frame.sort_values(["user_id", "rank"], inplace=True, kind="stable", ignore_index=True)
    profiles = read_snapshot(config, GOLD_USER_PROFILES, run_date, columns=["user_id", "tag_distribution"], arrow=True)
    n_sketches = min(4, max(2, section.sketches))
    style_tags = {k: [str(w).lower() for w in v] for k, v in section.style_tags.items()}

    users = recs.frame["user_id"].drop_duplicates().to_list()
    slots = pack_slots(users, profiles.frame, style_tags, known, section.styles_per_pack, default, n_sketches)
    used_styles = sorted({s for styles in slots.values() for s in styles})
    combos = {style: [tuple(kt) for kt in train[train["style"] == style].groupby(["key", "tempo_bucket"]).size()
                      .sort_values(ascending=False, kind="stable").index[: section.conditions_per_style]]
              for style in used_styles}
    pool_size = section.pool_per_condition
    pool = pd.DataFrame([{"style": s, "key": k, "tempo_bucket": t, "slot": j,
                          "seed": stable_hash(run_date, champion.version, s, k, t, j) % 2 ** 31}
                         for s in used_styles for k, t in combos[s] for j in range(pool_size)])
    generate_rules = config.music.generate
    bars = section.bars
    versions = {GOLD_MUSIC_SEQUENCES: corpus_version, GOLD_USER_PROFILES: profiles.version,
                WAREHOUSE_RECOMMENDATIONS: recs.version}
    log.info("generate %s: %d users, styles %s, %d pool sketches (%d conditions x %d) with %s v%d", run_date,
             len(users), used_styles, len(pool), len(pool) // max(pool_size, 1), pool_size, name, champion.version)

    tracking.experiment(config, config.nightly.experiment)
    with mlflow.start_run(run_name=f"generate {run_date}") as run:
        mlflow.set_tags({"job": "generate", "run_date": str(run_date)})
        tracking.log_delta_input(recs.frame, recs.name, recs.path, recs.version, context="generation")
        tracking.log_delta_input(profiles.frame, profiles.name, profiles.path, profiles.version, context="generation")
        mlflow.log_params({"model_name": name, "model_version": champion.version, "sketches": n_sketches,
                           "bars": bars, "pool_per_condition": pool_size, "conditions": len(pool) // max(pool_size, 1),
                           "source.gold.music_sequences.version": corpus_version})
        connect(config)
        import ray.data
        ray.data.DataContext.get_current().enable_progress_bars = True   # bars on a terminal, timed log lines elsewhere
        state, tokenizer = _model_files(name, champion.version)
        payload = ray.put({"state": state, "tokenizer": tokenizer, "bars": bars,
                           "corpus_intervals": [np.diff(np.asarray(m, dtype=np.int32)) for m in train["melody"]],
                           "sampling": {k: getattr(generate_rules, k) for k in ("temperature", "top_p", "in_key", "tonic_frame")},
                           "rules": {k: getattr(generate_rules, k) for k in (
                               "min_bar_fill", "min_in_scale", "min_diatonic_share", "require_key",
                               "max_shared_intervals", "retries")}})
        gpu = _use_gpu(section)
        actors = section.actors
        if gpu:   # one GPU per actor: never ask for more actors than the cluster has GPUs
            actors = max(1, min(actors, int(ray.cluster_resources().get("GPU", 1))))
        generated_at = time.perf_counter()
        blocks = max(1, -(-len(pool) // section.batch))
        actors = min(actors, blocks)   # an actor beyond the blocks would start, load the model and idle
        sketches = ray.data.from_pandas(pool, override_num_blocks=blocks).map_batches(
            SketchGenerator, fn_constructor_kwargs={"payload_ref": [payload]}, batch_format="pandas",
            batch_size=section.batch, num_cpus=1, num_gpus=1 if gpu else 0,
            compute=ray.data.ActorPoolStrategy(size=actors)).to_pandas()
        generation_seconds = time.perf_counter() - generated_at
        del payload
        sketches = sketches.sort_values(["style", "key", "tempo_bucket", "slot"]).reset_index(drop=True)
        counts = {"pool_slots": len(sketches), "pool_passed": int(sketches["passed"].sum()),
                  "pool_dropped": int((~sketches["passed"]).sum()),
                  "generated": int(sketches["attempts"].sum()),
                  "regenerated": int(sketches["attempts"].sum() - len(sketches) - (~sketches["passed"]).sum())}

        sketches["sketch_id"] = [sketch_id(champion.version, *cond) for cond in
                                 zip(sketches["style"], sketches["key"], sketches["tempo_bucket"], sketches["used_seed"])]
        assembled: dict[str, int] = {"short": 0}
        chunks = _pack_chunks(users, slots, combos, sketches, recs.frame, run_date, champion.version,
                              section.seed_items, assembled)
        written_by = {"run_date": run_date, "model_name": name, "model_version": champion.version,
                      "mlflow_run_id": run.info.run_id}
        run_info = {"job": "generate", "mlflow_run_id": run.info.run_id, "model_version": champion.version,
                    **{f"source.{k}": v for k, v in versions.items()}}
        # The sketches first: a pack never names a sketch the table lacks (a rerun with the same
        # model and date writes the same ids).
        _replace(lake, WAREHOUSE_SKETCHES, run_date, [{**r, **written_by} for r in _sketch_rows(sketches, bars)],
                 run_info)
        _replace(lake, WAREHOUSE_INSPIRATION_PACKS, run_date,
                 ([{**r, **written_by, "data_versions": sorted(versions.items())} for r in rows] for rows in chunks),
                 run_info)
        short = assembled["short"]
        written = lake.read(WAREHOUSE_INSPIRATION_PACKS).where(F.col("run_date") == F.lit(run_date))
        n_packs = written.count()
        n_sketches_written = written.select(F.sum(F.size("sketches"))).first()[0] or 0
        seconds = time.perf_counter() - started
        mlflow.log_metrics({"packs": n_packs, "sketches": n_sketches_written, "short_packs": short,
                            "seconds": seconds, "generation_seconds": generation_seconds,
                            "pool_sketches_per_second": counts["generated"] / max(generation_seconds, 1e-9),
                            **{f"pool.{k}": v for k, v in counts.items()}})
        mlflow.log_params({f"{t}.version": lake.version(t) for t in (WAREHOUSE_SKETCHES, WAREHOUSE_INSPIRATION_PACKS)})
    log.info("generate %s: %d packs, %d sketches (%d short packs); pools: %s", run_date, n_packs, n_sketches_written,
             short, counts)
    return PackResult(run_date, run.info.run_id, champion.version, n_packs, int(n_sketches_written), short, counts,
                      seconds)


def sketch_id(model_version: int, style: str, key: str, tempo_bucket: str, seed: int) -> str:
    """A sketch's stable id: the same model, condition and seed give the same sketch."""
    return hashlib.sha256(f"{model_version}|{style}|{key}|{tempo_bucket}|{seed}".encode()).hexdigest()[:16]


def _sketch_rows(sketches: pd.DataFrame, bars: int) -> list[dict]:
    """warehouse.sketches rows: each sketch that passed its checks once (equal ids are equal sketches)."""
    passed = sketches[sketches["passed"]].drop_duplicates("sketch_id")
    return [{"sketch_id": s["sketch_id"], "style": s["style"], "key": s["key"], "tempo_bucket": s["tempo_bucket"],
             "tempo_bpm": float(s["tempo_bpm"]), "bars": bars, "seed": int(s["used_seed"]), "chords": s["chords"],
             "n_notes": int(s["n_notes"]), "in_scale": float(s["in_scale"]),
             "longest_shared_intervals": int(s["longest_shared_intervals"]), "midi": bytes(s["midi"])}
            for s in passed.to_dict("records")]


def _replace(lake, name: str, run_date: dt.date, rows, run_info: dict) -> None:
    """Replace ``run_date``'s rows of a warehouse table with ``rows`` (staged as Parquet by Ray Data).

    ``rows`` is a list of dicts, or an iterable of such lists: each chunk becomes Arrow before the next
    one is built, so the Python rows of a million packs never exist at once."""
    import pyarrow as pa
    import ray
    from encore.ray_runtime import write_parquet
    from pyspark.sql.pandas.types import to_arrow_schema
    from schemas.tables import TABLES
    schema = to_arrow_schema(TABLES[name].schema)
    chunks = [rows] if isinstance(rows, list) else rows
    tables = [pa.Table.from_pylist(chunk, schema=schema) for chunk in chunks] or [schema.empty_table()]
    with lake.staging(f"{name}-{run_date}") as staging:
        write_parquet(ray.data.from_arrow(tables), staging)
        lake.replace_partition(lake.spark.read.parquet(staging), name, "run_date", run_date, run_info)


PACK_CHUNK = 50_000   # users whose pack rows exist as Python objects at once


def pack_slots(users: list[str], profiles, style_tags: dict, known: list[str], limit: int, default: str,
               n_sketches: int) -> dict[str, tuple[str, ...]]:
    """Each user's sketch slots (style per slot) from their tag distribution in ``profiles`` (an Arrow
    table of user_id, tag_distribution). The profiles become Python objects a chunk at a time, and a
    tag's styles are worked out once per distinct tag."""
    wanted = set(users)

    @functools.cache
    def styles(tag: str) -> list[str]:
        return tag_styles(tag, style_tags, known)

    slots: dict[str, tuple[str, ...]] = {}
    for batch in profiles.to_batches(max_chunksize=PACK_CHUNK):
        for user, distribution in zip(batch.column("user_id").to_pylist(), batch.column("tag_distribution").to_pylist()):
            if user in wanted:
                slots[user] = tuple(allocate(user_styles(distribution, style_tags, known, limit, default, styles),
                                             n_sketches))
    fallback = tuple(allocate([(default, 1.0)], n_sketches))
    return {u: slots.get(u, fallback) for u in users}


def _pack_chunks(users: list[str], slots, combos, sketches: pd.DataFrame, recs: pd.DataFrame, run_date,
                 model_version: int, seed_items: int, counts: dict):
    """Pack rows, a list per PACK_CHUNK users (``recs`` sorted by user_id); adds each chunk's short
    packs to ``counts["short"]``."""
    user_column = recs["user_id"].to_numpy()
    for i in range(0, len(users), PACK_CHUNK):
        part = users[i:i + PACK_CHUNK]
        lo, hi = np.searchsorted(user_column, part[0], side="left"), np.searchsorted(user_column, part[-1], side="right")
        rows, short = _assemble(part, slots, combos, sketches, recs.iloc[lo:hi], run_date, model_version, seed_items)
        counts["short"] = counts.get("short", 0) + short
        yield rows


def _assemble(users, slots, combos, sketches: pd.DataFrame, recs: pd.DataFrame, run_date, model_version: int,
              seed_items: int) -> tuple[list[dict], int]:
    """Draw each user's sketches from the pools (no repeats within a pack); returns rows and short packs.
    ``sketches`` is the pool with a ``sketch_id`` per slot; a pack refers to its sketches by id."""
    passed = sketches[sketches["passed"]]
    pools = {cond: group.to_dict("records") for cond, group in passed.groupby(["style", "key", "tempo_bucket"])}
    top = recs[recs["rank"] <= seed_items].sort_values(["user_id", "rank"])
    seeds_by_user = {u: [{"item_id": str(i), "name": n} for i, n in zip(g["item_id"], g["item_name"])]
                     for u, g in top.groupby("user_id")}
    rows, short = [], 0
    for user in users:
        rng = np.random.default_rng(stable_hash(user, run_date, model_version))
        taken: set[tuple] = set()
        chosen = []
        for style in slots[user]:
            for ci in rng.permutation(len(combos[style])):
                cond = (style, *combos[style][ci])
                free = [s for s in pools.get(cond, []) if (cond, s["slot"]) not in taken]
                if free:
                    pick = free[int(rng.integers(len(free)))]
                    taken.add((cond, pick["slot"]))
                    chosen.append(pick)
                    break
        short += len(chosen) < 2
        pack_id = hashlib.sha256(f"{user}|{run_date}|{model_version}".encode()).hexdigest()[:16]
        rows.append({
            "user_id": user, "pack_id": pack_id,
            "styles": list(dict.fromkeys(slots[user])),
            "sketches": [{k: s[k] for k in ("sketch_id", "style", "key", "tempo_bucket")} for s in chosen],
            "seed_items": seeds_by_user.get(user, []),
        })
    return rows, short
