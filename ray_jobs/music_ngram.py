"""The music model's baseline: an interpolated Kneser-Ney n-gram model over the same BPE windows.

Fitted on the training windows the Transformer sees (conditioning prefix included) and scored on
the same targets (every non-pad token after the first of a window, with no more history than the
window holds), so its NLL per token and per note compare directly with ``valid_nll_per_token``.
Counts live in sorted numpy arrays of base-V codes (an n-gram of token ids is one int64), so a
fit over ~7M tokens takes seconds. Discounts per order are Ney's n1 / (n1 + 2 n2); lower orders use
continuation counts (how many distinct tokens precede an n-gram), as Kneser-Ney prescribes;
the uniform distribution lies beneath order 1, so every token keeps some probability.

``NgramGenerator`` samples it with the Transformer generator's conditioning, stopping and
decoding, so its sketches go through the same musical measures (``music_quality.report``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class _Order:
    grams: np.ndarray      # sorted codes of the n-grams seen
    raw: np.ndarray        # their counts
    cont: np.ndarray       # their continuation counts (distinct left neighbours); unused at the top order
    discount: float
    cont_discount: float
    # per context (the first n-1 tokens): codes, summed counts and distinct followers, raw and continuation
    contexts: np.ndarray
    raw_total: np.ndarray
    raw_types: np.ndarray
    cont_total: np.ndarray
    cont_types: np.ndarray


def _lookup(keys: np.ndarray, values: np.ndarray, queries: np.ndarray) -> np.ndarray:
    at = np.searchsorted(keys, queries)
    at_clipped = np.minimum(at, len(keys) - 1)
    found = (at < len(keys)) & (keys[at_clipped] == queries)
    return np.where(found, values[at_clipped], 0)


def _discount(counts: np.ndarray) -> float:
    """Ney's n1 / (n1 + 2 n2), kept within [0.1, 0.9]: with no singletons it would be 0 and leave the
    lower orders (and unseen tokens) no mass at all."""
    n1, n2 = int((counts == 1).sum()), int((counts == 2).sum())
    return min(0.9, max(0.1, n1 / (n1 + 2 * n2))) if n1 + n2 else 0.75


class KneserNey:
    def __init__(self, order: int, vocab_size: int, pad_id: int):
        if vocab_size ** order >= 2 ** 62:
            raise ValueError(f"a {order}-gram over {vocab_size} tokens does not fit one int64 code")
        self.order, self.vocab, self.pad = order, vocab_size, pad_id
        self.orders: list[_Order] = []

    def _codes(self, windows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Codes of every k-gram ending at a non-pad token, and a mask of the positions that have one."""
        n, t = windows.shape
        code = np.zeros((n, t - k + 1), dtype=np.int64)
        for i in range(k):
            code = code * self.vocab + windows[:, i:t - k + 1 + i]
        valid = windows[:, k - 1:] != self.pad
        return code, valid

    def fit(self, windows: np.ndarray) -> "KneserNey":
        windows = windows.astype(np.int64)
        raw = []
        for k in range(1, self.order + 1):
            code, valid = self._codes(windows, k)
            raw.append(np.unique(code[valid], return_counts=True))
        self.orders = []
        for k in range(1, self.order + 1):
            grams, counts = raw[k - 1]
            if k < self.order:  # continuation count: distinct (k+1)-grams that end with this k-gram
                suffix, cont_counts = np.unique(raw[k][0] % self.vocab ** k, return_counts=True)
                cont = _lookup(suffix, cont_counts, grams)
            else:
                cont = counts
            contexts, first = np.unique(grams // self.vocab, return_index=True)
            self.orders.append(_Order(
                grams, counts, cont, _discount(counts), _discount(cont[cont > 0]), contexts,
                np.add.reduceat(counts, first), np.diff(np.append(first, len(grams))),
                np.add.reduceat(cont, first), np.add.reduceat((cont > 0).astype(np.int64), first)))
        return self

    def _level(self, k: int, grams: np.ndarray, lower: np.ndarray, top: bool) -> np.ndarray:
        o = self.orders[k - 1]
        context = grams // self.vocab
        if top:
            count, total, types, d = _lookup(o.grams, o.raw, grams), o.raw_total, o.raw_types, o.discount
        else:
            count, total, types, d = _lookup(o.grams, o.cont, grams), o.cont_total, o.cont_types, o.cont_discount
        c_h = _lookup(o.contexts, total, context).astype(np.float64)
        n1_h = _lookup(o.contexts, types, context).astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            p = np.maximum(count - d, 0) / c_h + d * n1_h / c_h * lower
        return np.where(c_h > 0, p, lower)

    def target_probabilities(self, windows: np.ndarray) -> np.ndarray:
        """P(token | window history) for every (row, position >= 1); NaN where the target is padding."""
        windows = windows.astype(np.int64)
        n, t = windows.shape
        probs = np.full((n, t - 1), np.nan)
        positions = np.arange(1, t)
        for j in positions:  # position j: history of min(j, order-1) tokens
            top = min(j + 1, self.order)
            target = windows[:, j]
            p = np.full(n, 1.0 / self.vocab)
            for k in range(1, top + 1):
                gram = np.zeros(n, dtype=np.int64)
                for i in range(j - k + 1, j + 1):
                    gram = gram * self.vocab + windows[:, i]
                p = self._level(k, gram, p, top=k == top)
            probs[:, j - 1] = np.where(target != self.pad, p, np.nan)
        return probs

    def nll_totals(self, windows: np.ndarray) -> tuple[float, int]:
        """Summed NLL (nats) and target count, over the same targets as ``music_model.nll_totals``."""
        probs = self.target_probabilities(windows)
        kept = probs[~np.isnan(probs)]
        return float(-np.log(kept).sum()), int(kept.size)

    def next_distribution(self, history: list[int]) -> np.ndarray:
        """P(w | the last order-1 tokens of history) for every w in the vocabulary."""
        words = np.arange(self.vocab, dtype=np.int64)
        h = history[-(self.order - 1):] if self.order > 1 else []
        p = np.full(self.vocab, 1.0 / self.vocab)
        top = len(h) + 1
        for k in range(1, top + 1):
            prefix = 0
            for token in h[len(h) - (k - 1):] if k > 1 else []:
                prefix = prefix * self.vocab + int(token)
            p = self._level(k, prefix * self.vocab + words, p, top=k == top)
        return p / p.sum()


class NgramGenerator:
    """Sketches from a ``KneserNey`` model, conditioned, stopped and decoded as ``MusicGenerator``'s are."""

    def __init__(self, model: KneserNey, tokenizer_path, context: int = 256):
        from ray_jobs.music_bundle import SketchDecoder
        self.ngram, self.context = model, context
        self.decoder = SketchDecoder(tokenizer_path)
        self.tokenizer, self.vocab = self.decoder.tokenizer, self.decoder.vocab

    def generate(self, conditions: list[tuple[str, str, str]], seeds: list[int], *, bars: int = 8,
                 temperature: float = 1.0, top_p: float = 0.95, max_tokens: int | None = None,
                 in_key: bool = False, tonic_frame: bool = False):
        bar_ids = set(self.decoder.bar_ids)
        rows = []
        for condition, seed in zip(conditions, seeds):
            banned = self.decoder.banned() + (self.decoder.out_of_key(condition[1]) if in_key else [])
            per_bar = self.decoder.bar_bans(condition[1], bars, tonic_frame=tonic_frame)
            rng = np.random.default_rng(seed)
            row = list(self.vocab.prefix(*condition))
            limit, bars_seen = max_tokens or self.context - len(row), 0
            for _ in range(limit):
                p = self.ngram.next_distribution(row) ** (1.0 / max(temperature, 1e-5))
                p[banned] = 0.0
                p[self.vocab.eos_id] = 0.0   # the bar budget ends a sketch, as in the Transformer's sampler
                if per_bar:
                    p[per_bar[min(max(bars_seen - 1, 0), len(per_bar) - 1)]] = 0.0
                p = _top_p(p / p.sum(), top_p)
                token = int(rng.choice(len(p), p=p))
                row.append(token)
                bars_seen += token in bar_ids
                if token == self.vocab.eos_id or bars_seen > bars:
                    break
            rows.append(row)
        return self.decoder.sketches(conditions, seeds, rows, len(self.vocab.prefix(*conditions[0])))


def _top_p(p: np.ndarray, top_p: float) -> np.ndarray:
    """The smallest set of most likely tokens holding ``top_p`` of the mass, renormalised (as the Transformer's)."""
    if top_p >= 1.0:
        return p
    order = np.argsort(-p)
    mass = np.cumsum(p[order])
    keep = order[: int(np.searchsorted(mass - p[order], top_p)) or 1]
    out = np.zeros_like(p)
    out[keep] = p[keep]
    return out / out.sum()
