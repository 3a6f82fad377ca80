"""The n-gram baseline (interpolated Kneser-Ney over token windows): a proper distribution, the same
probabilities by both paths, and it learns what it is shown."""
from __future__ import annotations

import numpy as np
import pytest

from ray_jobs.music_ngram import KneserNey, _top_p

pytestmark = pytest.mark.unit

PAD = 0


def _windows(rng: np.random.Generator, rows: int, length: int, vocab: int) -> np.ndarray:
    """Rows of a noisy repeating pattern, right-padded like training windows."""
    pattern = np.array([3, 5, 7, 5, 9, 4])
    out = np.full((rows, length), PAD)
    for r in range(rows):
        n = rng.integers(length // 2, length + 1)
        seq = np.resize(np.roll(pattern, r), n)
        noise = rng.random(n) < 0.1
        seq[noise] = rng.integers(1, vocab, noise.sum())
        out[r, :n] = seq
    return out


@pytest.mark.parametrize("order", [1, 2, 3, 5])
def test_every_context_gets_a_distribution_that_sums_to_one(order):
    rng = np.random.default_rng(order)
    model = KneserNey(order, 12, PAD).fit(_windows(rng, 40, 30, 12))
    for history in ([], [3], [3, 5], [5, 7, 5, 9], [11, 11, 11, 11], [1, 2, 3, 4, 5, 6, 7]):
        p = model.next_distribution(history)
        assert p.shape == (12,) and (p > 0).all() and p.sum() == pytest.approx(1.0, abs=1e-9)


def test_window_scoring_matches_the_sampler_distribution():
    rng = np.random.default_rng(1)
    train, held_out = _windows(rng, 60, 24, 10), _windows(rng, 5, 24, 10)
    model = KneserNey(4, 10, PAD).fit(train)
    probs = model.target_probabilities(held_out)
    for r in range(len(held_out)):
        for j in range(1, held_out.shape[1]):
            if held_out[r, j] == PAD:
                assert np.isnan(probs[r, j - 1])
                continue
            expected = model.next_distribution(list(held_out[r, :j]))[held_out[r, j]]
            assert probs[r, j - 1] == pytest.approx(expected, rel=1e-9)


def test_higher_orders_learn_the_pattern_and_beat_uniform():
    rng = np.random.default_rng(2)
    train, held_out = _windows(rng, 200, 40, 16), _windows(rng, 20, 40, 16)
    nll = {}
    for order in (1, 2, 4):
        total, count = KneserNey(order, 16, PAD).fit(train).nll_totals(held_out)
        nll[order] = total / count
    assert nll[4] < nll[2] < nll[1] < np.log(16)
    # After 5 -> 7 -> 5 the pattern continues with 9 (noise aside).
    assert KneserNey(4, 16, PAD).fit(train).next_distribution([5, 7, 5]).argmax() == 9


def test_top_p_keeps_the_smallest_head_holding_the_mass():
    p = np.array([0.5, 0.3, 0.15, 0.05])
    assert _top_p(p, 0.7).tolist() == pytest.approx([0.5 / 0.8, 0.3 / 0.8, 0, 0])
    assert _top_p(p, 0.3).tolist() == pytest.approx([1, 0, 0, 0])
    assert _top_p(p, 1.0) is p
