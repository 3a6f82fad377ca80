"""How often does a key detector name the key real pieces are annotated with, on their openings?

    .venv/bin/python tests/benchmarks/key_detection.py [--limit 1500] [--shared ../shared/data/music]

Key adherence (``ray_jobs/music_quality.py``) and the generation-time key check both read a sketch's
key with ``encore.music.estimate_key``: the Krumhansl-Schmuckler rule, a correlation of the
duration-weighted pitch classes with a major and a minor key profile rotated to each tonic. This
script measures how often that rule names the key that people annotated on real pieces, with each
pair of published profiles that music21 ships (Krumhansl-Kessler, used until 2026-12-06;
Aarden-Essen; Temperley-Kostka-Payne, ``encore.music.KEY_PROFILES`` since; Bellman-Budge; Sapp's
simple weights):

- folk: music21's O'Neill ABC tunes whose ``K:`` header says major or minor (modal headers are left
  out), and Nottingham's MIDI files by their first key signature;
- pop: POP909 by its ``key_audio.txt`` annotation of the first section;
- Essen's ABC tunes apart: their header names the tonic and not the mode (EsAC's KEY field,
  ``encore.music.abc_key_hint``), so for them the column counts the detected tonic alone.

Per window (the first 8 bars, a sketch's length; the first 16; the whole piece), per profile, with
pitch classes weighted by duration or counted. The pieces fall into two halves by a hash of their
id, so a choice made on one half can be checked on the other. Needs ``../shared/data/music``
(POP909, Nottingham) beside the clone; without it only the music21 tunes are measured.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from encore import music  # noqa: E402
from tests.benchmarks.bench_night import table  # noqa: E402

WINDOWS = {"8 bars": 8, "16 bars": 16, "whole": None}


def profiles() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    from music21.analysis import discrete
    kinds = {"Krumhansl-Kessler": discrete.KrumhanslSchmuckler, "Aarden-Essen": discrete.AardenEssen,
             "Temperley-Kostka-Payne (encore's)": discrete.TemperleyKostkaPayne, "Bellman-Budge": discrete.BellmanBudge,
             "simple (Sapp)": discrete.SimpleWeights}
    return {name: (np.array(kind().getWeights("major"), float), np.array(kind().getWeights("minor"), float))
            for name, kind in kinds.items()}


def key_signature(score) -> str | None:
    """The first MIDI key signature as a key name (sharps or flats, and major or minor)."""
    if not len(score.key_signatures):
        return None
    signature = score.key_signatures[0]
    major_tonic = (signature.key * 7) % 12
    return (f"{music.PITCH_NAMES[major_tonic]} major" if signature.tonality == 0
            else f"{music.PITCH_NAMES[(major_tonic + 9) % 12]} minor")


def midi_annotation(piece) -> tuple[str | None, object]:
    """A MIDI piece's annotated key (POP909's ``key_audio.txt``, else the first key signature) and its
    merged score."""
    import symusic
    raw = symusic.Score(piece.path)
    return (music.normalise_key(piece.key_hint) if piece.key_hint else key_signature(raw)), music.merged(raw)


@contextlib.contextmanager
def quiet_stdout():
    """symusic's ABC reader (abc2midi) prints its warnings on the C-level stdout."""
    sys.stdout.flush()
    saved = os.dup(1)
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 1)
        try:
            yield
        finally:
            os.dup2(saved, 1)
            os.close(saved)


def annotated_pieces(limit: int, shared: Path):
    """(source, style, annotated key, merged score) for every piece with a readable annotation; an Essen
    tune's annotation is its tonic alone."""
    found = [p for p in music.music21_pieces(limit_per_source=limit) if p.kind == "abc"]
    if (shared / "pop909").is_dir():
        found += music.pop909_pieces(str(shared / "pop909"))
    if (shared / "nottingham").is_dir():
        found += music.nottingham_pieces(str(shared / "nottingham"))
    for piece in found:
        try:
            if piece.kind == "midi":
                key, score = midi_annotation(piece)
            else:
                with quiet_stdout():
                    score, hint = music.parse(piece)
                key = music.essen_tonic(piece) or music.normalise_key(hint)
        except Exception:   # an unreadable piece is left out, as the corpus job quarantines it
            continue
        if key is not None:
            yield piece.piece_id, piece.source, piece.style, key, score


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=1500, help="tunes per music21 ABC source (Essen, O'Neill)")
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data" / "music")
    args = parser.parse_args()
    weights = profiles()
    started = time.perf_counter()
    rows = []   # (source, style, half, {(window, profile, weighting): agrees})
    for piece_id, source, style, key, score in annotated_pieces(args.limit, args.shared):
        notes = score.tracks[0].notes.numpy()
        bar = score.ticks_per_quarter * 4
        agrees = {}
        for window, bars in WINDOWS.items():
            inside = notes["time"] < bar * bars if bars else np.ones(len(notes["time"]), bool)
            pitch_classes = notes["pitch"][inside] % 12
            if len(pitch_classes) < 4:
                continue
            weightings = {"duration": notes["duration"][inside], "count": np.ones(len(pitch_classes))}
            for name, pair in weights.items():
                for weighting, by in weightings.items():
                    detected = music.estimate_key(pitch_classes, by, pair)
                    agrees[(window, name, weighting)] = (detected if " " in key else detected.split()[0]) == key
        half = int(hashlib.sha1(piece_id.encode()).hexdigest(), 16) % 2
        rows.append((source, style, half, agrees))
    sources = sorted({r[0] for r in rows})
    print(f"{len(rows)} annotated pieces ({', '.join(f'{s} {sum(r[0] == s for r in rows)}' for s in sources)}) "
          f"in {time.perf_counter() - started:.0f} s\n")

    def share(selected, variant):
        values = [r[3][variant] for r in selected if variant in r[3]]
        return f"{np.mean(values):.3f}" if values else "-"
    for window in WINDOWS:
        print(f"### {window}: share of pieces whose detected key is the annotated one (Essen: the tonic; "
              "folk: O'Neill and Nottingham)\n")
        out = []
        for name in weights:
            for weighting in ("duration", "count"):
                variant = (window, name, weighting)
                out.append((name, weighting,
                            *(share([r for r in rows if r[0] == s], variant) for s in sources),
                            *(share([r for r in rows if r[1] == style and r[2] == half and r[0] != "essen"], variant)
                              for style in ("folk", "pop") for half in (0, 1))))
        table(["profile", "weights", *sources, "folk, half 0", "folk, half 1", "pop, half 0", "pop, half 1"], out)
        print()


if __name__ == "__main__":
    main()
