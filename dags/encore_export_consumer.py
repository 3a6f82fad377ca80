"""encore_export_consumer: an example for platform teams, to copy.

It runs whenever ``encore_nightly`` announces a published export: its schedule is the asset
``encore://exports/nightly``, whose event the export task emits after ``_SUCCESS`` with the export's summary
as ``extra`` (run date, ``export_uri``, ``manifest_uri``, rows per dataset, files, bytes). The task
checks the export against its manifest (``_SUCCESS`` present, every listed file there with its size
and SHA-256) before anything would load it: put your load after ``check_export``. It reads files
only, with the standard library: it needs no Encore, Spark or Ray on the consumer's side.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from urllib.parse import unquote, urlparse

from airflow.sdk import dag, task

from encore_dag_support import dag_settings, exports_asset


def _local(uri: str) -> Path:
    parsed = urlparse(uri)
    if parsed.scheme != "file":
        raise ValueError(f"{uri}: this example reads file:// exports only")
    return Path(unquote(parsed.path))


def check_export(summary: dict) -> dict:
    """Raise unless the export the summary describes is complete and matches its manifest."""
    folder, manifest_path = _local(summary["export_uri"]), _local(summary["manifest_uri"])
    if not (folder / "_SUCCESS").is_file():
        raise RuntimeError(f"{folder} has no _SUCCESS: not a published export")
    manifest = json.loads(manifest_path.read_text())
    if manifest["run_date"] != summary["run_date"]:
        raise RuntimeError(f"{manifest_path} is of {manifest['run_date']}, the event of {summary['run_date']}")
    for entry in manifest["files"]:
        path = folder / entry["path"]
        if not path.is_file() or path.stat().st_size != entry["bytes"]:
            raise RuntimeError(f"{path} is missing or not {entry['bytes']} bytes")
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        if digest.hexdigest() != entry["sha256"]:
            raise RuntimeError(f"{path} does not match its manifest's sha256")
    return {"run_date": summary["run_date"], "files": len(manifest["files"]), "rows": summary["rows"]}


@dag(dag_id="encore_export_consumer", schedule=[exports_asset()], doc_md=__doc__, **dag_settings())
def encore_export_consumer():
    @task
    def check(*, triggering_asset_events=None) -> list[dict]:
        return [check_export(event.extra) for event in triggering_asset_events[exports_asset()]]

    check()


encore_export_consumer()
