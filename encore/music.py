"""Symbolic music helpers shared by the corpus job (Spark executors) and the music model's
generation: finding pieces, parsing them to one merged ``symusic.Score``, keys, tempo buckets,
the REMI tokenizer, and the top-line melody used by originality checks.

Sources and their style labels:
  bach_chorales (music21 MusicXML)   -> chorale
  essen, oneills (music21 ABC books) -> folk   (multi-tune ABC files are split into tunes first;
                                               Essen's K: header names the tonic only)
  nottingham (MIDI, when configured) -> folk
  pop909 (MIDI, when configured)     -> pop    (MELODY/BRIDGE/PIANO merged)
All parts of a piece are merged into one piano track: the model learns a reduction with chords.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PITCH_NAMES = ["C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B"]
FLATS = {"Db": "C#", "Eb": "D#", "Gb": "F#", "Ab": "G#", "Bb": "A#", "Cb": "B", "Fb": "E", "E#": "F", "B#": "C"}
MAJOR_SCALE = (0, 2, 4, 5, 7, 9, 11)
MINOR_SCALE = (0, 2, 3, 5, 7, 8, 10)
# Key profiles (major, minor) for the Krumhansl-Schmuckler rule: Temperley's, from the excerpts of
# Kostka and Payne's textbook (the values music21 ships as TemperleyKostkaPayne). On the first 8 bars
# of 4,888 real pieces with an annotated key, they name it for 78% of folk tunes and 75% of POP909
# songs, against 69% and 71% with Krumhansl and Kessler's profiles, in every source and on both
# halves of the pieces (tests/benchmarks/key_detection.py, docs/music-quality.md).
KEY_PROFILES = (np.array([0.748, 0.060, 0.488, 0.082, 0.670, 0.460, 0.096, 0.715, 0.104, 0.366, 0.057, 0.400]),
                np.array([0.712, 0.084, 0.474, 0.618, 0.049, 0.460, 0.105, 0.747, 0.404, 0.067, 0.133, 0.330]))
KEYS = [f"{n} {m}" for m in ("major", "minor") for n in PITCH_NAMES]
TEMPO_BUCKETS = (("slow", 90.0), ("medium", 130.0), ("fast", float("inf")))
STYLES = ("chorale", "folk", "pop")


@dataclass(frozen=True)
class Piece:
    piece_id: str
    source: str
    style: str
    path: str
    kind: str                 # musicxml, abc or midi
    text: str | None = None   # one ABC tune
    key_hint: str | None = None


# --- finding pieces ---------------------------------------------------------------------------

def split_abc_tunes(text: str) -> list[str]:
    """Tunes of a multi-tune ABC book: each starts at an ``X:`` line; the book header is shared."""
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("X:")]
    header = [line for line in lines[:starts[0]] if re.match(r"^[A-Za-z]:", line)] if starts else []
    tunes = []
    for a, b in zip(starts, starts[1:] + [len(lines)]):
        body = "\n".join(lines[a:b]).strip()
        tunes.append("\n".join([body.splitlines()[0], *header, *body.splitlines()[1:]]))
    return tunes


def music21_pieces(limit_per_source: int | None = None) -> list[Piece]:
    from music21 import corpus
    pieces: list[Piece] = []
    chorales = sorted(str(p) for p in corpus.getComposer("bach") if str(p).endswith((".mxl", ".xml", ".musicxml")))
    for path in chorales[:limit_per_source]:
        pieces.append(Piece(f"bach_chorales/{Path(path).name}", "bach_chorales", "chorale", path, "musicxml"))
    for source, folder in (("essen", "essenFolksong"), ("oneills", "oneills1850")):
        count = 0
        for path in sorted(str(p) for p in corpus.getPaths(fileExtensions=["abc"]) if f"/{folder}/" in str(p)):
            text = Path(path).read_text(encoding="latin-1")
            for i, tune in enumerate(split_abc_tunes(text)):
                if limit_per_source is not None and count >= limit_per_source:
                    break
                pieces.append(Piece(f"{source}/{Path(path).name}#{i + 1}", source, "folk", path, "abc", tune))
                count += 1
    return pieces


def pop909_pieces(root: str, limit: int | None = None) -> list[Piece]:
    pieces = []
    for folder in sorted(p for p in Path(root).iterdir() if p.is_dir() and p.name.isdigit())[:limit]:
        midi = folder / f"{folder.name}.mid"
        key_file = folder / "key_audio.txt"
        hint = None
        if key_file.is_file():
            fields = key_file.read_text().split()
            hint = fields[2] if len(fields) >= 3 else None
        pieces.append(Piece(f"pop909/{folder.name}", "pop909", "pop", str(midi), "midi", key_hint=hint))
    return pieces


def nottingham_pieces(root: str, limit: int | None = None) -> list[Piece]:
    files = sorted(Path(root).glob("*.mid"))[:limit]
    return [Piece(f"nottingham/{f.name}", "nottingham", "folk", str(f), "midi") for f in files]


# --- parsing ----------------------------------------------------------------------------------

def merged(score):
    """One track holding every pitched note of the score (drums dropped), program 0."""
    import symusic
    out = symusic.Score(score.ticks_per_quarter)
    track = symusic.Track(program=0, is_drum=False, name="merged")
    for t in score.tracks:
        if not t.is_drum:
            track.notes.extend(t.notes)
    track.notes.sort(key=lambda n: (n.time, n.pitch))
    out.tracks.append(track)
    out.tempos.extend(score.tempos)
    out.time_signatures.extend(score.time_signatures)
    return out


def parse(piece: Piece):
    """(merged symusic.Score, key hint or None) for a piece; raises on anything unusable."""
    import symusic
    if piece.kind == "midi":
        score = symusic.Score(piece.path)
    elif piece.kind == "abc":
        score = symusic.Score.from_abc(piece.text or "")
    elif piece.kind == "musicxml":
        from music21 import converter
        from music21.midi import translate
        stream = converter.parse(piece.path)
        score = symusic.Score.from_midi(translate.music21ObjectToMidiFile(stream).writestr())
    else:
        raise ValueError(f"unknown piece kind {piece.kind}")
    score = merged(score)
    if not len(score.tracks[0].notes):
        raise ValueError("no notes")
    hint = piece.key_hint
    if piece.kind == "abc":
        hint = abc_key_hint(piece, score)
    return score, hint


# Essen's tunes come from EsAC, whose KEY field names the tonic (scale degree 1) and not the mode: the
# melody spells minor and modal degrees with accidentals. music21's ABC books keep that tonic as
# `K: E` and write the accidentals on the notes, so `K: E` need not be E major. Of 8,512 Essen tunes,
# 13 headers name a mode; the others end on the header's tonic (73%), its third (12%) or fifth (8%),
# and 12% are minor by their notes (docs/music-quality.md).
ABC_KEY = re.compile(r"^K:\s*([A-Ga-g][#b]?)\s*(m(?:in)?|maj|major|minor|dor|mix|lyd|phr|loc|aeo|ion)?",
                     flags=re.M | re.I)


def abc_header_key(text: str | None) -> tuple[str, str] | None:
    """An ABC tune's ``K:`` header as (tonic, mode): the tonic in ``PITCH_NAMES``, the mode as written
    (lower case, '' when none); None without a readable header."""
    match = ABC_KEY.search(text or "")
    if not match:
        return None
    tonic = match.group(1)[0].upper() + match.group(1)[1:].lower()
    return FLATS.get(tonic, tonic), (match.group(2) or "").lower()


def essen_tonic(piece: Piece) -> str | None:
    """The tonic an Essen tune's header gives when it names no mode (nearly all do not); else None."""
    header = abc_header_key(piece.text) if piece.source == "essen" else None
    return header[0] if header and not header[1] else None


def abc_key_hint(piece: Piece, score) -> str | None:
    """The key an ABC tune's ``K:`` header gives, as ``tonic:maj|min``; None for a modal header (Dorian,
    Mixolydian, ...) or none. In Essen's tunes the header gives only the tonic: there the notes choose
    between its major and minor (``estimate_key`` with the tonic fixed), unless the header says minor."""
    header = abc_header_key(piece.text)
    if header is None or header[1] in ("dor", "mix", "lyd", "phr", "loc"):
        return None
    tonic, mode = header
    if mode in ("m", "min", "minor", "aeo"):
        return f"{tonic}:min"
    if essen_tonic(piece):
        notes = score.tracks[0].notes.numpy()
        mode = estimate_key(notes["pitch"], notes["duration"], tonic=tonic).split()[1]
    return f"{tonic}:{'min' if mode == 'minor' else 'maj'}"


def normalise_key(hint: str | None) -> str | None:
    """'Gb:maj' / 'D:min' -> 'F# major' / 'D minor'; None if it cannot be read."""
    if not hint or ":" not in hint:
        return None
    tonic, mode = hint.split(":", 1)
    tonic = tonic[0].upper() + tonic[1:]
    tonic = FLATS.get(tonic, tonic)
    if tonic not in PITCH_NAMES:
        return None
    return f"{tonic} {'minor' if mode.lower().startswith('min') else 'major'}"


def estimate_key(pitches: np.ndarray, durations: np.ndarray,
                 profiles: tuple[np.ndarray, np.ndarray] = KEY_PROFILES, tonic: str | None = None) -> str:
    """Krumhansl-Schmuckler: the key whose profile (``KEY_PROFILES``, rotated to each tonic) best
    correlates with the duration-weighted pitch classes; with ``tonic`` (a name of ``PITCH_NAMES``),
    only its major and minor compete."""
    histogram = np.bincount(pitches % 12, weights=durations.astype(float), minlength=12)
    tonics = range(12) if tonic is None else [PITCH_NAMES.index(tonic)]
    best, best_r = f"{PITCH_NAMES[tonics[0]]} major", -2.0
    for mode, profile in zip(("major", "minor"), profiles):
        for root in tonics:
            r = np.corrcoef(histogram, np.roll(profile, root))[0, 1] if histogram.std() > 0 else 0.0
            if r > best_r:
                best, best_r = f"{PITCH_NAMES[root]} {mode}", r
    return best


def scale_pitch_classes(key: str) -> set[int]:
    tonic, mode = key.split()
    root = PITCH_NAMES.index(tonic)
    return {(root + step) % 12 for step in (MAJOR_SCALE if mode == "major" else MINOR_SCALE)}


def tempo_of(score) -> float:
    return float(score.tempos[0].qpm) if len(score.tempos) else 120.0


def tempo_at_first_note(score) -> float:
    """The tempo in effect when the first note sounds (decoded sketches start with a default tempo)."""
    notes = score.tracks[0].notes if len(score.tracks) else []
    if not len(score.tempos) or not len(notes):
        return tempo_of(score)
    first = min(n.time for n in notes)
    current = [t for t in score.tempos if t.time <= first]
    return float((current[-1] if current else score.tempos[0]).qpm)


def tempo_bucket(bpm: float) -> str:
    return next(name for name, upper in TEMPO_BUCKETS if bpm < upper)


def melody(score) -> list[int]:
    """The highest pitch at each onset, in time order."""
    top: dict[int, int] = {}
    for note in score.tracks[0].notes:
        if note.pitch > top.get(note.time, -1):
            top[note.time] = note.pitch
    return [top[t] for t in sorted(top)]



TRIADS = {"": (0, 4, 7), "m": (0, 3, 7), "dim": (0, 3, 6)}


def bar_chords(score, bars: int | None = None) -> list[tuple[int, str] | None]:
    """One triad per bar as (root pitch class, quality in TRIADS), None for a bar without notes.

    Each bar's duration-weighted pitch classes are matched to the 36 major, minor and diminished
    triads; the chord covering the most weight wins (ties: the chord whose root sounds most). Bars
    are 4/4 (the tokenizer's assumption); ``bars`` None means up to the bar of the last onset.
    """
    notes = score.tracks[0].notes.numpy() if len(score.tracks) else {"pitch": np.zeros(0, int)}
    bar_ticks = score.ticks_per_quarter * 4
    if bars is None:
        bars = int(notes["time"].max() // bar_ticks) + 1 if len(notes["pitch"]) else 0
    chords: list[tuple[int, str] | None] = []
    for bar in range(bars):
        start, end = bar * bar_ticks, (bar + 1) * bar_ticks
        if len(notes["pitch"]) == 0:
            chords.append(None)
            continue
        overlap = np.clip(np.minimum(notes["time"] + notes["duration"], end) - np.maximum(notes["time"], start), 0, None)
        weights = np.bincount(notes["pitch"] % 12, weights=overlap.astype(float), minlength=12)
        if weights.sum() <= 0:
            chords.append(None)
            continue
        best = max(((weights[[(root + i) % 12 for i in shape]].sum(), weights[root], root, quality)
                    for root in range(12) for quality, shape in TRIADS.items()), key=lambda c: (c[0], c[1]))
        chords.append((best[2], best[3]))
    return chords


def chord_progression(score, bars: int) -> str:
    """One chord per bar, e.g. 'D | G | A | D' ('N.C.' for an empty bar): ``bar_chords`` by name."""
    return " | ".join("N.C." if c is None else PITCH_NAMES[c[0]] + c[1] for c in bar_chords(score, bars))


def key_pitch_classes(key: str) -> set[int]:
    """The key's scale; in minor with the harmonic minor's raised 7th too (its V and vii° chords are
    the usual ones)."""
    tonic, mode = key.split()
    return scale_pitch_classes(key) | ({(PITCH_NAMES.index(tonic) + 11) % 12} if mode == "minor" else set())


def triad_pitch_classes(chord: tuple[int, str]) -> set[int]:
    """The pitch classes of a (root pitch class, quality in TRIADS) triad."""
    root, quality = chord
    return {(root + i) % 12 for i in TRIADS[quality]}


def tonic_triad(key: str) -> tuple[int, str]:
    """'D minor' -> (2, 'm'): the key's tonic chord."""
    tonic, mode = key.split()
    return PITCH_NAMES.index(tonic), "" if mode == "major" else "m"


def is_diatonic(chord: tuple[int, str], key: str) -> bool:
    """Every tone of the triad is among the key's pitch classes (``key_pitch_classes``)."""
    return triad_pitch_classes(chord) <= key_pitch_classes(key)


def diatonic_share(chords: list[tuple[int, str] | None], key: str) -> float | None:
    """Share of the bars with a chord whose chord is diatonic in ``key``; None when no bar has one."""
    found = [c for c in chords if c is not None]
    return float(np.mean([is_diatonic(c, key) for c in found])) if found else None


def split_of(piece_id: str, validation: float = 0.05, test: float = 0.05) -> str:
    h = int.from_bytes(hashlib.sha256(piece_id.encode()).digest()[:8], "big") / 2 ** 64
    return "validation" if h < validation else "test" if h < validation + test else "train"


# --- tokenizer --------------------------------------------------------------------------------

def new_tokenizer():
    from miditok import REMI, TokenizerConfig
    return REMI(TokenizerConfig(use_chords=True, use_tempos=True, use_time_signatures=False, use_programs=False,
                                num_velocities=8, special_tokens=["PAD", "BOS", "EOS", "MASK"]))


def load_tokenizer(path: str | Path):
    from miditok import REMI
    return REMI(params=Path(path))


def encode(tokenizer, score) -> list[int]:
    seq = tokenizer.encode(score)
    seq = seq[0] if isinstance(seq, list) else seq
    return list(seq.ids)


def decode(tokenizer, ids: list[int]):
    """A symusic.Score from token ids (BPE ids when the tokenizer is trained)."""
    from miditok import TokSequence
    seq = TokSequence(ids=[int(i) for i in ids], are_ids_encoded=bool(tokenizer.is_trained))
    if tokenizer.is_trained:
        tokenizer.decode_token_ids(seq)  # BPE ids -> base ids, so decode does not read them as base ids
    return tokenizer.decode([seq])


@dataclass(frozen=True)
class Vocabulary:
    """Token ids: the tokenizer's, then one per style, key and tempo bucket."""

    base_size: int
    pad_id: int
    bos_id: int
    eos_id: int
    bar_id: int

    @property
    def conditions(self) -> list[str]:
        return ([f"STYLE_{s}" for s in STYLES] + [f"KEY_{k.replace(' ', '_')}" for k in KEYS]
                + [f"TEMPO_{name}" for name, _ in TEMPO_BUCKETS])

    @property
    def size(self) -> int:
        return self.base_size + len(self.conditions)

    def condition_id(self, name: str) -> int:
        return self.base_size + self.conditions.index(name)

    def prefix(self, style: str, key: str, tempo_bucket: str) -> list[int]:
        return [self.bos_id, self.condition_id(f"STYLE_{style}"), self.condition_id(f"KEY_{key.replace(' ', '_')}"),
                self.condition_id(f"TEMPO_{tempo_bucket}")]

    def to_dict(self) -> dict:
        return {"base_size": self.base_size, "pad_id": self.pad_id, "bos_id": self.bos_id, "eos_id": self.eos_id,
                "bar_id": self.bar_id}

    @classmethod
    def of(cls, tokenizer) -> "Vocabulary":
        vocab = tokenizer.vocab  # base tokens -> base ids; BPE ids are the trained model's
        size = len(tokenizer)
        bar = tokenizer.vocab.get("Bar_None")
        return cls(size, vocab["PAD_None"], vocab["BOS_None"], vocab["EOS_None"], bar if bar is not None else -1)
