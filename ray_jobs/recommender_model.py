"""The deployable recommender: LightFM factors (optionally blended with EASE), its ids and the
training plays, saved as one ``.npz`` bundle and wrapped as a custom ``mlflow.pyfunc`` model.

Scoring is matrix products only: LightFM gives U[u] . V + b; EASE gives X[u] . B over its items.
With ``blend_ease = w > 0`` the two are standardised per user (z-scores over the catalogue) and
mixed as (1 - w) * LightFM + w * EASE; w is chosen on validation data by the training job.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import scipy.sparse as sp

BUNDLE_FORMAT = 1


def _standardise(scores: np.ndarray) -> np.ndarray:
    mean = scores.mean(axis=1, keepdims=True)
    std = scores.std(axis=1, keepdims=True)
    return (scores - mean) / np.where(std > 0, std, 1.0)


@dataclass
class RecommenderBundle:
    user_ids: np.ndarray        # index -> external id (str)
    item_ids: np.ndarray
    user_factors: np.ndarray    # (n_users, d)
    item_factors: np.ndarray    # (n_items, d)
    item_bias: np.ndarray       # (n_items,)
    seen: sp.csr_matrix         # training plays: excluded from a user's list, and EASE's input
    listeners: np.ndarray       # training listeners per item (popularity)
    blend_ease: float = 0.0
    ease_items: np.ndarray | None = None   # item indices EASE models
    ease_weights: np.ndarray | None = None  # (len(ease_items), len(ease_items))

    def lightfm_scores(self, users: np.ndarray) -> np.ndarray:
        # The bias rides in the product ([U, 1] @ [V, b].T): one GEMM pass over the output instead of
        # a GEMM plus an addition; about 20% faster on a (block x all items) product.
        if getattr(self, "_items_with_bias", None) is None:
            self._items_with_bias = np.ascontiguousarray(
                np.hstack([self.item_factors, self.item_bias[:, None]]).T.astype(np.float32))
            self._users_with_one = np.hstack([self.user_factors, np.ones((len(self.user_factors), 1))]).astype(np.float32)
        return self._users_with_one[users] @ self._items_with_bias

    def ease_scores(self, users: np.ndarray) -> np.ndarray:
        history = self.seen[users][:, self.ease_items]
        history.data[:] = 1.0
        modelled = np.asarray(history @ self.ease_weights, dtype=np.float32)
        # Items EASE does not model rank just below its lowest score for that user.
        out = np.repeat(modelled.min(axis=1, keepdims=True) - 1e-3, self.item_factors.shape[0], axis=1)
        out[:, self.ease_items] = modelled
        return out

    def score(self, users: np.ndarray) -> np.ndarray:
        """(len(users), n_items) float32 scores for user indices."""
        return next(self.blended_scores(users, [self.blend_ease]))[1]

    def blended_scores(self, users: np.ndarray, weights) -> Iterator[tuple[float, np.ndarray]]:
        """(w, the scores ``score`` gives with ``blend_ease = w``) for each weight, one at a time; LightFM
        and EASE score the users once for all of them."""
        lfm = self.lightfm_scores(users)
        z_lfm = z_ease = None
        for w in weights:
            if w <= 0 or self.ease_weights is None:
                yield w, lfm.astype(np.float32, copy=False)
                continue
            if z_lfm is None:
                z_lfm, z_ease = _standardise(lfm), _standardise(self.ease_scores(users))
            yield w, ((1 - w) * z_lfm + w * z_ease).astype(np.float32)

    def score_pairs(self, user_ids, item_ids) -> np.ndarray:
        """Scores of (user, item) id pairs; NaN where the model does not know the user or the item."""
        u = pd.Index(self.user_ids).get_indexer(pd.Series(user_ids, dtype=object).astype(str))
        i = pd.Index(self.item_ids).get_indexer(pd.Series(item_ids, dtype=object).astype(str))
        out = np.full(len(u), np.nan, dtype=np.float32)
        known = (u >= 0) & (i >= 0)
        for user in np.unique(u[known]):
            rows = np.flatnonzero(known & (u == user))
            out[rows] = self.score(np.array([user]))[0, i[rows]]
        return out

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        arrays = dict(format=np.array(BUNDLE_FORMAT), user_ids=self.user_ids.astype(str), item_ids=self.item_ids.astype(str),
                      user_factors=self.user_factors, item_factors=self.item_factors, item_bias=self.item_bias,
                      seen_data=self.seen.data, seen_indices=self.seen.indices, seen_indptr=self.seen.indptr,
                      seen_shape=np.array(self.seen.shape), listeners=self.listeners,
                      blend_ease=np.array(self.blend_ease))
        if self.ease_weights is not None:
            arrays.update(ease_items=self.ease_items, ease_weights=self.ease_weights)
        np.savez(path, **arrays)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "RecommenderBundle":
        with np.load(path, allow_pickle=False) as z:
            if int(z["format"]) != BUNDLE_FORMAT:
                raise ValueError(f"recommender bundle format {int(z['format'])} is not {BUNDLE_FORMAT}")
            seen = sp.csr_matrix((z["seen_data"], z["seen_indices"], z["seen_indptr"]), shape=tuple(z["seen_shape"]))
            return cls(z["user_ids"].astype(object), z["item_ids"].astype(object), z["user_factors"], z["item_factors"],
                       z["item_bias"], seen, z["listeners"], float(z["blend_ease"]),
                       z["ease_items"] if "ease_items" in z else None, z["ease_weights"] if "ease_weights" in z else None)


def pyfunc_model():
    """The ``mlflow.pyfunc.PythonModel`` (built lazily so importing this module does not import MLflow)."""
    import mlflow.pyfunc

    class RecommenderPyfunc(mlflow.pyfunc.PythonModel):
        """predict(DataFrame[user_id, item_id]) -> DataFrame[user_id, item_id, score]."""

        def load_context(self, context):
            self.bundle = RecommenderBundle.load(context.artifacts["bundle"])

        def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
            scores = self.bundle.score_pairs(model_input["user_id"], model_input["item_id"])
            return pd.DataFrame({"user_id": model_input["user_id"].astype(str).to_numpy(),
                                 "item_id": model_input["item_id"].astype(str).to_numpy(), "score": scores})

    return RecommenderPyfunc()


def pyfunc_signature():
    """The pyfunc's schema, stated rather than inferred: inferring it from an input example makes MLflow
    load the logged bundle back, twice with its serving check, and at a million listeners each copy is
    a gigabyte on top of the training job's peak."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema
    pair = [ColSpec("string", "user_id"), ColSpec("string", "item_id")]
    return ModelSignature(inputs=Schema(pair), outputs=Schema([*pair, ColSpec("float", "score")]))


def load_bundle(model_uri: str) -> RecommenderBundle:
    """The bundle behind a logged model, e.g. ``models:/encore-recommender@champion``."""
    import mlflow.pyfunc
    return mlflow.pyfunc.load_model(model_uri).unwrap_python_model().bundle
