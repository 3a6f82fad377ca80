"""The nightly export for platform teams: one run date of the warehouse tables as files under
``paths.exports``, following the contract in ``schemas/export.py``.

The run is assembled in a local staging folder: the datasets, the MIDI files, ``manifest.json``
(validated) and ``SHA256SUMS``. ``encore.export_store`` then publishes it, atomically for readers:
on a local folder by a rename, on an object store by an upload to an attempt prefix and a
``_SUCCESS`` pointer written last. A crash before that leaves the previous export untouched and
unpublished leftovers, which the next export of that date removes. After publishing, only the
newest ``export.keep_runs`` run dates are kept (the date just exported always stays).

Each dataset is split into Parquet files of about ``export.max_file_mb``, by ranges of user ids;
each distinct sketch's MIDI file is written once, from ``warehouse.sketches``.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from encore.errors import EncoreError
from encore.export_store import CHECKSUMS, MANIFEST, SUCCESS, ExportStore, sha256_of
from schemas import export as contract
from schemas.table_names import WAREHOUSE_INSPIRATION_PACKS, WAREHOUSE_RECOMMENDATIONS, WAREHOUSE_SKETCHES

log = logging.getLogger(__name__)


@dataclass
class ExportResult:
    run_date: dt.date
    location: str          # the published run's folder: a local path, or an s3:// URI
    run_id: str
    rows: dict[str, int]
    files: int
    bytes: int
    removed_runs: list[str]
    seconds: float


def _tidy_spark_output(folder: Path) -> list[Path]:
    """Drop Spark's own _SUCCESS and checksum files; return the data files, sorted."""
    for extra in list(folder.glob("_*")) + list(folder.glob(".*.crc")):
        extra.unlink()
    return sorted(folder.glob("*.parquet"))


def _select(df, schema):
    return df.select([df[f.name].cast(f.dataType).alias(f.name) for f in schema])


def _rows_per_file(config, name: str, versions: dict, run_date: dt.date, target_bytes: int, rows: int | None = None) -> int:
    """Rows per exported file so that a file holds about ``target_bytes``: the date's bytes per row in
    the warehouse table (from its Delta log), per exported row (``rows``: default, the table's rows)."""
    from encore.delta_reader import partition_size
    size, table_rows = partition_size(config, name, versions[name], "run_date", run_date)
    exported = rows if rows is not None else table_rows
    if not size or not exported:
        return 1_000_000
    return max(1, int(target_bytes / (size / exported)))


def _write_sharded(df, folder: Path, order: list[str], rows_per_file: int, target_bytes: int) -> None:
    """Parquet files of about ``target_bytes`` each, split by ranges of ``order[0]`` (a user's rows stay in one
    file) and sorted by ``order`` within each.

    The rows per file are an estimate; when a written file still exceeds the target by half, the
    dataset is written once more with the rows per file its own largest file measured."""
    import pyarrow.parquet as pq
    rows = df.count()
    for attempt in range(2):
        files = max(1, -(-rows // rows_per_file))
        shaped = df.repartitionByRange(files, order[0]) if files > 1 else df.coalesce(1)
        shaped.sortWithinPartitions(*order).write.mode("overwrite").parquet(str(folder))
        parts = _tidy_spark_output(folder)
        largest = max(parts, key=lambda p: p.stat().st_size)
        size = largest.stat().st_size
        if size <= target_bytes * 1.5 or attempt == 1:
            if size > target_bytes * 1.5:
                log.warning("export: %s/%s is %d bytes, over export.max_file_mb (%d bytes) by more than half",
                            folder.name, largest.name, size, target_bytes)
            return
        per_row = size / max(pq.read_metadata(largest).num_rows, 1)
        rows_per_file = max(1, int(target_bytes / per_row))
        log.info("export: %s files over the target; writing again with %d rows per file", folder.name, rows_per_file)


def export_run(lake, run_date: dt.date) -> ExportResult:
    """Write ``exports/run_date=D/`` from the warehouse tables' rows of that date."""
    import mlflow
    from pyspark.sql import functions as F
    from encore import tracking

    config = lake.config
    started = time.perf_counter()
    store = ExportStore(config)
    store.check()
    store.remove_leftovers(run_date)

    versions = {}
    frames = {}
    for name, hint in ((WAREHOUSE_RECOMMENDATIONS, "score"), (WAREHOUSE_SKETCHES, "generate"),
                       (WAREHOUSE_INSPIRATION_PACKS, "generate")):
        if not lake.exists(name):
            raise EncoreError(f"{name} does not exist yet: run `encore {hint} --date {run_date}` first")
        versions[name] = lake.version(name)
        frames[name] = lake.read(name, versions[name]).where(F.col("run_date") == F.lit(run_date))
        if frames[name].isEmpty():
            raise EncoreError(f"{name} has no rows for {run_date}: run `encore {hint} --date {run_date}` first")
    recs, packs = frames[WAREHOUSE_RECOMMENDATIONS], frames[WAREHOUSE_INSPIRATION_PACKS]
    stored = frames[WAREHOUSE_SKETCHES].drop("run_date", "style", "key", "tempo_bucket", "model_name",
                                             "model_version", "mlflow_run_id")
    for df in (recs, packs):
        for row in df.select(F.explode("source_versions" if "source_versions" in df.columns else "data_versions")
                             ).distinct().collect():
            versions.setdefault(row["key"], int(row["value"]))

    # A pack names its sketches; their MIDI and facts are stored once, in warehouse.sketches (a small
    # table: the night's pools), joined to every pack row that names them.
    sketches = (packs.select("run_date", "user_id", "pack_id", "model_version", "seed_items",
                             F.posexplode("sketches").alias("position", "sketch"))
                .select("run_date", "user_id", "pack_id", (F.col("position") + 1).alias("sketch_index"),
                        *(F.col(f"sketch.{c}").alias(c) for c in ("sketch_id", "style", "key", "tempo_bucket")),
                        F.col("seed_items.item_id").alias("seed_item_ids"),
                        F.col("seed_items.name").alias("seed_item_names"), "model_version")
                .join(F.broadcast(stored.withColumn("midi_sha256", F.sha2(F.col("midi"), 256)).drop("midi")),
                      "sketch_id", "left")
                .withColumn("midi_path", F.concat(F.lit("midi/"), F.col("sketch_id"), F.lit(".mid"))))
    missing = sketches.where(F.col("midi_sha256").isNull()).select("sketch_id").distinct().limit(5).collect()
    if missing:
        raise EncoreError(f"{WAREHOUSE_INSPIRATION_PACKS} of {run_date} names sketches that {WAREHOUSE_SKETCHES} lacks "
                          f"(e.g. {', '.join(r['sketch_id'] for r in missing)}): packs written before sketches were "
                          f"stored once; run `encore generate --date {run_date}` again, then export")
    audio = config.music.audio
    font = None
    if audio.soundfont:  # previews only when a SoundFont is configured: a system one may differ per host
        from encore.audio import soundfont
        font = soundfont(audio.soundfont)
    sketches = sketches.withColumn("audio_path", F.concat(F.lit("audio/"), F.col("sketch_id"), F.lit(f".{audio.format}"))
                                   if font else F.lit(None).cast("string"))
    target_bytes = int(config.export.max_file_mb * 2 ** 20)

    staging = store.staging_folder(run_date)
    tracking.experiment(config, config.nightly.experiment)
    with mlflow.start_run(run_name=f"export {run_date}") as run:
        mlflow.set_tags({"job": "export", "run_date": str(run_date)})
        mlflow.log_params({f"source.{k}.version": v for k, v in versions.items()})
        try:
            rows_per_file = {
                "recommendations": _rows_per_file(config, WAREHOUSE_RECOMMENDATIONS, versions, run_date, target_bytes),
                "packs": _rows_per_file(config, WAREHOUSE_INSPIRATION_PACKS, versions, run_date, target_bytes,
                                        rows=packs.select(F.sum(F.size("sketches"))).first()[0])}
            _write_sharded(_select(recs, contract.RECOMMENDATIONS), staging / "recommendations", ["user_id", "rank"],
                           rows_per_file["recommendations"], target_bytes)
            _write_sharded(_select(sketches, contract.PACK_SKETCHES), staging / "packs", ["user_id", "sketch_index"],
                           rows_per_file["packs"], target_bytes)
            (staging / "midi").mkdir()
            midi_count = 0
            named = sketches.select("sketch_id").distinct()
            for row in stored.join(named, "sketch_id").select("sketch_id", "midi").toLocalIterator():
                (staging / "midi" / f"{row['sketch_id']}.mid").write_bytes(bytes(row["midi"]))
                midi_count += 1
            audio_seconds = _render_previews(staging, font, audio.format) if font else None
            manifest = _manifest(staging, run_date, run.info.run_id, recs, packs, versions, midi_count)
            (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
            (staging / CHECKSUMS).write_text(checksums_text(manifest))
            published = store.publish(staging, run_date)
        except BaseException:
            log.error("export %s failed before publishing; %s is left unpublished and the previous export "
                      "(if any) is untouched", run_date, staging)
            raise
        removed = store.apply_retention(config.export.keep_runs, run_date.isoformat())
        total_bytes = sum(f["bytes"] for f in manifest["files"])
        seconds = time.perf_counter() - started
        mlflow.log_metrics({"rows.recommendations": manifest["datasets"]["recommendations"]["rows"],
                            "rows.packs": manifest["datasets"]["packs"]["rows"], "files.midi": midi_count,
                            "bytes": total_bytes, "seconds": seconds, "removed_runs": len(removed)})
        if audio_seconds is not None:
            mlflow.log_metrics({"files.audio": manifest["datasets"]["audio"]["rows"], "seconds.audio": audio_seconds})
        mlflow.log_dict(manifest, "manifest.json")
    log.info("export %s: %s (%d files, %.1f MB)%s", run_date, published.uri, len(manifest["files"]), total_bytes / 1e6,
             f"; removed old runs {removed}" if removed else "")
    if config.export.notify_url:
        from encore.notify import export_summary, post_summary
        post_summary(config.export.notify_url, export_summary(config, run_date), attempts=config.export.notify_attempts)
    return ExportResult(run_date, published.uri if store.remote else published.folder, run.info.run_id,
                        {k: v["rows"] for k, v in manifest["datasets"].items()}, len(manifest["files"]),
                        total_bytes, removed, seconds)


def _render_previews(staging: Path, font: Path, suffix: str) -> float:
    """audio/<sketch_id>.<suffix> for every MIDI file of the export; returns the seconds it took."""
    from encore.audio import render_audio
    started = time.perf_counter()
    midi = sorted((staging / "midi").glob("*.mid"))
    from encore.progress import tracked
    for path in tracked(midi, "export: rendering audio previews", len(midi), "previews"):
        render_audio(path.read_bytes(), font, staging / "audio" / f"{path.stem}.{suffix}")
    return time.perf_counter() - started


def _manifest(staging: Path, run_date: dt.date, run_id: str, recs, packs, versions: dict, midi_count: int) -> dict:
    import pyarrow.parquet as pq
    from pyarrow.fs import LocalFileSystem
    from encore.progress import tracked
    datasets, parquet_rows = {}, {}
    for dataset in ("recommendations", "packs"):
        parts = _tidy_spark_output(staging / dataset)
        counts = [pq.read_metadata(part).num_rows for part in parts]
        parquet_rows.update(zip(parts, counts))
        datasets[dataset] = {"rows": sum(counts), "files": [p.relative_to(staging).as_posix() for p in parts]}
    midi = sorted((staging / "midi").glob("*.mid"))
    datasets["midi"] = {"rows": midi_count, "files": [m.relative_to(staging).as_posix() for m in midi]}
    previews = sorted((staging / "audio").glob("*")) if (staging / "audio").is_dir() else []
    if previews:
        datasets["audio"] = {"rows": len(previews), "files": [a.relative_to(staging).as_posix() for a in previews]}
    every = [*parquet_rows, *midi, *previews]
    local = LocalFileSystem()
    files = []
    for path in tracked(every, "export: hashing files", len(every)):
        entry = {"path": path.relative_to(staging).as_posix(), "bytes": path.stat().st_size,
                 "sha256": sha256_of(local, str(path))}
        if path in parquet_rows:
            entry["rows"] = parquet_rows[path]
        files.append(entry)

    def model(df, label: str) -> dict:
        found = df.select("model_name", "model_version", "mlflow_run_id").distinct().collect()
        if len(found) != 1:
            raise EncoreError(f"{label} rows of {run_date} come from {len(found)} model versions or runs: "
                              f"rerun that step for the date so one run wrote them")
        return found[0]

    rec_model, pack_model = model(recs, WAREHOUSE_RECOMMENDATIONS), model(packs, WAREHOUSE_INSPIRATION_PACKS)
    manifest = {
        "schema_version": contract.SCHEMA_VERSION,
        "run_date": run_date.isoformat(),
        "created_at": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "run_id": run_id,
        "datasets": datasets,
        "files": files,
        "models": {"recommender": {"name": rec_model["model_name"], "version": int(rec_model["model_version"])},
                   "music": {"name": pack_model["model_name"], "version": int(pack_model["model_version"])}},
        "source_versions": dict(sorted(versions.items())),
        "upstream_runs": {"score": rec_model["mlflow_run_id"], "generate": pack_model["mlflow_run_id"]},
    }
    contract.validate_manifest(manifest)
    return manifest


def checksums_text(manifest: dict) -> str:
    """``SHA256SUMS``: every file the manifest lists, as ``sha256sum`` writes it (``sha256sum -c`` checks it)."""
    return "".join(f"{f['sha256']}  {f['path']}\n" for f in sorted(manifest["files"], key=lambda f: f["path"]))


def validate_export(lake, run_date: dt.date) -> dict[str, int]:
    """Check a published export against its manifest and the warehouse rows it came from.

    Raises ``EncoreError`` listing every problem: no ``_SUCCESS``, a manifest that breaks the
    contract (or, on an object store, differs from the one ``_SUCCESS`` names), ``SHA256SUMS`` that
    disagrees with the manifest, a file missing, changed (sha256, size) or not listed, Parquet row
    counts that differ from the manifest, or from the warehouse tables at the Delta versions the
    manifest records, and audio previews that do not match the MIDI files one to one.
    """
    import pyarrow.parquet as pq
    from pyspark.sql import functions as F

    store = ExportStore(lake.config)
    run = store.published(run_date)
    if run is None:
        raise EncoreError(f"{store.uri(store.path(f'run_date={run_date.isoformat()}'))} is not a published export "
                          f"(no _SUCCESS): run `encore export --date {run_date}`")
    folder = run.folder
    manifest_bytes = store.read_bytes(f"{folder}/{MANIFEST}")
    manifest = json.loads(manifest_bytes)
    problems = []
    if store.remote:
        pointer = json.loads(store.read_bytes(store.path(f"run_date={run_date.isoformat()}", SUCCESS)))
        if hashlib.sha256(manifest_bytes).hexdigest() != pointer.get("manifest_sha256"):
            problems.append(f"{MANIFEST} differs from the one {SUCCESS} names (sha256)")
    try:
        contract.validate_manifest(manifest)
    except Exception as exc:  # jsonschema.ValidationError: report it with the other problems
        problems.append(f"manifest breaks the contract: {str(exc).splitlines()[0]}")
    listed = {f["path"]: f for f in manifest.get("files", [])}
    sizes = store.files(folder)
    if CHECKSUMS in sizes and store.read_bytes(f"{folder}/{CHECKSUMS}").decode() != checksums_text(manifest):
        problems.append(f"{CHECKSUMS} disagrees with the manifest")
    present = set(sizes) - {MANIFEST, SUCCESS, CHECKSUMS}
    problems += [f"{p} is not in the manifest" for p in sorted(present - set(listed))]
    problems += [f"{p} is missing" for p in sorted(set(listed) - present)]
    for path, entry in sorted(listed.items()):
        if path in present and (sizes[path] != entry["bytes"] or store.sha256(f"{folder}/{path}") != entry["sha256"]):
            problems.append(f"{path} differs from its manifest entry (sha256 or size)")
    rows = {}
    for dataset, table in (("recommendations", WAREHOUSE_RECOMMENDATIONS), ("packs", WAREHOUSE_INSPIRATION_PACKS)):
        files = manifest.get("datasets", {}).get(dataset, {}).get("files", [])
        rows[dataset] = sum(pq.read_metadata(f"{folder}/{f}", filesystem=store.fs).num_rows for f in files if f in present)
        if rows[dataset] != manifest["datasets"][dataset]["rows"]:
            problems.append(f"{dataset}: {rows[dataset]} rows in the files, {manifest['datasets'][dataset]['rows']} "
                            "in the manifest")
        frame = lake.read(table, manifest["source_versions"].get(table)).where(F.col("run_date") == F.lit(run_date))
        expected = frame.count() if dataset == "recommendations" else \
            (frame.select(F.sum(F.size("sketches"))).first()[0] or 0)
        if rows[dataset] != expected:
            problems.append(f"{dataset}: {rows[dataset]} rows exported, {expected} in {table} for {run_date}")
    datasets = manifest.get("datasets", {})
    if "audio" in datasets:  # since 1.1: one preview per MIDI file, same sketch ids
        stems = {kind: {Path(f).stem for f in datasets[kind]["files"]} for kind in ("midi", "audio")}
        if stems["midi"] != stems["audio"]:
            problems.append(f"audio previews and MIDI files differ: {len(stems['midi'] - stems['audio'])} sketches "
                            f"without a preview, {len(stems['audio'] - stems['midi'])} previews without a sketch")
    if problems:
        raise EncoreError(f"export {run.uri} failed validation: " + "; ".join(problems))
    rows["midi"] = len(datasets["midi"]["files"])
    if "audio" in datasets:
        rows["audio"] = len(datasets["audio"]["files"])
    return rows
