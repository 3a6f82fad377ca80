"""corpus: symbolic music -> gold.music_sequences (+ silver.music_quarantine), with Spark.

1. The driver lists pieces (music21's bundled Bach chorales and Essen/O'Neill ABC books, split
   into tunes; POP909 and Nottingham MIDI when ``music.corpus.pop909_dir`` / ``nottingham_dir`` are
   set) — cheap, no parsing.
2. Executors parse every piece to one merged score (``encore.music.parse``); failures become
   quarantine rows (stage ``parse``), never a crash.
3. The driver trains MidiTok REMI + BPE on the *training split* only and saves the tokenizer to
   ``paths.artifacts/music_tokenizer.json`` (logged to MLflow by train-music).
4. Executors tokenize every parsed piece; failures are quarantined (stage ``tokenize``).
5. Both tables are replaced whole: the corpus is a full rebuild, so a rerun gives the same tables.
"""
from __future__ import annotations

import hashlib
import logging
import tempfile
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from encore import music
from encore.errors import EncoreError
from encore.lakehouse import Lakehouse
from schemas.table_names import GOLD_MUSIC_SEQUENCES, SILVER_MUSIC_QUARANTINE

log = logging.getLogger(__name__)

PARSED_SCHEMA = ("piece_id string, source string, style string, path string, split string, ok boolean, "
                 "error string, midi binary, key string, tempo double, tempo_bucket string, n_notes int, "
                 "melody array<int>")
TOKENIZED_SCHEMA = PARSED_SCHEMA + ", tok_ok boolean, tok_error string, token_ids array<int>"


def list_pieces(cfg) -> list[music.Piece]:
    """The pieces of music21's corpus and of the configured folders (``music.corpus``), ``limit_per_source`` each."""
    limit = cfg.limit_per_source
    pieces = music.music21_pieces(limit)
    for key, finder in (("pop909_dir", music.pop909_pieces), ("nottingham_dir", music.nottingham_pieces)):
        root = getattr(cfg, key)
        if root:
            if not Path(root).is_dir():
                raise EncoreError(f"music.corpus.{key} = {root} is not a folder: fix the path or set it to null")
            pieces += finder(root, limit)
    return pieces


def _parse_partition(frames):
    import numpy as np
    for frame in frames:
        rows = []
        for rec in frame.to_dict("records"):
            piece = music.Piece(**{k: rec[k] for k in ("piece_id", "source", "style", "path", "kind", "text", "key_hint")})
            out = {"piece_id": piece.piece_id, "source": piece.source, "style": piece.style, "path": piece.path,
                   "split": music.split_of(piece.piece_id), "ok": False, "error": None, "midi": None, "key": None,
                   "tempo": None, "tempo_bucket": None, "n_notes": None, "melody": None}
            try:
                score, hint = music.parse(piece)
                notes = score.tracks[0].notes.numpy()
                out.update(ok=True, midi=bytes(score.dumps_midi()),
                           key=music.normalise_key(hint) or music.estimate_key(notes["pitch"], notes["duration"]),
                           tempo=music.tempo_of(score), tempo_bucket=music.tempo_bucket(music.tempo_of(score)),
                           n_notes=int(len(notes["pitch"])),
                           melody=np.asarray(music.melody(score), dtype=np.int32))
            except Exception as exc:  # any failure of one file is that file's quarantine row
                out["error"] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ''}"
            rows.append(out)
        yield pd.DataFrame(rows)


def _tokenize_partition(tokenizer_json: str):
    def run(frames):
        import numpy as np
        import symusic
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "tokenizer.json"
            path.write_text(tokenizer_json)
            tokenizer = music.load_tokenizer(path)
            for frame in frames:
                rows = []
                for rec in frame.to_dict("records"):
                    out = {**rec, "tok_ok": False, "tok_error": None, "token_ids": None}
                    if not rec["ok"]:
                        rows.append(out)
                        continue
                    try:
                        ids = music.encode(tokenizer, symusic.Score.from_midi(rec["midi"]))
                        if len(ids) < 8:
                            raise ValueError(f"only {len(ids)} tokens")
                        out.update(tok_ok=True, token_ids=np.asarray(ids, dtype=np.int32))
                    except Exception as exc:
                        out["tok_error"] = f"{type(exc).__name__}: {str(exc).strip()[:300]}"
                    rows.append(out)
                yield pd.DataFrame(rows)
    return run


def build_corpus(lake: Lakehouse, tokenizer_dir: str | None = None) -> dict[str, int]:
    from pyspark.sql import functions as F
    cfg = lake.config.music.corpus
    pieces = list_pieces(cfg)
    if not pieces:
        raise EncoreError("no music pieces found: is music21 installed with its corpus?")
    log.info("corpus: %d pieces from %s", len(pieces), sorted({p.source for p in pieces}))
    spark = lake.spark
    listing = spark.createDataFrame(pd.DataFrame([asdict(p) for p in pieces]),
                                    "piece_id string, source string, style string, path string, kind string, "
                                    "text string, key_hint string")
    partitions = max(2, min(64, len(pieces) // 200))
    with lake.staging("corpus") as staging:
        listing.repartition(partitions).mapInPandas(_parse_partition, PARSED_SCHEMA).write.parquet(f"{staging}/parsed")
        parsed = spark.read.parquet(f"{staging}/parsed")

        train_midi = parsed.where("ok AND split = 'train'").select("piece_id", "midi").toLocalIterator()
        tokenizer = music.new_tokenizer()
        vocab = cfg.bpe_vocab_size
        with tempfile.TemporaryDirectory() as tmp:
            files = []
            for i, row in enumerate(train_midi):
                path = Path(tmp) / f"{i:06d}.mid"
                path.write_bytes(row["midi"])
                files.append(path)
            if not files:
                raise EncoreError("no training pieces parsed: see silver.music_quarantine for why")
            log.info("corpus: training BPE (vocab %d) on %d training pieces", vocab, len(files))
            tokenizer.train(vocab_size=vocab, model="BPE", files_paths=files)
        out_dir = Path(tokenizer_dir or lake.config.path("artifacts"))
        out_dir.mkdir(parents=True, exist_ok=True)
        tokenizer_path = out_dir / "music_tokenizer.json"
        tokenizer.save(tokenizer_path)
        tokenizer_json = tokenizer_path.read_text()
        sha = hashlib.sha256(tokenizer_json.encode()).hexdigest()

        parsed.mapInPandas(_tokenize_partition(tokenizer_json), TOKENIZED_SCHEMA).write.parquet(f"{staging}/tokenized")
        joined = spark.read.parquet(f"{staging}/tokenized")

        sequences = (joined.where("ok AND tok_ok")
                     .select("piece_id", "source", "style", "key", "tempo", "tempo_bucket",
                             "n_notes", "token_ids", F.size("token_ids").alias("length"), "melody", "split",
                             F.lit(sha).alias("tokenizer_sha256")))
        quarantine = (joined.where("NOT ok OR NOT tok_ok")
                      .select("piece_id", "source", "path",
                              F.when(F.col("ok"), F.lit("tokenize")).otherwise(F.lit("parse")).alias("stage"),
                              F.coalesce("error", "tok_error").alias("error")))
        run_info = {"job": "corpus", "tokenizer_sha256": sha, "pieces": len(pieces)}
        lake.overwrite(sequences, GOLD_MUSIC_SEQUENCES, run_info)
        lake.overwrite(quarantine, SILVER_MUSIC_QUARANTINE, run_info)
    counts = {"pieces": len(pieces), GOLD_MUSIC_SEQUENCES: lake.read(GOLD_MUSIC_SEQUENCES).count(),
              SILVER_MUSIC_QUARANTINE: lake.read(SILVER_MUSIC_QUARANTINE).count()}
    log.info("corpus: %s; tokenizer %s (%s)", counts, tokenizer_path, sha[:12])
    return counts
