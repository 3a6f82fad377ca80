"""The deployable music model: weights + tokenizer as one MLflow pyfunc, and the sketch generator
built on it (conditioning, batched KV-cache sampling to a bar budget, MIDI decoding, checks).

Quality checks on every sketch: it decodes to MIDI; most bars have notes
(``min_bar_fill``); enough notes are in the key's scale (``min_in_scale``); enough bars carry a
chord of the key (``min_diatonic_share``, ``music.bar_chords``); the key detected on its notes is
the requested one (``require_key``); and originality: the longest run of melodic pitch intervals
it shares with any training piece stays under ``max_shared_intervals``. Failing sketches are regenerated with a new seed up to ``retries``
times, then dropped; both are counted.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from encore import music
from ray_jobs.music_model import ModelConfig, MusicTransformer, sample


def log_music_model(checkpoint_dir: str, tokenizer_path: Path, model_name: str | None):
    import mlflow.pyfunc
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(Path(checkpoint_dir) / "state.pt", Path(tmp) / "state.pt")
        shutil.copy(tokenizer_path, Path(tmp) / "tokenizer.json")
        return mlflow.pyfunc.log_model(
            name="model", python_model=pyfunc_model(),
            artifacts={"state": str(Path(tmp) / "state.pt"), "tokenizer": str(Path(tmp) / "tokenizer.json")},
            registered_model_name=model_name,
            input_example=pd.DataFrame({"style": ["folk"], "key": ["D major"], "tempo_bucket": ["medium"],
                                        "seed": [1], "bars": [4]}))


@dataclass
class Sketch:
    style: str
    key: str
    tempo_bucket: str
    seed: int
    tokens: list[int]
    midi: bytes | None
    checks: dict = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return bool(self.checks.get("passed"))


def longest_shared_run(melody: list[int], corpus_intervals: list[np.ndarray]) -> int:
    """Length of the longest run of consecutive pitch intervals also found in one training piece."""
    mine = np.diff(np.asarray(melody, dtype=np.int32))
    best = 0
    if len(mine) == 0:
        return 0
    for theirs in corpus_intervals:
        if len(theirs) == 0:
            continue
        # Longest common substring by dynamic programming over the (short) sketch.
        prev = np.zeros(len(theirs) + 1, dtype=np.int32)
        for a in mine:
            cur = np.zeros_like(prev)
            cur[1:] = np.where(theirs == a, prev[:-1] + 1, 0)
            best = max(best, int(cur.max()))
            prev = cur
    return best


class SketchDecoder:
    """The tokenizer's side of sampling: which tokens end a bar, and token rows -> decoded sketches."""

    def __init__(self, tokenizer_path: str | Path):
        self.tokenizer = music.load_tokenizer(tokenizer_path)
        self.vocab = music.Vocabulary.of(self.tokenizer)
        self.bar_ids = self._bar_ids()
        self._pitches = {idx: {int(t.split("_")[1]) % 12 for t in base if t.startswith("Pitch_")}
                         for idx, base in self._base_tokens().items()}

    def _bar_ids(self) -> list[int]:
        """BPE ids whose merged base tokens contain Bar_None (a bar may hide inside a merged token)."""
        ids = [idx for idx, base in self._base_tokens().items() if "Bar_None" in base]
        return ids or ([self.vocab.bar_id] if self.vocab.bar_id >= 0 else [])

    def _base_tokens(self) -> dict[int, list[str]]:
        learned = getattr(self.tokenizer, "_vocab_learned_bytes_to_tokens", None) or {}
        vocab_model = self.tokenizer.vocab_model if self.tokenizer.is_trained else {}
        items = vocab_model.items() if isinstance(vocab_model, dict) else vocab_model.get_vocab().items()
        return {int(idx): learned.get(token, []) for token, idx in items}

    def _outside(self, allowed: set[int]) -> list[int]:
        """Tokens holding a pitched note whose pitch class is not in ``allowed``."""
        return sorted(idx for idx, pcs in self._pitches.items() if pcs - allowed)

    def out_of_key(self, key: str) -> list[int]:
        """Tokens with a note outside the key's scale (in minor, the raised 7th is in): banning them
        keeps a sketch in its key (``music.generate.in_key``)."""
        return self._outside(music.key_pitch_classes(key))

    def bar_bans(self, key: str, bars: int, *, tonic_frame: bool) -> list[list[int]]:
        """Per bar, the tokens a sketch may not play there: with ``music.generate.tonic_frame``, notes
        off the tonic triad in the first and last bar, which open and close it on the tonic."""
        if not tonic_frame or not bars:
            return []
        off_tonic = self._outside(music.triad_pitch_classes(music.tonic_triad(key)))
        return [off_tonic] + [[]] * (bars - 2) + [off_tonic] if bars > 1 else [off_tonic]

    def banned(self) -> list[int]:
        """Tokens a sampler must never produce: padding, BOS and the conditioning tokens."""
        return [self.vocab.pad_id, self.vocab.bos_id] + list(range(self.vocab.base_size, self.vocab.size))

    def score(self, tokens: list[int]):
        body = [t for t in tokens if t < self.vocab.base_size and t not in (self.vocab.pad_id, self.vocab.bos_id,
                                                                          self.vocab.eos_id)]
        return music.decode(self.tokenizer, body)

    def sketches(self, conditions: list[tuple[str, str, str]], seeds: list[int], rows: list[list[int]],
                 prompt_length: int) -> list[Sketch]:
        """One Sketch per sampled row (prompt first); an undecodable row fails its check, never the batch."""
        out = [Sketch(*cond, seed, [t for t in row[prompt_length:] if t != self.vocab.eos_id], None)
               for cond, seed, row in zip(conditions, seeds, rows)]
        for sketch in out:
            try:
                sketch.midi = bytes(self.score(sketch.tokens).dumps_midi())
            except Exception as exc:
                sketch.checks = {"passed": False, "decodes": False, "error": str(exc)[:200]}
        return out


class MusicGenerator:
    def __init__(self, state_path: str | Path, tokenizer_path: str | Path, device: str | None = None):
        state = torch.load(state_path, map_location="cpu", weights_only=False)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = MusicTransformer(ModelConfig(**state["model_config"]))
        self.model.load_state_dict(state["model"])
        self.model.to(self.device).eval()
        self.decoder = SketchDecoder(tokenizer_path)
        self.tokenizer, self.vocab = self.decoder.tokenizer, self.decoder.vocab

    def generate(self, conditions: list[tuple[str, str, str]], seeds: list[int], *, bars: int = 8,
                 temperature: float = 1.0, top_p: float = 0.95, max_tokens: int | None = None,
                 use_cache: bool = True, in_key: bool = False, tonic_frame: bool = False) -> list[Sketch]:
        """One sketch per (condition, seed), all sampled as one batch with the KV cache; ``in_key``
        never samples a note outside the condition's key; ``tonic_frame`` keeps the first and last
        bar on the tonic triad."""
        prompts = torch.tensor([self.vocab.prefix(*c) for c in conditions], dtype=torch.long, device=self.device)
        limit = max_tokens or (self.model.cfg.context - prompts.shape[1])
        per_bar = [self.decoder.bar_bans(c[1], bars, tonic_frame=tonic_frame) for c in conditions]
        rows = sample(self.model, prompts, limit, temperature=temperature, top_p=top_p, seed=list(seeds),
                      use_cache=use_cache, eos_id=self.vocab.eos_id, banned=self.decoder.banned(),
                      banned_per_row=[self.decoder.out_of_key(c[1]) for c in conditions] if in_key else None,
                      bar_banned_per_row=per_bar, stop_ids=self.decoder.bar_ids, stop_count=bars + 1).tolist()
        return self.decoder.sketches(conditions, seeds, rows, prompts.shape[1])


def check(generator: "MusicGenerator", sketch: Sketch, bars: int, corpus_intervals: list[np.ndarray],
          rules: dict) -> dict:
    """The quality and originality checks of one sketch (see the module docstring)."""
    if sketch.midi is None:
        return sketch.checks or {"passed": False, "decodes": False}
    import symusic
    score = music.merged(symusic.Score.from_midi(sketch.midi))
    notes = score.tracks[0].notes.numpy()
    if len(notes["pitch"]) == 0:
        return {"passed": False, "decodes": True, "notes": 0}
    bar_ticks = score.ticks_per_quarter * 4
    filled = len(set((notes["time"] // bar_ticks).tolist()) & set(range(bars))) / bars
    in_scale = float(np.isin(notes["pitch"] % 12, sorted(music.scale_pitch_classes(sketch.key))).mean())
    diatonic = music.diatonic_share(music.bar_chords(score, bars), sketch.key) or 0.0
    detected = music.estimate_key(notes["pitch"], notes["duration"])
    shared = longest_shared_run(music.melody(score), corpus_intervals)
    result = {"decodes": True, "notes": int(len(notes["pitch"])), "bar_fill": filled, "in_scale": in_scale,
              "diatonic_share": diatonic, "detected_key": detected, "longest_shared_intervals": shared}
    result["passed"] = (filled >= float(rules["min_bar_fill"]) and in_scale >= float(rules["min_in_scale"])
                        and diatonic >= float(rules["min_diatonic_share"])
                        and (detected == sketch.key or not rules["require_key"])
                        and shared < int(rules["max_shared_intervals"]))
    return result


def generate_checked(generator: "MusicGenerator", conditions: list[tuple[str, str, str]], seeds: list[int], *,
                     bars: int, corpus_intervals: list[np.ndarray], rules: dict, temperature: float = 1.0,
                     top_p: float = 0.95, in_key: bool = False,
                     tonic_frame: bool = False) -> tuple[list[Sketch | None], dict]:
    """Sketches that pass the checks (None where every retry failed) and counts of what happened."""
    final: list[Sketch | None] = [None] * len(conditions)
    pending = list(range(len(conditions)))
    counts = {"generated": 0, "regenerated": 0, "dropped": 0}
    for attempt in range(int(rules["retries"]) + 1):
        if not pending:
            break
        batch = generator.generate([conditions[i] for i in pending],
                                   [seeds[i] + 7919 * attempt for i in pending], bars=bars,
                                   temperature=temperature, top_p=top_p, in_key=in_key,
                                   tonic_frame=tonic_frame)
        counts["generated"] += len(batch)
        still = []
        for i, sketch in zip(pending, batch):
            sketch.checks = check(generator, sketch, bars, corpus_intervals, rules)
            if sketch.passed:
                final[i] = sketch
            else:
                still.append(i)
        counts["regenerated"] += len(still) if attempt < int(rules["retries"]) else 0
        pending = still
    counts["dropped"] = len(pending)
    return final, counts


def pyfunc_model():
    import mlflow.pyfunc

    class MusicPyfunc(mlflow.pyfunc.PythonModel):
        """predict(DataFrame[style, key, tempo_bucket, seed, bars]) -> DataFrame with MIDI bytes and tokens."""

        def load_context(self, context):
            self.generator = MusicGenerator(context.artifacts["state"], context.artifacts["tokenizer"])

        def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
            rows = []
            for rec in model_input.to_dict("records"):
                sketch = self.generator.generate([(rec["style"], rec["key"], rec["tempo_bucket"])], [int(rec["seed"])],
                                                 bars=int(rec.get("bars", 8)))[0]
                rows.append({**rec, "tokens": json.dumps(sketch.tokens), "midi": sketch.midi})
            return pd.DataFrame(rows)

    return MusicPyfunc()


def load_generator(model_uri: str) -> MusicGenerator:
    import mlflow.pyfunc
    return mlflow.pyfunc.load_model(model_uri).unwrap_python_model().generator
