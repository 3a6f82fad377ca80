"""Nightly scoring: the champion recommender's top-K for every user seen in silver, with a reason
per row, into ``warehouse.recommendations``.

Strategies (the ``strategy`` column, per row):
  model        users the champion was trained on: its scores (blocked ``U[block] @ V.T + b``,
               blended with EASE when the champion is), items the user played in the gold
               window removed. Reason: the played artist whose item factors are most similar
               (cosine) to the recommended one, "because you play X".
  tag_profile  users new since training who have a tag profile in ``gold.user_profiles``:
               cosine between their tag distribution and the items' top tags (+ a small
               popularity term for ties). Reason: the tag that contributes most.
  popularity   users with no usable history (no known factors, no tags), and the tail of any
               list that runs out of candidates: artists by listeners in the gold window.
Lists have K rows (``score.top_k``) unless the catalogue has fewer unplayed artists.

Distribution: a Ray Data ``map_batches`` over blocks of users with an actor pool; every actor
holds the item side (factors, tags, popularity, names) once, shared through the object store.
The rows are staged as Parquet and written with Spark (``replaceWhere run_date``), so a rerun
replaces exactly its date.
"""
from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp

from encore.config import Config
from encore.errors import EncoreError
from encore import tracking
from encore.delta_reader import distinct_values, read_snapshot
from ray_jobs.recommender_model import RecommenderBundle
from ray_jobs.recsys import arrow_strings, positions
from schemas.table_names import (GOLD_INTERACTIONS, GOLD_ITEMS, GOLD_USER_PROFILES, SILVER_PLAYS,
                                   SILVER_PLAY_COUNTS, WAREHOUSE_RECOMMENDATIONS)

log = logging.getLogger(__name__)
STRATEGIES = ("model", "tag_profile", "popularity")
POPULAR_REASON = "popular with listeners right now"
# Object scalars: np.where over them stays an object array (no fixed-width unicode round trip).
_FALLBACK_REASONS = (np.array("recommended from your listening", dtype=object), np.array(POPULAR_REASON, dtype=object))
_MODEL_OR_POPULAR = (np.array("model", dtype=object), np.array("popularity", dtype=object))


@dataclass
class ScoringContext:
    """Everything an actor needs, put in the object store once per run."""

    bundle: RecommenderBundle
    item_ids: np.ndarray          # run catalogue: the model's items, then new items from gold.items
    item_names: np.ndarray
    popularity: np.ndarray        # (n_items,) log1p(listeners) / max, 0 for items out of the window
    item_tags: sp.csr_matrix      # (n_items, n_tags) L2-normalised tag weights
    tag_names: np.ndarray
    user_ids: np.ndarray          # run users
    user_model_index: np.ndarray  # (n_users,) row in the bundle, -1 when unknown to the model
    user_tags: sp.csr_matrix      # (n_users, n_tags) tag distribution
    played: sp.csr_matrix         # (n_users, n_items) plays in the gold window
    top_k: int

    @property
    def n_model_items(self) -> int:
        return len(self.bundle.item_ids)

    def strategies(self) -> np.ndarray:
        has_tags = np.diff(self.user_tags.indptr) > 0
        return np.where(self.user_model_index >= 0, "model", np.where(has_tags, "tag_profile", "popularity"))


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest scores per row, best first (equal scores: the lower index first).

    ``torch.topk`` selects (multi-threaded, about twice numpy's argpartition here); which of
    several equal scores at the cut gets in is the kernel's choice, deterministic for the same input.
    """
    import torch
    k = min(k, scores.shape[1])
    values, part = torch.from_numpy(np.ascontiguousarray(scores, dtype=np.float32)).topk(k, dim=1)
    values, part = values.numpy(), part.numpy()
    order = np.lexsort((part, -values), axis=1)
    return np.take_along_axis(part, order, axis=1)


def _writable(array: np.ndarray) -> np.ndarray:
    return array if array.flags.writeable else array.copy()


class BlockScorer:
    """Ray Data actor: holds the scoring context and turns a block of user rows into list rows."""

    MAX_HISTORY = 256   # reasons look at the user's most played artists, at most this many

    def __init__(self, context_ref: list):
        # Ray hands the context over as an object-store reference; a ScoringContext itself is used as it is.
        context = context_ref[0]
        if not isinstance(context, ScoringContext):
            import ray
            context = ray.get(context)
        self.ctx: ScoringContext = context
        factors = self.ctx.bundle.item_factors.astype(np.float32)
        norms = np.linalg.norm(factors, axis=1, keepdims=True)
        self.unit_factors = factors / np.where(norms > 0, norms, 1.0)
        self.item_tags_t = self.ctx.item_tags.T.tocsr()
        self.strategy = self.ctx.strategies()
        # One reason string per item, built once: per block the reasons are then a fancy index.
        self.because = np.array(["because you play " + str(n) for n in self.ctx.item_names], dtype=object)
        self.ctx.bundle.lightfm_scores(np.zeros(0, dtype=np.int64))   # builds the product's matrices once
        # The product, the top-K and the reason cosines all run in torch: one thread pool. A numpy
        # (OpenBLAS) product before torch.topk left BLAS threads spinning and made the top-K 2.5x
        # slower on 2 cores; the product also writes into one reused buffer instead of fresh pages.
        import torch
        self._torch = torch
        # Arrays from the object store are read-only, which torch warns about: those are copied. The
        # product's matrices are built in this process, and the users' side a block at a time.
        bundle = self.ctx.bundle
        self._items_t = torch.from_numpy(_writable(bundle._items_with_bias))
        if bundle.ease_weights is not None:
            self._blend_right_t = torch.from_numpy(_writable(bundle.blend_right))
        self._unit_t = torch.from_numpy(self.unit_factors)
        self._buffer = torch.empty(0)

    def __call__(self, batch: dict) -> dict:
        rows = np.asarray(batch["row"], dtype=np.int64)
        parts = [getattr(self, f"_{name}")(rows[self.strategy[rows] == name]) for name in STRATEGIES
                 if (self.strategy[rows] == name).any()]
        return {c: np.concatenate([p[c] for p in parts]) for c in parts[0]} if parts else {}

    def _mask_played(self, scores: np.ndarray, rows: np.ndarray) -> np.ndarray:
        r, c = self.ctx.played[rows].nonzero()
        scores[r, c] = -np.inf
        return scores

    def _histories(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per user, the model items they played in the window, most played first (else their
        training history), at most MAX_HISTORY: a (users, width) index array and its filled slots.
        Vectorised over the block: one sort of the block's play entries, no per-user loop."""
        ctx = self.ctx
        played = ctx.played[rows][:, :ctx.n_model_items].tocsr()
        empty = np.diff(played.indptr) == 0
        if empty.any():   # nothing of theirs in the window that the model knows: their training history
            only = np.flatnonzero(empty)
            pick = sp.csr_matrix((np.ones(len(only), dtype=np.float32), (only, only)), shape=(len(rows), len(rows)))
            seen = ctx.bundle.seen[ctx.user_model_index[rows]].astype(np.float32)
            played = (played + pick @ seen).tocsr()
        counts = np.diff(played.indptr)
        row_of = np.repeat(np.arange(len(rows)), counts)
        # Most played first within each user; equal counts keep the item order (as a stable sort would).
        order = np.lexsort((np.arange(played.nnz), -played.data, row_of))
        slot = np.arange(played.nnz) - played.indptr[row_of]
        keep = slot < self.MAX_HISTORY
        width = max(1, int(min(self.MAX_HISTORY, counts.max(initial=0))))
        history = np.zeros((len(rows), width), dtype=np.int64)
        present = np.zeros((len(rows), width), dtype=bool)
        history[row_of[keep], slot[keep]] = played.indices[order][keep]
        present[row_of[keep], slot[keep]] = True
        return history, present

    def _model(self, rows: np.ndarray) -> dict:
        ctx = self.ctx
        n_model = ctx.n_model_items
        scores = self._scores(ctx.user_model_index[rows])
        if len(ctx.item_ids) > n_model:
            # Items the model does not know rank below all its scores, by popularity: the list's tail.
            scores[:, n_model:] = scores[:, :n_model].min(axis=1, keepdims=True) - 2.0 + ctx.popularity[None, n_model:]
        top = _top(self._mask_played(scores, rows), ctx.top_k)
        from_model = top < n_model

        # Reasons for the whole block at once: (users, K, d) @ (users, d, history) cosines.
        history, present = self._histories(rows)
        recs = np.where(from_model, top, 0)
        torch = self._torch
        cosine = torch.bmm(self._unit_t[torch.from_numpy(recs)], self._unit_t[torch.from_numpy(history)].transpose(1, 2))
        cosine += torch.from_numpy(np.where(present, np.float32(0), np.float32(-np.inf)))[:, None, :]  # empty slots never win
        best = np.take_along_axis(history, cosine.argmax(dim=2).numpy(), axis=1)
        explained = from_model & present.any(axis=1)[:, None]
        reason_items = np.where(explained, ctx.item_ids[best], None)
        reasons = np.where(explained, self.because[best], np.where(from_model, *_FALLBACK_REASONS))
        return self._rows(rows, top, scores, np.where(from_model, *_MODEL_OR_POPULAR), reasons, reason_items)

    def _scores(self, users: np.ndarray) -> np.ndarray:
        """(len(users), all items) float32 model scores, in the reused buffer (valid until the next call);
        columns past the model's items are left for the caller to fill."""
        torch, n, n_model = self._torch, len(users), self.ctx.n_model_items
        if self._buffer.shape[0] < n:
            self._buffer = torch.empty((n, len(self.ctx.item_ids)), dtype=torch.float32)
        out = self._buffer[:n]
        bundle = self.ctx.bundle
        blended = bundle.blend_ease > 0 and bundle.ease_weights is not None
        if blended:   # the z-score blend as one product too (RecommenderBundle.blend_parts)
            rows, ease_part = bundle.blend_parts(users, bundle.blend_ease)
            left, right = torch.from_numpy(rows), self._blend_right_t
        else:
            left, right = torch.from_numpy(bundle.user_rows(users)), self._items_t
        if n_model == out.shape[1]:
            torch.mm(left, right, out=out)
        else:
            out[:, :n_model] = torch.mm(left, right)
        scores = out.numpy()
        if blended:
            scores[:, bundle.ease_items] += ease_part
        return scores

    def _tag_profile(self, rows: np.ndarray) -> dict:
        ctx = self.ctx
        affinity = np.asarray((ctx.user_tags[rows] @ self.item_tags_t).todense(), dtype=np.float32)
        scores = (affinity + 1e-3 * ctx.popularity[None, :]).astype(np.float32)
        top = _top(self._mask_played(scores, rows), ctx.top_k)
        matched = np.take_along_axis(affinity, top, axis=1) > 0
        reasons = np.full(top.shape, POPULAR_REASON, dtype=object)
        if matched.any():
            users = np.repeat(rows, top.shape[1]).reshape(top.shape)[matched]
            contrib = ctx.user_tags[users].multiply(ctx.item_tags[top[matched]]).tocsr()
            best = np.asarray(contrib.argmax(axis=1)).reshape(-1)
            reasons[matched] = ["because you like " + str(t) for t in ctx.tag_names[best]]
        return self._rows(rows, top, scores, np.where(matched, "tag_profile", "popularity"), reasons,
                          np.full(top.shape, None, dtype=object))

    def _popularity(self, rows: np.ndarray) -> dict:
        scores = np.repeat(self.ctx.popularity[None, :], len(rows), axis=0)
        top = _top(self._mask_played(scores, rows), self.ctx.top_k)
        return self._rows(rows, top, scores, np.full(top.shape, "popularity"),
                          np.full(top.shape, POPULAR_REASON, dtype=object), np.full(top.shape, None, dtype=object))

    def _rows(self, rows, top, scores, strategy, reasons, reason_items) -> dict:
        ctx = self.ctx
        picked = np.take_along_axis(scores, top, axis=1)
        keep = np.isfinite(picked).reshape(-1)   # a played item never fills a short list
        k = top.shape[1]
        flat = top.reshape(-1)[keep]
        return {
            "user_id": np.repeat(ctx.user_ids[rows], k)[keep],   # object arrays of str: no conversion
            "rank": np.tile(np.arange(1, k + 1, dtype=np.int32), len(rows))[keep],
            "item_id": ctx.item_ids[flat],
            "item_name": ctx.item_names[flat],
            "score": picked.reshape(-1)[keep].astype(np.float64),
            "strategy": strategy.reshape(-1)[keep],
            "reason": reasons.reshape(-1)[keep],
            "reason_item_id": reason_items.reshape(-1)[keep],
        }


# --- building the context --------------------------------------------------------------------

def _silver_users(config: Config, run_date: dt.date) -> pa.ChunkedArray:
    """Every user with a play (or an imported count) in silver up to ``run_date``, distinct, in Arrow."""
    found = [pa.chunked_array([], type=pa.large_string())]
    for name, column in ((SILVER_PLAYS, "date"), (SILVER_PLAY_COUNTS, "snapshot_date")):
        try:
            found.append(arrow_strings(distinct_values(config, name, "user_id", [(column, "<=", run_date)])[1]))
        except EncoreError as exc:
            if "does not exist" in str(exc):
                continue
            raise
    return pa.chunked_array([c for f in found for c in f.chunks], type=pa.large_string())


def _tag_rows(row_of_list: np.ndarray, lists: pa.ChunkedArray, vocabulary: pa.Array, n_rows: int,
              weighted: bool) -> sp.csr_matrix:
    """A row-normalised (n_rows x vocabulary) tag matrix from Arrow list columns, without a Python loop.

    ``lists[i]`` goes to row ``row_of_list[i]`` (-1: nowhere). Weighted lists hold ``{tag, weight}``
    structs; plain lists of tag names weigh the tag at list position r by 1/sqrt(r + 1). Repeated
    tags in a row add up; unknown, null and non-positive entries are left out."""
    lists = lists.combine_chunks() if isinstance(lists, pa.ChunkedArray) else lists
    if isinstance(lists, pa.ChunkedArray):   # no chunks at all
        lists = pa.array([], type=lists.type)
    parent = pc.list_parent_indices(lists).to_numpy(zero_copy_only=False)
    flat = pc.list_flatten(lists)
    if weighted:
        names, weights = flat.field("tag"), flat.field("weight").fill_null(0).to_numpy(zero_copy_only=False)
    else:
        rank = np.arange(len(flat)) - np.searchsorted(parent, parent)   # parent ascends: a list's first entry
        names, weights = flat, 1.0 / np.sqrt(rank + 1)
    column = pc.index_in(names.cast(pa.large_string()), value_set=vocabulary).fill_null(-1).to_numpy(
        zero_copy_only=False)
    row = row_of_list[parent] if len(parent) else np.zeros(0, dtype=np.int64)
    keep = (column >= 0) & (row >= 0) & (weights > 0)
    m = sp.csr_matrix((np.asarray(weights[keep], dtype=np.float32), (row[keep], column[keep])),
                      shape=(n_rows, len(vocabulary)))
    m.sum_duplicates()
    norms = np.sqrt(np.asarray(m.multiply(m).sum(axis=1)).reshape(-1))
    return sp.diags(1.0 / np.where(norms > 0, norms, 1.0)).astype(np.float32) @ m


def build_context(config: Config, run_date: dt.date, bundle: RecommenderBundle, top_k: int):
    """The scoring context of ``run_date``, built in Arrow and numpy: at a million listeners, only the
    sorted user ids become Python strings; interactions and tag profiles never leave Arrow."""
    reads = {
        GOLD_INTERACTIONS: read_snapshot(config, GOLD_INTERACTIONS, run_date, columns=["user_id", "item_id", "plays"],
                                         arrow=True),
        GOLD_ITEMS: read_snapshot(config, GOLD_ITEMS, run_date, columns=["item_id", "name", "top_tags", "listeners"],
                                  arrow=True),
        GOLD_USER_PROFILES: read_snapshot(config, GOLD_USER_PROFILES, run_date,
                                          columns=["user_id", "tag_distribution"], arrow=True),
    }
    interactions, items, profiles = (reads[n].frame for n in (GOLD_INTERACTIONS, GOLD_ITEMS, GOLD_USER_PROFILES))
    if interactions.num_rows == 0:
        raise EncoreError(f"gold has no snapshot as of {run_date}: run `encore features --date {run_date}` first")

    model_items = pa.array(bundle.item_ids.astype(str), type=pa.large_string())
    item_column = arrow_strings(items["item_id"])
    new_items = pc.unique(pc.filter(item_column, pc.invert(pc.is_in(item_column, value_set=model_items))))
    item_set = pa.concat_arrays([model_items, new_items.take(pc.array_sort_indices(new_items))])
    item_ids = item_set.to_numpy(zero_copy_only=False)
    # Each run item's row in gold.items; -1 (the model knows an item this snapshot lacks) picks the
    # appended filler: its id as its name, no listeners.
    item_row = np.full(len(item_ids), -1, dtype=np.int64)
    found = positions(items["item_id"], item_set)
    item_row[found[found >= 0]] = np.flatnonzero(found >= 0)
    names = np.append(pc.coalesce(arrow_strings(items["name"]), item_column).to_numpy(zero_copy_only=False), None)
    item_names = np.where(item_row >= 0, names[item_row], item_ids).astype(object)
    listeners = np.append(items["listeners"].fill_null(0).to_numpy().astype(float), 0.0)[item_row]
    popularity = np.log1p(listeners) / max(np.log1p(listeners).max(initial=0.0), 1.0)

    users = pc.unique(pa.chunked_array(_silver_users(config, run_date).chunks
                                       + arrow_strings(interactions["user_id"]).chunks, type=pa.large_string()))
    users = users.take(pc.array_sort_indices(users))   # UTF-8 byte order = code point order, as sorted() gives
    user_ids = users.to_numpy(zero_copy_only=False)
    played = sp.csr_matrix((interactions["plays"].to_numpy().astype(np.float32),
                            (positions(interactions["user_id"], users), positions(interactions["item_id"], item_set))),
                           shape=(len(user_ids), len(item_ids)))
    played.sum_duplicates()

    profile_tags = pc.list_flatten(profiles["tag_distribution"]).combine_chunks().field("tag") \
        if profiles.num_rows else pa.array([], pa.large_string())
    tags = pc.unique(pa.chunked_array([arrow_strings(pc.list_flatten(items["top_tags"])).combine_chunks(),
                                       arrow_strings(profile_tags).combine_chunks()]).drop_null())
    tags = tags.take(pc.array_sort_indices(tags))
    context = ScoringContext(
        bundle=bundle, item_ids=item_ids, item_names=item_names, popularity=popularity.astype(np.float32),
        item_tags=_tag_rows(positions(items["item_id"], item_set), items["top_tags"], tags, len(item_ids), False),
        tag_names=tags.to_numpy(zero_copy_only=False), user_ids=user_ids,
        user_model_index=positions(users, bundle.user_ids),
        user_tags=_tag_rows(positions(profiles["user_id"], users), profiles["tag_distribution"], tags, len(user_ids),
                            True),
        played=played, top_k=top_k)
    # Only the schemas of the reads are logged: their rows (gigabytes of Arrow at a million listeners) go now.
    return context, {name: replace(read, frame=read.frame.slice(0, 0)) for name, read in reads.items()}


@dataclass
class ScoreResult:
    run_date: dt.date
    run_id: str
    model_version: int
    users: int
    rows: int
    per_strategy: dict[str, int]
    seconds: float
    source_versions: dict[str, int]


def score(lake, run_date: dt.date) -> ScoreResult:
    """Score every user for ``run_date`` and replace that date in ``warehouse.recommendations``."""
    import mlflow
    import ray
    from pyspark.sql import functions as F
    from ray_jobs.recommender_model import load_bundle
    from encore.ray_runtime import connect, write_parquet

    config = lake.config
    section = config.score
    name = config.recommender.model_name
    champion = tracking.require_champion(config, name, "run `encore train-recommender` (or `encore night`, which "
                                                       "trains when there is no champion)")
    started = time.perf_counter()
    bundle = load_bundle(f"models:/{name}/{champion.version}")
    top_k = section.top_k
    context, reads = build_context(config, run_date, bundle, top_k)
    del bundle   # the context holds it
    versions = {r.name: r.version for r in reads.values()}
    n_users = len(context.user_ids)
    users_by_strategy = {str(s): int(n) for s, n in zip(*np.unique(context.strategies(), return_counts=True))}
    log.info("score %s: %d users (%s) x %d artists with %s v%d", run_date, n_users,
             ", ".join(f"{s}={n}" for s, n in users_by_strategy.items()), len(context.item_ids), name, champion.version)

    tracking.experiment(config, config.nightly.experiment)
    with mlflow.start_run(run_name=f"score {run_date}") as run:
        mlflow.set_tags({"job": "score", "run_date": str(run_date)})
        for read in reads.values():
            tracking.log_delta_input(read.frame, read.name, read.path, read.version, context="scoring")
        mlflow.log_params({"model_name": name, "model_version": champion.version, "top_k": top_k,
                           "block_users": section.block_users})
        connect(config)
        import ray.data
        ray.data.DataContext.get_current().enable_progress_bars = True   # bars on a terminal, timed log lines elsewhere
        ref = ray.put(context)
        del context   # the actors read the object store's copy; the driver's would double it
        blocks = max(1, -(-n_users // section.block_users))
        actors = min(section.actors, blocks)   # an actor beyond the blocks would start, take the context and idle
        mlflow.log_param("actors", actors)
        users = ray.data.from_pandas(pd.DataFrame({"row": np.arange(n_users, dtype=np.int64)}),
                                     override_num_blocks=blocks)
        lists = users.map_batches(BlockScorer, fn_constructor_kwargs={"context_ref": [ref]}, batch_format="numpy",
                                  batch_size=section.block_users, num_cpus=1,
                                  compute=ray.data.ActorPoolStrategy(size=actors))
        with lake.staging(f"score-{run_date}") as staging:
            write_parquet(lists, staging)
            staged = lake.spark.read.parquet(staging)
            frame = (staged.withColumn("run_date", F.lit(run_date))
                     .withColumn("model_name", F.lit(name)).withColumn("model_version", F.lit(champion.version))
                     .withColumn("mlflow_run_id", F.lit(run.info.run_id))
                     .withColumn("source_versions", F.create_map(*[x for k, v in sorted(versions.items())
                                                                   for x in (F.lit(k), F.lit(v))])))
            lake.replace_partition(frame, WAREHOUSE_RECOMMENDATIONS, "run_date", run_date,
                                   {"job": "score", "mlflow_run_id": run.info.run_id, "model_version": champion.version,
                                    **{f"source.{k}": v for k, v in versions.items()}})
        del ref
        written = lake.read(WAREHOUSE_RECOMMENDATIONS).where(F.col("run_date") == F.lit(run_date))
        per_strategy = {r["strategy"]: int(r["count"]) for r in written.groupBy("strategy").count().collect()}
        seconds = time.perf_counter() - started
        rows = sum(per_strategy.values())
        mlflow.log_metrics({"users": n_users, "rows": rows, "seconds": seconds, "users_per_second": n_users / seconds,
                            **{f"rows.{k}": v for k, v in per_strategy.items()},
                            **{f"users.{s}": n for s, n in users_by_strategy.items()}})
        mlflow.log_param("warehouse.recommendations.version", lake.version(WAREHOUSE_RECOMMENDATIONS))
    return ScoreResult(run_date, run.info.run_id, champion.version, n_users, rows, per_strategy, seconds,
                       versions)

