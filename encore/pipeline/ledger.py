"""The step ledger: one small JSON record per step run for a date, whoever ran it (``encore night``,
a step command, an Airflow task, a Ray job), under ``<paths.reports>/run_date=D/steps/<step>.json``.

A record says when the step started, how long it took, whether it succeeded (and the first line of
its error when not), its one-line result, the Delta version of each table it reads as it started,
and the commits it made to each table it writes (version, operation, rows). The night's report
draws its "night" section from these records; a rerun of a step replaces its record, as it
replaces its tables. Writing a record never fails the step: a problem is logged and the step goes on.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path

from encore.config import Config

log = logging.getLogger(__name__)


def steps_folder(config: Config, day: dt.date) -> Path:
    return Path(config.path("reports")) / f"run_date={day.isoformat()}" / "steps"


def _versions(config: Config, names) -> dict[str, int | None]:
    from encore.delta_reader import current_version
    return {name: current_version(config, name) for name in names}


def _written(config: Config, before: dict[str, int | None]) -> dict[str, list[dict]]:
    from encore.delta_reader import commits, current_version
    out = {}
    for name, version in before.items():
        latest = current_version(config, name)
        if latest is None or latest == version:
            continue
        out[name] = [{k: c[k] for k in ("version", "operation", "rows")} for c in commits(config, name, version, latest)]
    return out


class Record:
    """What a running step adds to its record: the one-line result, once known."""

    def __init__(self) -> None:
        self.result: str | None = None


@contextmanager
def recording(config: Config, step, day: dt.date | None):
    """Record one run of ``step`` (a ``steps.Step``) for ``day``; yields a ``Record`` for its result.
    Steps without a date (training, maintain) are not recorded."""
    if day is None or "://" in config.path("reports"):
        yield Record()
        return
    record, started_at, started = Record(), dt.datetime.now(dt.timezone.utc), time.monotonic()
    try:
        reads = _versions(config, step.reads)
        before = _versions(config, step.writes)
    except Exception as exc:   # the ledger must never stop a step
        log.warning("ledger: cannot read table versions before %s (%s)", step.name, exc)
        reads, before = {}, None
    outcome, error = "succeeded", None
    try:
        yield record
    except BaseException as exc:
        outcome, error = "failed", (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise
    finally:
        seconds = time.monotonic() - started
        try:
            written = _written(config, before) if before is not None else {}
        except Exception as exc:
            log.warning("ledger: cannot read the commits of %s (%s)", step.name, exc)
            written = {}
        _write(steps_folder(config, day) / f"{step.name}.json", {
            "step": step.name, "engine": step.engine, "run_date": day.isoformat(),
            "started_at": started_at.isoformat(timespec="milliseconds"), "seconds": round(seconds, 2),
            "outcome": outcome, "error": error, "result": record.result, "host": socket.gethostname(),
            "reads": reads, "writes": written})


def _write(path: Path, record: dict) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}")
        partial.write_text(json.dumps(record, indent=1, sort_keys=True))
        os.replace(partial, path)   # readers see the old record or the new one, never half of one
    except OSError as exc:
        log.warning("ledger: cannot write %s (%s)", path, exc)


def read(config: Config, day: dt.date) -> list[dict]:
    """The date's step records, in the order the steps started."""
    folder = steps_folder(config, day)
    if not folder.is_dir():
        return []
    records = []
    for path in folder.glob("*.json"):
        try:
            records.append(json.loads(path.read_text()))
        except (OSError, ValueError) as exc:
            log.warning("ledger: skipping unreadable %s (%s)", path, exc)
    return sorted(records, key=lambda r: r.get("started_at", ""))
