"""The ready signal of a published export, for the platform teams that consume it.

``export_summary`` is what every signal carries: the run date, where the export and its manifest are,
the contract version, rows per dataset, files and bytes. Two signals send it, both after ``_SUCCESS``:

* the nightly DAG's export task annotates its Airflow asset event (``encore://exports/nightly``) with it
  (``dags/encore_dag_support.py``), so a consumer DAG scheduled on that asset starts with it;
* ``export.notify_url``, when set, gets it as an HTTP POST (JSON), retried with backoff
  (``export.notify_attempts``). A refusal after the last attempt fails the export step with one
  line: the export stays published, and a rerun of the step publishes and notifies again.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import urllib.error
import urllib.request

from encore.config import Config
from encore.errors import EncoreError

log = logging.getLogger(__name__)
EVENT = "encore.export.published"


def export_summary(config: Config, run_date: dt.date) -> dict:
    """The summary of the published export of ``run_date`` (read from its manifest)."""
    from encore.export_store import MANIFEST, ExportStore
    store = ExportStore(config)
    run = store.published(run_date)
    if run is None or not store.exists(f"{run.folder}/{MANIFEST}"):
        raise EncoreError(f"{store.uri(store.path(f'run_date={run_date.isoformat()}'))} is not a published export "
                          f"(no _SUCCESS or manifest.json): run `encore export --date {run_date}`")
    manifest = json.loads(store.read_bytes(f"{run.folder}/{MANIFEST}"))
    return {
        "event": EVENT,
        "run_date": manifest["run_date"],
        "export_uri": run.uri,
        "manifest_uri": f"{run.uri}/{MANIFEST}",
        "schema_version": manifest["schema_version"],
        "created_at": manifest["created_at"],
        "rows": {name: dataset["rows"] for name, dataset in sorted(manifest["datasets"].items())},
        "files": len(manifest["files"]),
        "bytes": sum(f["bytes"] for f in manifest["files"]),
        "mlflow_run_id": manifest["run_id"],
    }


class _Refused(Exception):
    """A status the receiver may answer differently later (5xx, 408, 429): worth another attempt."""


def post_summary(url: str, summary: dict, *, attempts: int = 5, timeout_s: float = 10.0,
                 first_wait_s: float = 2.0) -> int:
    """POST ``summary`` as JSON to ``url``, retrying with exponential backoff (tenacity) on connection
    errors and on 5xx, 408 and 429 answers; returns the final HTTP status. Any other 4xx is not
    retried: the receiver said no. Raises EncoreError after the last attempt."""
    from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential
    body = json.dumps(summary, sort_keys=True).encode()

    def send() -> int:
        request = urllib.request.Request(url, data=body, method="POST",
                                         headers={"Content-Type": "application/json", "User-Agent": "encore"})
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            if exc.code >= 500 or exc.code in (408, 429):
                raise _Refused(f"HTTP {exc.code} {exc.reason}") from None
            raise EncoreError(f"export {summary['run_date']} is published, but {url} refused its notification "
                              f"(HTTP {exc.code} {exc.reason}): check export.notify_url; `encore export --date "
                              f"{summary['run_date']}` publishes and notifies again") from None

    try:
        for attempt in Retrying(retry=retry_if_exception_type((_Refused, urllib.error.URLError, OSError)),
                                stop=stop_after_attempt(max(1, attempts)), reraise=True,
                                wait=wait_exponential(multiplier=first_wait_s, max=60)):
            with attempt:
                status = send()
    except (_Refused, urllib.error.URLError, OSError) as exc:
        cause = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        raise EncoreError(f"export {summary['run_date']} is published, but its notification to {url} failed "
                          f"{attempts} times ({cause}): check export.notify_url and that the receiver is up; "
                          f"`encore export --date {summary['run_date']}` publishes and notifies again") from None
    log.info("export %s: notified %s (HTTP %d)", summary["run_date"], url, status)
    return status
