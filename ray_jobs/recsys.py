"""The recommender's data, evaluation protocol and baselines, shared by training, evaluation and scoring.

Evaluation protocol (fixed; README "Recommender quality"):
  * Users with at least ``min_items`` (5) distinct items hold out ``round(share * n)`` (share 0.2,
    at least 1) of their items, chosen uniformly at random with a fixed seed. The draw is a keyed
    hash of (seed, user id, item id), so the same pair stays held out in later snapshots and a
    model trained last week never saw this week's held-out pairs.
  * Everything a user has in the training split is excluded from their ranking.
  * precision@k = hits / k; recall@k = hits / held-out items; NDCG@k with binary gains and the
    ideal DCG over min(held-out, k) positions; all averaged over users with a held-out item.
  * coverage = distinct recommended items / items in the catalogue (gold.items);
    long_tail_share = share of recommendation slots outside the top 1% most popular items
    (popularity = training listeners).
Baselines use the same code: popularity, item-kNN (cosine, 200 neighbours per item) and EASE (Steck 2019).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Hashable, Iterable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp

from encore.errors import EncoreError

ScoreFn = Callable[[np.ndarray], np.ndarray]  # user indices -> (len, n_items) float32 scores


@dataclass
class Interactions:
    """Users x items implicit feedback with the ids and side information the models use."""

    user_ids: np.ndarray                  # index -> external user id
    item_ids: np.ndarray                  # index -> external item id
    plays: sp.csr_matrix                  # users x items, float32 play counts
    item_tags: list[list[str]] = field(default_factory=list)               # per item, most applied first
    user_tags: list[list[tuple[str, float]]] = field(default_factory=list)  # per user, (tag, weight)

    @property
    def shape(self) -> tuple[int, int]:
        return self.plays.shape

    def with_plays(self, plays: sp.csr_matrix) -> "Interactions":
        return Interactions(self.user_ids, self.item_ids, plays, self.item_tags, self.user_tags)


def _arrow(frame) -> pa.Table:
    return frame if isinstance(frame, pa.Table) else pa.Table.from_pandas(frame, preserve_index=False)


def _sorted_ids(column: pa.ChunkedArray) -> np.ndarray:
    return np.array(sorted(pc.unique(column).to_pylist()), dtype=object)


def arrow_strings(values) -> pa.ChunkedArray:
    """Arrow strings of one type: deltalake may hand over string, large_string or string_view, and
    pandas ids may be numbers."""
    values = values if isinstance(values, pa.ChunkedArray) else pa.chunked_array([values])
    return values.cast(pa.large_string())


def positions(values, value_set) -> np.ndarray:
    """The position of each value in ``value_set`` (an Arrow array or a numpy array of ids), -1 where
    absent, as int64. Computed in Arrow: at a million listeners a pandas column of the ids would hold
    tens of millions of Python strings."""
    if not isinstance(value_set, (pa.Array, pa.ChunkedArray)):
        value_set = pa.array(np.asarray(value_set).tolist())
    found = pc.index_in(arrow_strings(values), value_set=arrow_strings(value_set).combine_chunks())
    return found.fill_null(-1).to_numpy().astype(np.int64)


def build_interactions(interactions: pa.Table | pd.DataFrame, items: pa.Table | pd.DataFrame,
                       profiles: pa.Table | pd.DataFrame | None = None, what: str = "gold") -> Interactions:
    """Index gold.interactions / gold.items / gold.user_profiles rows (Arrow or pandas); stop if they disagree."""
    interactions, items = _arrow(interactions), _arrow(items)
    if interactions.num_rows == 0:
        raise EncoreError(f"{what}: gold.interactions has no rows for this date: run `encore features --date D` "
                          "after clean has produced plays")
    item_ids = _sorted_ids(items["item_id"])
    i = positions(interactions["item_id"], item_ids)
    if (i < 0).any():
        missing = pc.unique(interactions["item_id"].filter(pa.array(i < 0))).to_pylist()
        sample = ", ".join(sorted(map(str, missing))[:3])
        raise EncoreError(f"{what}: gold.interactions and gold.items are out of sync ({len(missing)} items such as "
                          f"{sample} have plays but no item row): rebuild both with `encore features --date D`")
    user_ids = _sorted_ids(interactions["user_id"])
    profiles = None if profiles is None else _arrow(profiles)
    if profiles is not None and profiles.num_rows:
        extra = positions(interactions["user_id"], _sorted_ids(profiles["user_id"]))
        if (extra < 0).any():
            unknown = len(pc.unique(interactions["user_id"].filter(pa.array(extra < 0))))
            raise EncoreError(f"{what}: gold.interactions and gold.user_profiles are out of sync ({unknown} users "
                              "have plays but no profile): rebuild both with `encore features --date D`")
    u = positions(interactions["user_id"], user_ids)
    plays = sp.csr_matrix((interactions["plays"].to_numpy().astype(np.float32), (u, i)),
                          shape=(len(user_ids), len(item_ids)), dtype=np.float32)
    plays.sum_duplicates()
    tags_by_item = dict(zip(items["item_id"].to_pylist(), items["top_tags"].to_pylist()))
    item_tags = [list(tags_by_item.get(x) or []) for x in item_ids]
    user_tags: list[list[tuple[str, float]]] = [[] for _ in user_ids]
    if profiles is not None and profiles.num_rows:
        by_user = dict(zip(profiles["user_id"].to_pylist(), profiles["tag_distribution"].to_pylist()))
        user_tags = [[(t["tag"], float(t["weight"])) for t in (by_user.get(x) or [])] for x in user_ids]
    return Interactions(user_ids, item_ids, plays, item_tags, user_tags)


# --- split ------------------------------------------------------------------------------------

PAIR_HASH_CHUNK = 1_000_000   # pairs hashed at a time: the joined id strings of all of them would not fit


def _pair_hash(user_ids: np.ndarray, item_ids: np.ndarray, rows: np.ndarray, cols: np.ndarray,
               seed: int) -> np.ndarray:
    """A keyed hash of each pair (user_ids[rows[n]], item_ids[cols[n]]), of the ids joined by a unit
    separator. Each string hashes on its own, so hashing a chunk of pairs at a time gives the same values."""
    key = f"encore-split-{seed:06d}"[:16].ljust(16, "0")
    out = np.empty(len(rows), dtype=np.uint64)
    for start in range(0, len(rows), PAIR_HASH_CHUNK):
        end = start + PAIR_HASH_CHUNK
        pairs = (pd.Series(user_ids[rows[start:end]].astype(str))
                 .str.cat(pd.Series(item_ids[cols[start:end]].astype(str)), sep="\x1f"))
        out[start:end] = pd.util.hash_array(pairs.to_numpy(dtype=object), hash_key=key, categorize=False)
    return out


def split_holdout(data: Interactions, share: float = 0.2, min_items: int = 5,
                  seed: int = 42) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """(train, held-out) play matrices following the protocol in the module docstring."""
    coo = data.plays.tocoo()
    order = np.lexsort((_pair_hash(data.user_ids, data.item_ids, coo.row, coo.col, seed), coo.row))  # stable
    users, items, plays = coo.row[order], coo.col[order], coo.data[order]
    per_user = np.bincount(users, minlength=data.plays.shape[0])
    n = per_user[users]
    rank = np.arange(len(users)) - (np.cumsum(per_user) - per_user)[users]   # position within the user's items
    held = rank < np.where(n >= min_items, np.maximum(1, np.floor(share * n + 0.5)), 0)

    def matrix(rows: np.ndarray) -> sp.csr_matrix:
        return sp.csr_matrix((plays[rows].astype(np.float32), (users[rows], items[rows])), shape=data.plays.shape)
    return matrix(~held), matrix(held)


# --- ranking and metrics ----------------------------------------------------------------------

RANKING_CELLS = 25_000_000   # users x items scored at a time: 100 MB of float32 per array


def top_k(score: ScoreFn, users: np.ndarray, exclude: sp.csr_matrix, k: int,
          block: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(items, scores), each (len(users), k), best first; the users' ``exclude`` items never appear."""
    return top_k_variants(lambda rows: [(None, score(rows))], users, exclude, k, block)[None]


def top_k_variants(scores: Callable[[np.ndarray], Iterable[tuple[Hashable, np.ndarray]]], users: np.ndarray,
                   exclude: sp.csr_matrix, k: int, block: int | None = None
                   ) -> dict[Hashable, tuple[np.ndarray, np.ndarray]]:
    """``top_k`` of several scorings in one pass over the users: ``scores(rows)`` yields (variant, scores)
    pairs for a block of users. Variants that share work (blends of the same two models) compute it
    once per block, and only one variant's block of scores is held at a time.

    A block holds ``RANKING_CELLS`` scores unless ``block`` says how many users: a scorer makes a few
    temporaries of its size (a blend's z-scores), so at 100K items 1,024 users cost gigabytes."""
    block = block or int(np.clip(RANKING_CELLS // max(1, exclude.shape[1]), 64, 8192))
    out: dict[Hashable, tuple[np.ndarray, np.ndarray]] = {}
    for start in range(0, len(users), block):
        rows = users[start:start + block]
        seen = exclude[rows]
        seen_rows = np.repeat(np.arange(len(rows)), np.diff(seen.indptr))
        for variant, block_scores in scores(rows):
            if variant not in out:
                out[variant] = (np.empty((len(users), k), dtype=np.int64), np.empty((len(users), k), dtype=np.float32))
            items_out, scores_out = out[variant]
            s = np.asarray(block_scores, dtype=np.float32).copy()
            s[seen_rows, seen.indices] = -np.inf
            kk = min(k, s.shape[1])
            part = np.argpartition(-s, kk - 1, axis=1)[:, :kk]
            order = np.take_along_axis(s, part, axis=1)
            # Ties broken by item index so a ranking is reproducible.
            idx = np.lexsort((part, -order), axis=1)
            items_out[start:start + len(rows), :kk] = np.take_along_axis(part, idx, axis=1)
            scores_out[start:start + len(rows), :kk] = np.take_along_axis(order, idx, axis=1)
    return out


def evaluate(recommended: np.ndarray, users: np.ndarray, held_out: sp.csr_matrix,
             train: sp.csr_matrix, k: int = 10) -> dict[str, float]:
    """Metrics of the protocol for ``recommended[j]`` = ranked item indices of ``users[j]``."""
    n_items = train.shape[1]
    listeners = np.asarray((train > 0).sum(axis=0)).ravel()
    n_head = max(1, math.ceil(0.01 * n_items))
    head = np.zeros(n_items, dtype=bool)
    head[np.argsort(-listeners, kind="stable")[:n_head]] = True
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    precision, recall, ndcg = [], [], []
    for row, user in zip(recommended[:, :k], users):
        truth = held_out.indices[held_out.indptr[user]:held_out.indptr[user + 1]]
        if len(truth) == 0:
            continue
        hits = np.isin(row, truth)
        precision.append(hits.sum() / k)
        recall.append(hits.sum() / len(truth))
        ndcg.append(float((hits * discounts).sum() / discounts[:min(len(truth), k)].sum()))
    shown = recommended[:, :k].ravel()
    return {
        f"precision_at_{k}": float(np.mean(precision)) if precision else 0.0,
        f"recall_at_{k}": float(np.mean(recall)) if recall else 0.0,
        f"ndcg_at_{k}": float(np.mean(ndcg)) if ndcg else 0.0,
        "coverage": len(np.unique(shown)) / n_items,
        "long_tail_share": float((~head[shown]).mean()) if len(shown) else 0.0,
        "evaluated_users": float(len(ndcg)),
    }


def evaluation_users(held_out: sp.csr_matrix, max_users: int | None = None, seed: int = 0) -> np.ndarray:
    """The users an evaluation scores: those with held-out items, or a fixed sample of ``max_users`` of
    them (the same for every model evaluated on ``held_out``, so their metrics stay comparable)."""
    users = np.flatnonzero(np.diff(held_out.indptr) > 0)
    if max_users and len(users) > max_users:
        users = np.sort(np.random.default_rng(seed).choice(users, max_users, replace=False))
    return users


def evaluate_scores(score: ScoreFn, train: sp.csr_matrix, held_out: sp.csr_matrix, k: int = 10,
                    max_users: int | None = None) -> dict[str, float]:
    users = evaluation_users(held_out, max_users)
    recommended, _ = top_k(score, users, train, k)
    return evaluate(recommended, users, held_out, train, k)


def evaluate_variants(scores: Callable[[np.ndarray], Iterable[tuple[Hashable, np.ndarray]]], train: sp.csr_matrix,
                      held_out: sp.csr_matrix, k: int = 10, max_users: int | None = None) -> dict[Hashable, dict]:
    """``evaluate_scores`` of each variant ``scores`` yields (see ``top_k_variants``), in one pass."""
    users = evaluation_users(held_out, max_users)
    ranked = top_k_variants(scores, users, train, k)
    return {variant: evaluate(items, users, held_out, train, k) for variant, (items, _) in ranked.items()}


# --- baselines --------------------------------------------------------------------------------

def binary(matrix: sp.csr_matrix) -> sp.csr_matrix:
    out = matrix.copy().astype(np.float32)
    out.data[:] = 1.0
    return out


def popularity(train: sp.csr_matrix) -> ScoreFn:
    listeners = np.asarray(binary(train).sum(axis=0), dtype=np.float32).ravel()
    return lambda users: np.broadcast_to(listeners, (len(users), len(listeners)))


def item_knn(train: sp.csr_matrix, neighbours: int = 200, block_cells: int = 50_000_000) -> ScoreFn:
    """Cosine item-item similarity, each item keeping its ``neighbours`` most similar items:
    score(u, j) = sum over the user's items i of cos(i, j) where i is among j's neighbours.

    The items x items similarity is built a block of items at a time and pruned at once, so its
    memory is bounded by ``block_cells`` cells rather than by the whole co-occurrence (hundreds of
    millions of pairs at a million listeners). Similarity is symmetric, so row j of a block is
    column j of the full matrix.
    """
    x = binary(train)
    n_items = x.shape[1]
    norm = np.sqrt(np.asarray(x.sum(axis=0)).ravel())
    inv = sp.diags(np.divide(1.0, norm, out=np.zeros_like(norm), where=norm > 0).astype(np.float32))
    xn = (x @ inv).tocsr()
    xn_by_item = xn.T.tocsr()
    step = max(1, block_cells // max(1, n_items))
    data, indices, counts = [], [], []
    for start in range(0, n_items, step):
        sim = (xn_by_item[start:start + step] @ xn).tocsr()
        rows = np.repeat(np.arange(sim.shape[0]), np.diff(sim.indptr))
        sim.data[sim.indices == rows + start] = 0  # an item is not its own neighbour
        sim.eliminate_zeros()
        sim.sort_indices()
        for j in range(sim.shape[0]):
            a, b = sim.indptr[j], sim.indptr[j + 1]
            values, others = sim.data[a:b], sim.indices[a:b]
            if len(values) > neighbours:
                keep = np.argpartition(-values, neighbours - 1)[:neighbours]
                values, others = values[keep], others[keep]
            data.append(values); indices.append(others); counts.append(len(values))
    indptr = np.concatenate([[0], np.cumsum(counts)]) if counts else np.zeros(1, dtype=np.int64)
    # Row j holds j's neighbours i; the score needs them as column j.
    pruned = sp.csr_matrix((np.concatenate(data) if data else np.zeros(0, np.float32),
                            np.concatenate(indices) if indices else np.zeros(0, np.int32), indptr),
                           shape=(n_items, n_items), dtype=np.float32).T.tocsr()
    return lambda users: (x[users] @ pruned).toarray()


def ease_matrix(train: sp.csr_matrix, lam: float = 200.0, max_items: int = 5000) -> tuple[np.ndarray, np.ndarray]:
    """EASE^R (Steck 2019): B = I - P diagMat(1/diag(P)), P = (X'X + lam I)^-1, diag(B) = 0.

    The closed form inverts an items x items matrix, so only the ``max_items`` items with the most
    listeners take part. Returns (modelled item indices, B as float32).
    """
    x = binary(train)
    listeners = np.asarray(x.sum(axis=0)).ravel()
    keep = np.argsort(-listeners, kind="stable")[:max_items]
    keep = np.sort(keep[listeners[keep] > 0])
    xk = x[:, keep]
    gram = (xk.T @ xk).toarray().astype(np.float64)
    gram[np.diag_indices_from(gram)] += lam
    p = np.linalg.inv(gram)
    b = (p / (-np.diag(p))).astype(np.float32)
    b[np.diag_indices_from(b)] = 0.0
    return keep, b


def ease(train: sp.csr_matrix, lam: float = 200.0, max_items: int = 5000) -> ScoreFn:
    """EASE scores; items outside the modelled set score -1e6, below every modelled item."""
    keep, b = ease_matrix(train, lam, max_items)
    x = binary(train)
    listeners = np.asarray(x.sum(axis=0)).ravel().astype(np.float32)
    xk = x[:, keep]
    n_items = train.shape[1]

    def score(users: np.ndarray) -> np.ndarray:
        out = np.full((len(users), n_items), np.float32(-1e6), dtype=np.float32)
        out[:, keep] = xk[users] @ b
        out[:, keep] += 1e-6 * listeners[keep]  # popularity breaks exact ties
        return out
    return score


BASELINES = {"popularity": popularity, "item_knn": item_knn, "ease": ease}
