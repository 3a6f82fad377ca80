"""The music quality measures on hand-written scores: chords per bar, diatonic chords (harmonic minor
included), key-relative chord bigrams, and key detection, each with a case that must fail."""
from __future__ import annotations

import pytest

from encore import music

pytestmark = pytest.mark.unit

TPQ = 480


def _block_chords(roots_and_shapes: list[tuple[int, tuple[int, ...]]]):
    """One bar per chord: its tones as whole notes above middle C's octave, plus the root an octave down."""
    import symusic
    score = symusic.Score(TPQ)
    track = symusic.Track()
    for bar, (root, shape) in enumerate(roots_and_shapes):
        for interval in shape:
            track.notes.append(symusic.Note(bar * 4 * TPQ, 4 * TPQ, 60 + root + interval, 80))
        track.notes.append(symusic.Note(bar * 4 * TPQ, 4 * TPQ, 48 + root, 80))
    score.tracks.append(track)
    return score


MAJOR, MINOR = music.TRIADS[""], music.TRIADS["m"]


def test_each_bar_gets_its_triad_and_empty_bars_none():
    score = _block_chords([(0, MAJOR), (5, MAJOR), (7, MAJOR), (9, MINOR)])
    assert music.bar_chords(score) == [(0, ""), (5, ""), (7, ""), (9, "m")]
    assert music.bar_chords(score, 6)[4:] == [None, None]
    assert music.chord_progression(score, 5) == "C | F | G | Am | N.C."


def test_diatonic_chords_follow_the_key_and_the_harmonic_minor():
    assert all(music.is_diatonic(c, "C major") for c in [(0, ""), (2, "m"), (7, ""), (11, "dim")])
    assert not music.is_diatonic((2, ""), "C major")          # D major: F# is not in C major
    assert music.is_diatonic((4, ""), "A minor")              # E major, V of A minor (G#)
    assert music.is_diatonic((8, "dim"), "A minor")           # G# diminished, vii° of A minor
    assert not music.is_diatonic((2, ""), "A minor")          # D major: F# is in neither minor scale


def test_chord_bigrams_prefer_the_progressions_they_were_counted_on():
    from ray_jobs.music_quality import ChordBigrams, piece_metrics
    cadence = [(0, MAJOR), (5, MAJOR), (7, MAJOR), (0, MAJOR)]
    pieces = []
    for tonic in range(12):  # the same I-IV-V-I in every key: the bigrams are key-relative
        shifted = [((root + tonic) % 12, shape) for root, shape in cadence]
        pieces.append((_block_chords(shifted), f"{music.PITCH_NAMES[tonic]} major"))
    bigrams = ChordBigrams.fit(pieces)
    familiar = music.bar_chords(_block_chords([(2, MAJOR), (7, MAJOR), (9, MAJOR), (2, MAJOR)]))  # I-IV-V-I in D
    odd = music.bar_chords(_block_chords([(2, MAJOR), (3, MINOR), (8, MAJOR), (1, MINOR)]))
    assert bigrams.mean_loglik(familiar, "D major") > bigrams.mean_loglik(odd, "D major") + 1.0
    assert bigrams.mean_loglik(familiar[:1], "D major") is None   # no transition to judge

    metrics = piece_metrics(_block_chords([(0, MAJOR), (5, MAJOR), (7, MAJOR), (0, MAJOR)]), "C major", bigrams)
    assert metrics["diatonic_chord_share"] == 1.0 and metrics["key_adherence"] == 1.0
    elsewhere = piece_metrics(_block_chords([(0, MAJOR), (5, MAJOR), (7, MAJOR), (0, MAJOR)]), "F# major", bigrams)
    assert elsewhere["diatonic_chord_share"] == 0.0 and elsewhere["key_adherence"] == 0.0


def test_style_features_describe_pitch_rhythm_and_mode():
    from ray_jobs.music_quality import style_features
    score = _block_chords([(0, MAJOR), (5, MAJOR), (7, MAJOR), (0, MAJOR)])
    features = style_features(score, "C major")
    assert features.shape == (40,) and features[:12].sum() == pytest.approx(1.0)
    assert features[12] == pytest.approx(1.0)            # every onset on the downbeat
    assert features[-1] == 0.0 and style_features(score, "A minor")[-1] == 1.0
    # Key-relative: the same music described in G major shifts the pitch-class histogram.
    assert not (style_features(score, "G major")[:12] == features[:12]).all()


def test_constrained_decoding_bans_per_row_and_per_bar_and_never_ends_a_sketch_early():
    """in_key bans a row's tokens everywhere; the tonic frame bans them in chosen bars;
    with a bar budget the end-of-piece token is never drawn, so every row gets all its bars."""
    import torch
    from ray_jobs.music_model import ModelConfig, MusicTransformer, sample
    torch.manual_seed(0)
    model = MusicTransformer(ModelConfig(vocab_size=12, context=200, d_model=16, n_layers=1, n_heads=2,
                                         dropout=0.0)).eval()
    bar, eos = 1, 2
    prompts = torch.zeros(2, 1, dtype=torch.long)
    everywhere = [[5, 6], [7, 8]]           # row 0 never plays 5 or 6, row 1 never 7 or 8
    framing = [[9, 10, 11], [3, 4]]         # nor these in its first and last of 4 bars
    per_bar = [[frame, [], [], frame] for frame in framing]
    rows = sample(model, prompts, 190, seed=[1, 2], stop_ids=[bar], stop_count=5, top_p=1.0, eos_id=eos,
                  banned_per_row=everywhere, bar_banned_per_row=per_bar).tolist()
    free = sample(model, prompts, 190, seed=[1, 2], top_p=1.0).tolist()
    for row, banned, frame, unconstrained in zip(rows, everywhere, framing, free):
        assert not set(row[1:]) & set(banned)
        bars_seen, in_frame, middle = 0, [], []
        for token in row[1:]:
            assert token != eos or bars_seen == 5, "the row ended before its 4 bars"
            bars_seen += token == bar
            if bars_seen == 5:   # the fifth bar token ends the row's 4 bars
                break
            (in_frame if bars_seen <= 1 or bars_seen == 4 else middle).append(token)
        assert bars_seen == 5 and not set(in_frame) & set(frame)
        assert set(middle) & set(frame), "the frame's tokens were banned outside the first and last bar too"
        assert set(unconstrained) & set(banned), "the unconstrained sampler never drew them: the test proves nothing"
        assert eos in unconstrained, "unconstrained, the end token is drawn: the budget is what bans it"
