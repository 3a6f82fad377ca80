"""The music model's quality measures and report: per style, generated sketches against real pieces.

Real pieces are measured on their first ``bars`` bars, as long as a sketch, with the same code.
Per piece (all notes of the merged score):
  pitch_class_entropy      Shannon entropy (bits) of the duration-weighted pitch-class histogram
  scale_consistency        the largest share of notes inside one major or minor scale (best of 24)
  groove_consistency       1 - mean Hamming distance between the onset grids (16 steps) of
                           consecutive bars (Wu & Yang 2020): 1 = every bar has the same rhythm
  diatonic_chord_share     share of bars whose detected triad (``music.bar_chords``) belongs to the
                           piece's key (requested for a sketch, annotated for a real piece)
  chord_transition_loglik  mean ln P(chord | previous chord) under key-relative chord bigrams counted
                           on training pieces (add-one smoothed; higher = more familiar harmony)
Per style, as shares:
  key_adherence            the key detected on the notes (Krumhansl-Schmuckler) is the requested
                           one; for real pieces, the annotated one (the detector's own agreement)
  style_adherence          a logistic regression on key-relative pitch-class, onset-position and
                           duration histograms, trained on training pieces' openings, names the
                           requested style; for real pieces, its accuracy on held-out pieces
Each row: generated mean, real mean and standard deviation, the 1-Wasserstein distance between
the two distributions, and counts. Logged to MLflow with validation NLL after each training.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from encore import music

METRICS = ("pitch_class_entropy", "scale_consistency", "groove_consistency", "diatonic_chord_share",
           "chord_transition_loglik")
SHARES = ("key_adherence", "style_adherence")
QUALITIES = tuple(music.TRIADS)


def opening(score, bars: int):
    """The score's first ``bars`` 4/4 bars (a sketch's length), so real pieces and sketches compare."""
    return score.clip(0, score.ticks_per_quarter * 4 * bars)


def _notes(score):
    notes = score.tracks[0].notes.numpy() if len(score.tracks) else None
    return notes if notes is not None and len(notes["pitch"]) >= 2 else None


def _relative(chord: tuple[int, str], key: str) -> int:
    """A chord as one of 36 states relative to the key's tonic: (interval above the tonic, quality)."""
    tonic = music.PITCH_NAMES.index(key.split()[0])
    return ((chord[0] - tonic) % 12) * len(QUALITIES) + QUALITIES.index(chord[1])


@dataclass
class ChordBigrams:
    """Key-relative chord bigram log-probabilities, one table per mode, add-one smoothed."""
    log_prob: dict[str, np.ndarray]

    @classmethod
    def fit(cls, pieces: list[tuple[object, str]]) -> "ChordBigrams":
        states = 12 * len(QUALITIES)
        counts = {"major": np.ones((states, states)), "minor": np.ones((states, states))}
        for score, key in pieces:
            seq = [_relative(c, key) for c in music.bar_chords(score) if c is not None]
            for a, b in zip(seq, seq[1:]):
                counts[key.split()[1]][a, b] += 1
        return cls({mode: np.log(c / c.sum(axis=1, keepdims=True)) for mode, c in counts.items()})

    def mean_loglik(self, chords: list[tuple[int, str] | None], key: str) -> float | None:
        seq = [_relative(c, key) for c in chords if c is not None]
        if len(seq) < 2:
            return None
        table = self.log_prob[key.split()[1]]
        return float(np.mean([table[a, b] for a, b in zip(seq, seq[1:])]))


def style_features(score, key: str) -> np.ndarray | None:
    """Key-relative pitch-class histogram (12), onset positions in the bar (16), note durations in
    log2 beats (8), notes per bar, mean pitch and range (in octaves), mode: 40 numbers."""
    notes = _notes(score)
    if notes is None:
        return None
    tpq = score.ticks_per_quarter
    tonic = music.PITCH_NAMES.index(key.split()[0])
    pcs = np.bincount((notes["pitch"] - tonic) % 12, weights=notes["duration"] + 1e-9, minlength=12)
    onsets = np.bincount(np.minimum((notes["time"] % (4 * tpq)) * 16 // (4 * tpq), 15), minlength=16)
    beats = np.log2(np.maximum(notes["duration"], 1) / tpq)
    durations = np.histogram(np.clip(beats, -4, 4), bins=8, range=(-4, 4))[0]
    bars = max(1.0, float((notes["time"].max() + 1) / (4 * tpq)))
    return np.concatenate([pcs / pcs.sum(), onsets / onsets.sum(), durations / durations.sum(),
                           [len(notes["pitch"]) / bars / 16, notes["pitch"].mean() / 60,
                            np.ptp(notes["pitch"]) / 12, float(key.endswith("minor"))]])


def piece_metrics(score, key: str, chords: ChordBigrams | None = None) -> dict[str, float] | None:
    notes = _notes(score)
    if notes is None:
        return None
    pcs = notes["pitch"] % 12
    hist = np.bincount(pcs, weights=notes["duration"].astype(float) + 1e-9, minlength=12)
    p = hist / hist.sum()
    entropy = float(-(p[p > 0] * np.log2(p[p > 0])).sum())
    scale = max(float(np.isin(pcs, sorted(music.scale_pitch_classes(k))).mean()) for k in music.KEYS)
    bar = score.ticks_per_quarter * 4
    step = max(1, bar // 16)
    bars = notes["time"] // bar
    grids = {}
    for b, t in zip(bars, (notes["time"] % bar) // step):
        grids.setdefault(int(b), np.zeros(16, dtype=bool))[min(int(t), 15)] = True
    ordered = [grids[b] for b in sorted(grids)]
    if len(ordered) > 1:
        groove = 1.0 - float(np.mean([np.mean(a != b) for a, b in zip(ordered, ordered[1:])]))
    else:
        groove = 1.0
    found = [c for c in music.bar_chords(score) if c is not None]
    diatonic = music.diatonic_share(found, key)
    out = {"pitch_class_entropy": entropy, "scale_consistency": scale, "groove_consistency": groove,
           "diatonic_chord_share": math.nan if diatonic is None else diatonic,
           "chord_transition_loglik": math.nan,
           "key_adherence": float(music.estimate_key(notes["pitch"], notes["duration"]) == key)}
    if chords is not None:
        loglik = chords.mean_loglik(found, key)
        out["chord_transition_loglik"] = math.nan if loglik is None else loglik
    return out


@dataclass
class References:
    """What the measures learn from real pieces: chord bigrams and the style classifier (with its
    held-out accuracy per style)."""
    chords: ChordBigrams
    classifier: object | None
    classifier_accuracy: dict[str, tuple[float, int]]  # style -> (share right, held-out pieces scored)

    def style_of(self, score, key: str) -> str | None:
        features = style_features(score, key)
        if self.classifier is None or features is None:
            return None
        return str(self.classifier.predict(features[None, :])[0])


def _openings(tokenizer, frame: pd.DataFrame, bars: int) -> list[tuple[object, str, str]]:
    out = []
    for ids, key, style in zip(frame["token_ids"], frame["key"], frame["style"]):
        try:
            score = opening(music.merged(music.decode(tokenizer, list(ids))), bars)
        except Exception:  # a piece the tokenizer cannot decode is left out, as in the report
            continue
        out.append((score, key, style))
    return out


def fit_references(tokenizer, frame: pd.DataFrame, bars: int, per_style: int = 200) -> References:
    """Chord bigrams on whole training pieces; the style classifier on their openings, scored on the
    held-out (test, else validation) pieces' openings."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    train = frame[frame["split"] == "train"].groupby("style").head(per_style)
    held = _held_out(frame).groupby("style").head(per_style)
    whole = []
    for ids, key, style in zip(train["token_ids"], train["key"], train["style"]):
        try:
            whole.append((music.merged(music.decode(tokenizer, list(ids))), key, style))
        except Exception:
            continue
    chords = ChordBigrams.fit([(score, key) for score, key, _ in whole])

    def table(pieces):
        rows = [(style_features(opening(score, bars), key), style) for score, key, style in pieces]
        rows = [(f, st) for f, st in rows if f is not None]
        return (np.array([f for f, _ in rows]), np.array([st for _, st in rows])) if rows else (None, None)
    x, y = table(whole)
    if x is None or len(set(y)) < 2:
        return References(chords, None, {})
    classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0)).fit(x, y)
    hx, hy = table(_openings(tokenizer, held, bars))
    accuracy = {} if hx is None else {
        style: (float((classifier.predict(hx[hy == style]) == style).mean()), int((hy == style).sum()))
        for style in sorted(set(hy))}
    return References(chords, classifier, accuracy)


def _held_out(frame: pd.DataFrame) -> pd.DataFrame:
    held = frame[frame["split"] == "test"]
    return held if not held.empty else frame[frame["split"] == "validation"]


def report(generator, frame: pd.DataFrame, per_style: int, bars: int, seed: int = 0,
           references: References | None = None, real_per_style: int = 100, in_key: bool = False,
           tonic_frame: bool = False, samples: dict | None = None) -> pd.DataFrame:
    """One row per (style, measure): generated mean, real mean and std, 1-Wasserstein distance, counts;
    ``samples``, when given, receives each style's first decoded sketch (for its piano roll).

    ``frame`` is gold.music_sequences: the measures' references come from its training split, the
    real pieces and the sketches' conditions (style, key, tempo) from its held-out split.
    """
    from scipy.stats import wasserstein_distance
    import symusic
    references = references or fit_references(generator.tokenizer, frame, bars)
    rows = []
    for style, real in _held_out(frame).groupby("style"):
        real_metrics = []
        for score, key, _ in _openings(generator.tokenizer, real.head(real_per_style), bars):
            m = piece_metrics(score, key, references.chords)
            if m:
                real_metrics.append(m)
        first = real.head(max(per_style, 1))
        conditions = [(style, k, t) for k, t in zip(first["key"], first["tempo_bucket"])]
        conditions = (conditions * per_style)[:per_style]
        sketches = generator.generate(conditions, [seed + i for i in range(len(conditions))], bars=bars,
                                      in_key=in_key, tonic_frame=tonic_frame)
        generated = []
        for sketch in sketches:
            if sketch.midi is None:
                continue
            if samples is not None:
                samples.setdefault(style, sketch)
            score = music.merged(symusic.Score.from_midi(sketch.midi))
            m = piece_metrics(score, sketch.key, references.chords)
            if m:
                m["style_adherence"] = float(references.style_of(score, sketch.key) == style)
                generated.append(m)
        for metric in METRICS + SHARES:
            g = [m[metric] for m in generated if not math.isnan(m.get(metric, math.nan))]
            if metric == "style_adherence":  # real: the classifier's accuracy on held-out pieces
                accuracy, scored = references.classifier_accuracy.get(style, (math.nan, 0))
                real_mean, real_std, real_n, distance = accuracy, math.nan, scored, math.nan
            else:
                r = [m[metric] for m in real_metrics if not math.isnan(m[metric])]
                real_mean = float(np.mean(r)) if r else math.nan
                real_std = float(np.std(r)) if len(r) > 1 else math.nan
                real_n = len(r)
                distance = float(wasserstein_distance(g, r)) if g and r and metric in METRICS else math.nan
            rows.append({"style": style, "metric": metric, "generated": float(np.mean(g)) if g else math.nan,
                         "real": real_mean, "real_std": real_std, "distance": distance,
                         "generated_n": len(g), "real_n": real_n})
    return pd.DataFrame(rows)
