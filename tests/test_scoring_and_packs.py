"""Pieces that a whole night reaches, tested on their own on hand-made inputs: the block scorer's
three strategies (model, tag profile, popularity) with their reasons, and how packs are assigned
(styles from tags, slots by largest remainder, draws from the pools without repeats)."""
from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from ray_jobs.packs import _assemble, _sketch_rows, allocate, tag_styles, user_styles
from ray_jobs.recommender_model import RecommenderBundle
from ray_jobs.score import POPULAR_REASON, BlockScorer, ScoringContext, _tag_rows

pytestmark = pytest.mark.unit

ITEMS = np.array(["i0", "i1", "i2", "i3", "i4"], dtype=object)   # i4 is new: the model does not know it
NAMES = np.array(["Abba", "Blur", "Cream", "Dido", "Elbow"], dtype=object)


def scorer(top_k: int = 5) -> BlockScorer:
    bundle = RecommenderBundle(
        user_ids=np.array(["u0"]), item_ids=ITEMS[:4],
        user_factors=np.array([[1.0, 0.0]]),
        item_factors=np.array([[1.0, 0.0], [0.9, 0.1], [0.1, 0.9], [0.5, 0.5]]),
        item_bias=np.zeros(4), seen=sp.csr_matrix((1, 4), dtype=np.float32), listeners=np.ones(4))
    context = ScoringContext(
        bundle=bundle, item_ids=ITEMS, item_names=NAMES,
        popularity=np.array([0.5, 0.9, 0.2, 0.4, 0.1], dtype=np.float32),
        item_tags=sp.csr_matrix(np.array([[0, 0], [0, 0], [1, 0], [0, 1], [0, 0]], dtype=np.float32)),
        tag_names=np.array(["folk", "rock"], dtype=object),
        user_ids=np.array(["u0", "u1", "u2"], dtype=object),
        user_model_index=np.array([0, -1, -1]),
        user_tags=sp.csr_matrix(np.array([[0, 0], [1, 0], [0, 0]], dtype=np.float32)),
        played=sp.csr_matrix(np.array([[3, 0, 0, 0, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0]], dtype=np.float32)),
        top_k=top_k)
    return BlockScorer([context])


def lists(out: dict) -> dict[str, list[tuple]]:
    frame = pd.DataFrame(out)
    return {u: list(zip(g["rank"], g["item_id"], g["strategy"], g["reason"]))
            for u, g in frame.sort_values(["user_id", "rank"]).groupby("user_id")}


def test_each_listener_gets_the_strategy_their_data_allows():
    s = scorer()
    assert list(s.strategy) == ["model", "tag_profile", "popularity"]


def test_the_model_ranks_known_items_skips_played_ones_and_explains_from_the_history():
    got = lists(scorer()({"row": np.array([0])}))["u0"]
    # i0 was played: never recommended. Model items by score, then the new item by popularity.
    assert [item for _, item, _, _ in got] == ["i1", "i3", "i2", "i4"]
    assert [rank for rank, *_ in got] == [1, 2, 3, 4]
    assert all(reason == "because you play Abba" and strategy == "model" for _, _, strategy, reason in got[:3])
    assert got[3][2:] == ("popularity", POPULAR_REASON)


def blended_bundle(rng, users=40, items=300, modelled=60, w=0.3) -> RecommenderBundle:
    seen = sp.random(users, items, density=0.05, format="csr", dtype=np.float32, random_state=3)
    return RecommenderBundle(
        user_ids=np.array([f"u{u}" for u in range(users)], dtype=object),
        item_ids=np.array([f"i{i}" for i in range(items)], dtype=object),
        user_factors=rng.normal(size=(users, 8)).astype(np.float32),
        item_factors=rng.normal(size=(items, 8)).astype(np.float32), item_bias=rng.normal(size=items).astype(np.float32),
        seen=seen, listeners=np.ones(items, np.float32), blend_ease=w,
        ease_items=np.sort(rng.choice(items, modelled, replace=False)),
        ease_weights=rng.normal(size=(modelled, modelled)).astype(np.float32))


def test_the_blend_is_the_z_score_mix_of_lightfm_and_ease_and_the_scorer_ranks_by_it():
    bundle = blended_bundle(np.random.default_rng(7))
    users = np.arange(40)

    def z(x):
        x = x.astype(np.float64)
        return (x - x.mean(axis=1, keepdims=True)) / x.std(axis=1, keepdims=True)
    lightfm, ease = bundle.lightfm_scores(users), bundle.ease_scores(users)
    for w, scores in bundle.blended_scores(users, [0.0, 0.3, 0.8]):
        expected = lightfm if w == 0 else (1 - w) * z(lightfm) + w * z(ease)
        np.testing.assert_allclose(scores, expected, atol=2e-5)

    context = ScoringContext(
        bundle=bundle, item_ids=bundle.item_ids, item_names=bundle.item_ids, popularity=np.zeros(300, np.float32),
        item_tags=sp.csr_matrix((300, 1), dtype=np.float32), tag_names=np.array(["folk"], dtype=object),
        user_ids=bundle.user_ids, user_model_index=users, user_tags=sp.csr_matrix((40, 1), dtype=np.float32),
        played=bundle.seen, top_k=10)
    got = pd.DataFrame(BlockScorer([context])({"row": users}))
    expected = bundle.score(users)
    expected[bundle.seen.nonzero()] = -np.inf
    for u, rows in got.groupby("user_id"):
        row = int(u[1:])
        np.testing.assert_allclose(rows.sort_values("rank")["score"], np.sort(expected[row])[::-1][:10], atol=1e-5)


def test_a_new_listener_with_tags_gets_tag_matches_first_then_popular_items():
    got = lists(scorer()({"row": np.array([1])}))["u1"]
    assert got[0] == (1, "i2", "tag_profile", "because you like folk")
    assert [item for _, item, _, _ in got[1:]] == ["i1", "i0", "i3", "i4"]   # by popularity
    assert all(strategy == "popularity" and reason == POPULAR_REASON for _, _, strategy, reason in got[1:])


def test_a_listener_without_data_gets_the_popular_items_and_k_bounds_every_list():
    out = scorer(top_k=3)({"row": np.array([0, 1, 2])})
    got = lists(out)
    assert [item for _, item, _, _ in got["u2"]] == ["i1", "i0", "i3"]
    assert {u: len(rows) for u, rows in got.items()} == {"u0": 3, "u1": 3, "u2": 3}


def test_tag_matrices_are_built_from_arrow_lists_as_the_rows_say():
    import pyarrow as pa
    vocabulary = pa.array(["folk", "jazz", "rock"], type=pa.large_string())
    weighted = pa.chunked_array([pa.array([
        [{"tag": "rock", "weight": 0.6}, {"tag": "folk", "weight": 0.3}, {"tag": "rock", "weight": 0.1}],
        None,
        [{"tag": "unheard-of", "weight": 0.5}, {"tag": "jazz", "weight": 0.0}],
        [{"tag": "jazz", "weight": 1.0}],
    ])])
    # List 3 belongs to no row; list 0 goes to row 2; repeated tags add up; unknown and zero weights vanish.
    m = _tag_rows(np.array([2, 0, 1, -1]), weighted, vocabulary, 3, weighted=True).toarray()
    assert np.allclose(m[0], 0) and np.allclose(m[1], 0)
    assert np.allclose(m[2], np.array([0.3, 0.0, 0.7]) / np.hypot(0.3, 0.7))
    # Plain lists weigh position r by 1/sqrt(r + 1), also in a sliced array.
    plain = pa.array([["jazz"], ["rock", "folk", "jazz"], [], ["folk", None, "jazz"]]).slice(1)
    m = _tag_rows(np.array([0, 1, 2]), plain, vocabulary, 3, weighted=False).toarray()
    expected = np.array([[1 / np.sqrt(2), 1 / np.sqrt(3), 1.0], [0, 0, 0], [1.0, 1 / np.sqrt(3), 0]])
    expected /= np.maximum(np.linalg.norm(expected, axis=1, keepdims=True), 1e-12)
    assert np.allclose(m, expected)


def test_styles_come_from_tags_and_slots_follow_the_shares():
    style_tags = {"pop": ["pop", "rock"], "folk": ["folk", "celtic"], "chorale": ["choral"]}
    known = ["chorale", "folk", "pop"]
    assert tag_styles("Celtic Folk", style_tags, known) == ["folk"]
    assert tag_styles("folk rock", style_tags, known) == ["folk", "pop"]
    tastes = [{"tag": "rock", "weight": 3.0}, {"tag": "celtic", "weight": 1.0}, {"tag": "jazz", "weight": 5.0}]
    assert user_styles(tastes, style_tags, known, 2, "folk") == [("pop", 0.75), ("folk", 0.25)]
    assert user_styles([], style_tags, known, 2, "folk") == [("folk", 1.0)]
    assert allocate([("pop", 0.75), ("folk", 0.25)], 3) == ["pop", "pop", "folk"]
    assert allocate([("pop", 0.5), ("folk", 0.5)], 3).count("pop") >= 1
    assert allocate([("pop", 0.1), ("folk", 0.9)], 2)[0] == "pop"   # the strongest listed style always gets one


def test_packs_draw_from_the_pools_without_repeats_and_are_deterministic():
    sketch = {"passed": True, "tempo_bpm": 100.0, "chords": ["C"], "n_notes": 10, "in_scale": 1.0,
              "longest_shared_intervals": 2, "midi": b"MThd"}
    pool = pd.DataFrame([{**sketch, "style": "folk", "key": "D major", "tempo_bucket": "medium", "slot": i,
                          "used_seed": 100 + i, "sketch_id": f"s{100 + i}"} for i in range(3)]
                        + [{**sketch, "style": "folk", "key": "D major", "tempo_bucket": "medium", "slot": 9,
                            "used_seed": 999, "sketch_id": "s999", "passed": False}])
    recs = pd.DataFrame({"user_id": ["a", "a", "a"], "rank": [1, 2, 3], "item_id": ["x", "y", "z"],
                         "item_name": ["X", "Y", "Z"]})
    combos = {"folk": [("D major", "medium")]}
    slots = {"a": ["folk", "folk", "folk", "folk"], "b": ["folk"]}
    args = (["a", "b"], slots, combos, pool, recs, dt.date(2026, 11, 20), 1, 2)
    rows, short = _assemble(*args)
    by_user = {r["user_id"]: r for r in rows}
    named = [s["sketch_id"] for s in by_user["a"]["sketches"]]
    assert sorted(named) == ["s100", "s101", "s102"]  # three passed sketches, none twice, the failed one never
    assert set(by_user["a"]["sketches"][0]) == {"sketch_id", "style", "key", "tempo_bucket"}   # a reference, no MIDI
    stored = _sketch_rows(pd.concat([pool, pool.iloc[:1]]), 8)
    assert sorted(r["sketch_id"] for r in stored) == ["s100", "s101", "s102"]   # once each, passed only
    assert short == 1                                 # b got one sketch: a short pack
    assert [s["item_id"] for s in by_user["a"]["seed_items"]] == ["x", "y"] and by_user["b"]["seed_items"] == []
    again, _ = _assemble(*args)
    assert [r["sketches"] for r in again] == [r["sketches"] for r in rows]
