"""The export contract for platform teams: the files of ``exports/run_date=YYYY-MM-DD/``, their
columns, and the manifest (``export_manifest.schema.json``). Versioned by ``SCHEMA_VERSION``.

    run_date=YYYY-MM-DD/
      recommendations/part-*.parquet   RECOMMENDATIONS columns, one row per (user, rank)
      packs/part-*.parquet             PACK_SKETCHES columns, one row per sketch of a user's pack
                                       (each dataset: files of about export.max_file_mb, a user's rows
                                       in one file, sorted by user; the manifest lists them all)
      midi/<sketch_id>.mid             one Standard MIDI File per distinct sketch
      audio/<sketch_id>.ogg            since 1.1: one audio preview per distinct sketch, only when
                                       music.audio.soundfont is set (format: music.audio.format)
      manifest.json                    counts, sha256 per file, model and data versions, run ids
      SHA256SUMS                       since 1.2: the manifest's checksums as `sha256sum -c` reads them
      _SUCCESS                         written last; only a folder with it is a published export

On an object store (``paths.exports: s3a://…``, since 1.2) the files above except ``_SUCCESS`` sit in
``run_date=YYYY-MM-DD/attempt=<time>-<id>/``, and ``run_date=YYYY-MM-DD/_SUCCESS`` is a JSON pointer
``{"attempt": …, "manifest_sha256": …}`` written last (``encore/export_store.py``).

Compatibility: adding a column or a file is a minor version bump; removing or retyping one is a
major bump, announced ahead. Consumers should select columns by name.
"""
from __future__ import annotations

import json
from importlib import resources

from pyspark.sql.types import ArrayType, DateType, DoubleType, IntegerType, StringType, StructType

from schemas.tables import SKETCH_FACTS, col

SCHEMA_VERSION = "1.2.0"   # 1.1: audio previews (audio/, packs.audio_path); 1.2: SHA256SUMS, object stores

RECOMMENDATIONS = StructType([
    col("run_date", DateType(), "Logical date of the run.", False),
    col("user_id", StringType(), "Listener id.", False),
    col("rank", IntegerType(), "1..K without gaps per user.", False),
    col("item_id", StringType(), "Recommended artist id (never one the user played in the window).", False),
    col("item_name", StringType(), "Artist display name."),
    col("score", DoubleType(), "Score within the row's strategy; compare within one user only.", False),
    col("strategy", StringType(), "model, tag_profile or popularity.", False),
    col("reason", StringType(), "Human reason, e.g. 'because you play Radiohead'.", False),
    col("reason_item_id", StringType(), "The played artist behind the reason (model rows), else null."),
    col("model_version", IntegerType(), "Recommender version (manifest models.recommender).", False),
])

PACK_SKETCHES = StructType([
    col("run_date", DateType(), "Logical date of the run.", False),
    col("user_id", StringType(), "Listener id.", False),
    col("pack_id", StringType(), "The user's pack for this run.", False),
    col("sketch_index", IntegerType(), "1..n within the pack (n is 2-4).", False),
    col("sketch_id", StringType(), "Stable sketch id; users may share a sketch (see README).", False),
    *SKETCH_FACTS,
    col("midi_path", StringType(), "Relative path of the MIDI file, midi/<sketch_id>.mid.", False),
    col("midi_sha256", StringType(), "sha256 of that file.", False),
    col("audio_path", StringType(), "Relative path of the sketch's audio preview, audio/<sketch_id>.<ext>; null "
        "when the export renders no previews (since 1.1)."),
    col("seed_item_ids", ArrayType(StringType()), "The user's top recommendations behind the pack.", False),
    col("seed_item_names", ArrayType(StringType()), "Their names, same order.", False),
    col("model_version", IntegerType(), "Music model version (manifest models.music).", False),
])

FILES = {"recommendations": RECOMMENDATIONS, "packs": PACK_SKETCHES}


def manifest_schema() -> dict:
    return json.loads(resources.files("schemas").joinpath("export_manifest.schema.json").read_text())


def validate_manifest(manifest: dict) -> None:
    """Raise ``jsonschema.ValidationError`` when a manifest breaks the contract."""
    import jsonschema
    jsonschema.validate(manifest, manifest_schema(), format_checker=jsonschema.FormatChecker())
