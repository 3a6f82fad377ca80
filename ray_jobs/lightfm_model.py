"""The LightFM recommender: side features, a fit with early stopping, and its factor form.

Item features: identity + the item's tags among the ``n_tags`` most used ones (gold.items.top_tags,
weighted by ``1/rank``), rows L1-normalised with the identity holding ``1 - tag_share``.
User features: identity + the tags of what the user played *in the training split* (play-weighted,
same vocabulary), so held-out plays never leak into features; same normalisation with
``user_tag_share``. A trained model reduces to factors: score(u, i) = U[u] . V[i] + b[i] (the user
bias does not change a user's ranking), which is what scoring and the MLflow model use.
"""
from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass
from typing import Callable

import numpy as np
import scipy.sparse as sp

from ray_jobs.recsys import Interactions, evaluate_scores

log = logging.getLogger(__name__)

DEFAULT_PARAMS = {
    "loss": "warp", "no_components": 128, "learning_rate": 0.05, "item_alpha": 0.0, "user_alpha": 0.0,
    "max_sampled": 10, "epochs": 100, "n_tags": 500, "tag_share": 0.5, "user_tag_share": 0.0,
    "weighting": "binary", "blend_ease": 0.0, "ensemble": 1,
}


def tag_vocabulary(data: Interactions, n_tags: int) -> list[str]:
    counts = Counter(tag for tags in data.item_tags for tag in tags)
    return [tag for tag, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n_tags]]


def _with_identity(tag_part: sp.csr_matrix, share: float) -> sp.csr_matrix:
    """[identity * (1 - share) | tag rows L1-normalised * share]; rows without tags keep identity 1."""
    sums = np.asarray(tag_part.sum(axis=1)).ravel()
    has = sums > 0
    scale = np.where(has, share / np.where(has, sums, 1.0), 0.0)
    tags = sp.diags(scale.astype(np.float32)) @ tag_part
    ident = sp.diags(np.where(has, 1.0 - share, 1.0).astype(np.float32))
    return sp.hstack([ident, tags], format="csr", dtype=np.float32)


def item_tag_matrix(data: Interactions, vocabulary: list[str]) -> sp.csr_matrix:
    index = {t: j for j, t in enumerate(vocabulary)}
    rows, cols, vals = [], [], []
    for i, tags in enumerate(data.item_tags):
        for rank, tag in enumerate(tags):
            if tag in index:
                rows.append(i); cols.append(index[tag]); vals.append(1.0 / (rank + 1))
    return sp.csr_matrix((vals, (rows, cols)), shape=(len(data.item_ids), len(vocabulary)), dtype=np.float32)


def weights(train: sp.csr_matrix, weighting: str) -> sp.coo_matrix:
    if weighting not in ("binary", "log"):
        raise ValueError(f"weighting '{weighting}' is not binary or log")
    out = train.tocoo(copy=True).astype(np.float32)
    out.data = np.ones_like(out.data) if weighting == "binary" else np.log1p(out.data).astype(np.float32)
    return out


@dataclass
class Features:
    vocabulary: list[str]
    item: sp.csr_matrix | None
    user: sp.csr_matrix | None


def build_features(data: Interactions, train: sp.csr_matrix, params: dict) -> Features:
    n_tags, share, user_share = int(params["n_tags"]), float(params["tag_share"]), float(params["user_tag_share"])
    vocabulary = tag_vocabulary(data, n_tags) if n_tags > 0 else []
    tag_part = item_tag_matrix(data, vocabulary)
    item = _with_identity(tag_part, share) if vocabulary and share > 0 else None
    user = None
    if vocabulary and user_share > 0:
        plays = sp.csr_matrix(weights(train, "log"))
        user = _with_identity((plays @ tag_part).tocsr(), user_share)
    return Features(vocabulary, item, user)


@dataclass
class Factors:
    """A fitted model in factor form; score(u, i) = user[u] . item[i] + item_bias[i]."""

    user: np.ndarray       # (n_users, d) float32
    item: np.ndarray       # (n_items, d) float32
    item_bias: np.ndarray  # (n_items,) float32

    def score(self, users: np.ndarray) -> np.ndarray:
        return self.user[users] @ self.item.T + self.item_bias


def factors_of(models, features: Features) -> Factors:
    """One model's factors, or an ensemble's: averaging the members' scores is one dot product of
    the concatenated factors (users scaled by 1/n) plus the mean item bias."""
    models = models if isinstance(models, list) else [models]
    users, items, biases = [], [], []
    for model in models:
        item_bias, item_emb = model.get_item_representations(features.item)
        _, user_emb = model.get_user_representations(features.user)
        users.append(user_emb / len(models)); items.append(item_emb); biases.append(item_bias)
    return Factors(np.hstack(users).astype(np.float32), np.hstack(items).astype(np.float32),
                   np.mean(biases, axis=0).astype(np.float32))


EpochCallback = Callable[[int, dict[str, float], float], bool]  # (epoch, metrics, seconds) -> stop?


def fit(data: Interactions, train: sp.csr_matrix, params: dict, *, seed: int, threads: int = 1,
        validation: sp.csr_matrix | None = None, eval_every: int = 10, patience: int = 2,
        on_eval: EpochCallback | None = None, eval_users: int | None = None):
    """Fit LightFM; with ``validation``, evaluate NDCG@10 every ``eval_every`` epochs and stop after
    ``patience`` evaluations without improvement. Returns (models, features, best_epoch, history).

    Without validation and with ``ensemble = n > 1``, n models with seeds seed..seed+n-1 are fitted
    for ``epochs`` each (an average of seeds is steadier than any one of them).
    """
    from lightfm import LightFM
    p = {**DEFAULT_PARAMS, **params}
    features = build_features(data, train, p)

    def new_model(model_seed: int):
        return LightFM(no_components=int(p["no_components"]), loss=str(p["loss"]),
                       learning_rate=float(p["learning_rate"]), item_alpha=float(p["item_alpha"]),
                       user_alpha=float(p["user_alpha"]), max_sampled=int(p["max_sampled"]), random_state=model_seed)
    model = new_model(seed)
    w = weights(train, str(p["weighting"]))
    interactions = sp.coo_matrix((np.ones_like(w.data), (w.row, w.col)), shape=w.shape)
    sample_weight = None if p["weighting"] == "binary" else w
    history: list[dict] = []
    best, best_epoch, since_best, done = -1.0, int(p["epochs"]), 0, 0
    while done < int(p["epochs"]):
        step = min(eval_every, int(p["epochs"]) - done) if validation is not None else int(p["epochs"])
        started = time.perf_counter()
        model.fit_partial(interactions, user_features=features.user, item_features=features.item,
                          sample_weight=sample_weight, epochs=step, num_threads=threads)
        seconds = time.perf_counter() - started
        done += step
        if validation is None:
            break
        metrics = evaluate_scores(factors_of(model, features).score, train, validation, max_users=eval_users)
        history.append({"epoch": done, "seconds_per_epoch": seconds / step, **metrics})
        stop = on_eval(done, metrics, seconds / step) if on_eval else False
        if metrics["ndcg_at_10"] > best + 1e-6:
            best, best_epoch, since_best = metrics["ndcg_at_10"], done, 0
        else:
            since_best += 1
        if stop or since_best >= patience:
            break
    models = [model]
    if validation is None:
        for member in range(1, int(p["ensemble"])):
            extra = new_model(seed + member)
            extra.fit_partial(interactions, user_features=features.user, item_features=features.item,
                              sample_weight=sample_weight, epochs=int(p["epochs"]), num_threads=threads)
            models.append(extra)
    return models, features, best_epoch, history
