"""Where exports live and how a run is published there: a local (or mounted) folder, or an object
store (``paths.exports: s3a://bucket/prefix`` or ``s3://…``), through one pyarrow filesystem.

A run is assembled in a local staging folder (``jobs/export.py``), then published:

* **Local folder.** The staging folder sits beside the target and is renamed to ``run_date=D``
  after ``_SUCCESS`` is written in it; a rerun renames the old folder aside first, then deletes it.
  ``_SUCCESS`` is empty and the run's files are in ``run_date=D/``.
* **Object store** (no rename there). The staging folder is uploaded to a prefix of its own,
  ``run_date=D/attempt=<time>-<id>/``, then ``run_date=D/_SUCCESS`` is written last: a small JSON
  pointer naming that attempt and the sha256 of its manifest. A single PUT replaces an object
  whole, so a reader sees the previous pointer or the new one. Attempts the pointer does not name
  (the replaced run, a crashed upload) are deleted after the pointer is written.

What a reader does, on either (docs/platform.md): read ``_SUCCESS`` (absent: not published); the
run's folder is ``run_date=D/`` or, when ``_SUCCESS`` names one, its attempt; read ``manifest.json``
there (on an object store, check its sha256 against the pointer) and only the files it lists. A
file gone while reading means a rerun replaced the run meanwhile: start again from ``_SUCCESS``.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from encore.config import Config
from encore.errors import EncoreError

log = logging.getLogger(__name__)
RUN_FOLDER = re.compile(r"^run_date=(\d{4}-\d{2}-\d{2})$")
ATTEMPT_FOLDER = re.compile(r"^attempt=[0-9TZ]+-[0-9a-f]{8}$")
SUCCESS = "_SUCCESS"
MANIFEST = "manifest.json"
CHECKSUMS = "SHA256SUMS"   # `sha256sum -c SHA256SUMS` in the run's folder checks every listed file
_SCHEMES = ("s3a://", "s3://")


def sha256_of(filesystem, path: str) -> str:
    """The SHA-256 of a file on a pyarrow filesystem, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with filesystem.open_input_stream(path) as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def run_folder_name(run_date: dt.date | str) -> str:
    return f"run_date={run_date.isoformat() if isinstance(run_date, dt.date) else run_date}"


@dataclass(frozen=True)
class PublishedRun:
    """A published run: its date, the folder its manifest and files are in (a path in the store's
    filesystem), and that folder as a URI for people and signals."""
    run_date: str
    folder: str
    uri: str


class ExportStore:
    """``paths.exports`` as a pyarrow filesystem, with the publishing rules above."""

    def __init__(self, config: Config):
        from pyarrow import fs
        self.config = config
        self.root_text = config.path("exports")
        self.remote = self.root_text.startswith(_SCHEMES)
        if self.remote:
            scheme = next(s for s in _SCHEMES if self.root_text.startswith(s))
            self.base = self.root_text[len(scheme):].rstrip("/")
            self.fs = self._s3(config)
        elif "://" in self.root_text:
            raise EncoreError(f"paths.exports is {self.root_text}: exports go to a local or mounted folder or to "
                              "an S3-compatible store (s3a://bucket/prefix); fix paths.exports")
        else:
            self.base = str(Path(self.root_text).resolve())
            self.fs = fs.LocalFileSystem()

    @staticmethod
    def _s3(config: Config):
        """An S3 filesystem with the endpoint and region the lakehouse's readers take from the profile
        (``encore.locations.storage_uri``) and credentials from the environment (AWS_ACCESS_KEY_ID, …)."""
        from pyarrow import fs
        from encore.locations import storage_uri
        options = storage_uri(config.path("exports").replace("s3://", "s3a://", 1), config)[1] or {}
        settings = {"connect_timeout": 5, "request_timeout": 30,
                    "retry_strategy": fs.AwsStandardS3RetryStrategy(max_attempts=3)}
        if options.get("AWS_ENDPOINT_URL"):
            scheme, _, host = options["AWS_ENDPOINT_URL"].partition("://")
            settings.update(endpoint_override=host or scheme, scheme=scheme if host else "https")
        if options.get("AWS_REGION"):
            settings["region"] = options["AWS_REGION"]
        return fs.S3FileSystem(**settings)

    # --- paths -------------------------------------------------------------------------------------------
    def path(self, *parts: str) -> str:
        return "/".join([self.base, *parts])

    def uri(self, path: str) -> str:
        return f"s3://{path}" if self.remote else Path(path).as_uri()

    def _unreachable(self, exc: Exception) -> EncoreError:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        return EncoreError(f"export: cannot reach the object store of paths.exports ({self.root_text}): {detail[:200]}; "
                           "check paths.exports, spark.conf's spark.hadoop.fs.s3a.endpoint and the AWS_* credentials")

    def check(self) -> None:
        """Stop with one line when the store cannot be reached (before any work)."""
        from pyarrow import fs
        try:
            if self.remote:
                bucket = self.base.split("/", 1)[0]
                if self.fs.get_file_info(bucket).type == fs.FileType.NotFound:
                    raise EncoreError(f"export: the bucket of paths.exports ({self.root_text}) does not exist: "
                                      "create it or fix paths.exports")
            else:
                self.fs.create_dir(self.base)
        except EncoreError:
            raise
        except OSError as exc:
            if self.remote:
                raise self._unreachable(exc) from None
            raise EncoreError(f"export: cannot create paths.exports ({self.root_text}): {exc}; fix paths.exports "
                              "or its permissions") from None

    # --- reading -----------------------------------------------------------------------------------------
    def read_bytes(self, path: str) -> bytes:
        with self.fs.open_input_stream(path) as stream:
            return stream.read()

    def exists(self, path: str) -> bool:
        from pyarrow import fs
        return self.fs.get_file_info(path).type != fs.FileType.NotFound

    def _children(self, path: str) -> list:
        from pyarrow import fs
        try:
            return self.fs.get_file_info(fs.FileSelector(path, allow_not_found=True))
        except OSError as exc:
            if self.remote:
                raise self._unreachable(exc) from None
            raise

    def run_dates(self) -> list[str]:
        """Dates with a run folder (published or not), oldest first."""
        from pyarrow import fs
        found = (RUN_FOLDER.match(info.base_name) for info in self._children(self.base)
                 if info.type == fs.FileType.Directory)
        return sorted(m.group(1) for m in found if m)

    def published(self, run_date: dt.date | str) -> PublishedRun | None:
        """The published run of that date, or None where there is no ``_SUCCESS``."""
        day = run_date.isoformat() if isinstance(run_date, dt.date) else run_date
        folder = self.path(run_folder_name(day))
        try:
            pointer = self.read_bytes(f"{folder}/{SUCCESS}")
        except FileNotFoundError:
            return None
        except OSError as exc:
            if self.remote:
                raise self._unreachable(exc) from None
            raise
        if pointer.strip():
            attempt = json.loads(pointer)["attempt"]
            if not ATTEMPT_FOLDER.match(attempt):
                raise EncoreError(f"{self.uri(folder)}/{SUCCESS} names '{attempt}', not an attempt folder: "
                                  f"export {day} again")
            folder = f"{folder}/{attempt}"
        return PublishedRun(day, folder, self.uri(folder))

    def files(self, folder: str) -> dict[str, int]:
        """Every file under ``folder``: its path relative to the folder, and its size."""
        from pyarrow import fs
        infos = self.fs.get_file_info(fs.FileSelector(folder, recursive=True, allow_not_found=True))
        return {info.path[len(folder) + 1:]: info.size for info in infos if info.type == fs.FileType.File}

    def sha256(self, path: str) -> str:
        return sha256_of(self.fs, path)

    # --- writing -----------------------------------------------------------------------------------------
    def staging_folder(self, run_date: dt.date) -> Path:
        """A new local folder to assemble a run in: beside the target for a local store (the rename
        that publishes it stays on one filesystem), else under ``paths.export_staging``."""
        name = f".staging-{run_folder_name(run_date)}-{uuid.uuid4().hex[:8]}"
        parent = Path(self.base) if not self.remote else Path(self.config.path("export_staging"))
        parent.mkdir(parents=True, exist_ok=True)
        staging = parent / name
        staging.mkdir()
        return staging

    def remove_leftovers(self, run_date: dt.date) -> None:
        """What a crashed export of that date left: local staging or replaced folders; on an object store, attempts
        the pointer does not name (and local staging folders of earlier uploads)."""
        folder = run_folder_name(run_date)
        local_parent = Path(self.base) if not self.remote else Path(self.config.path("export_staging"))
        for stale in local_parent.glob(f".*-{folder}-*") if local_parent.is_dir() else []:
            log.warning("export: removing %s left by an interrupted export", stale)
            shutil.rmtree(stale, ignore_errors=True)
        if self.remote:
            current = self.published(run_date)
            self._delete_attempts(self.path(folder), keep=current.folder if current else None)

    def _delete_attempts(self, run_folder: str, keep: str | None) -> None:
        from pyarrow import fs
        for info in self._children(run_folder):
            if info.type == fs.FileType.Directory and ATTEMPT_FOLDER.match(info.base_name) and info.path != keep:
                log.info("export: deleting %s (not the published attempt)", self.uri(info.path))
                self.fs.delete_dir(info.path)

    def publish(self, staging: Path, run_date: dt.date) -> PublishedRun:
        """Make the assembled run in ``staging`` the published run of ``run_date`` (module docstring)."""
        target = self.path(run_folder_name(run_date))
        if not self.remote:
            with open(staging / SUCCESS, "wb") as f:
                os.fsync(f.fileno())
            if Path(target).exists():
                aside = Path(target).with_name(f".replaced-{run_folder_name(run_date)}-{uuid.uuid4().hex[:8]}")
                os.rename(target, aside)
                os.rename(staging, target)
                shutil.rmtree(aside)
            else:
                os.rename(staging, target)
            return PublishedRun(run_date.isoformat(), target, self.uri(target))
        from pyarrow import fs
        attempt = f"attempt={dt.datetime.now(dt.timezone.utc).strftime('%Y%m%dT%H%M%SZ')}-{uuid.uuid4().hex[:8]}"
        folder = f"{target}/{attempt}"
        try:
            fs.copy_files(str(staging), folder, source_filesystem=fs.LocalFileSystem(), destination_filesystem=self.fs)
            pointer = {"attempt": attempt, "manifest_sha256": hashlib.sha256((staging / MANIFEST).read_bytes()).hexdigest()}
            with self.fs.open_output_stream(f"{target}/{SUCCESS}") as out:   # last: the run is published now
                out.write(json.dumps(pointer, sort_keys=True).encode())
        except OSError as exc:
            raise self._unreachable(exc) from None
        shutil.rmtree(staging)
        self._delete_attempts(target, keep=folder)
        return PublishedRun(run_date.isoformat(), folder, self.uri(folder))

    def withdraw(self, run_date: dt.date | str) -> None:
        """Remove a run date whole; ``_SUCCESS`` goes first, so a reader never trusts what is left."""
        day = run_date.isoformat() if isinstance(run_date, dt.date) else run_date
        target = self.path(run_folder_name(day))
        if not self.remote:
            if Path(target).exists():
                aside = Path(target).with_name(f".withdrawn-{run_folder_name(day)}-{uuid.uuid4().hex[:8]}")
                os.rename(target, aside)   # readers see the export or nothing, never half of one
                shutil.rmtree(aside)
            return
        if self.exists(f"{target}/{SUCCESS}"):
            self.fs.delete_file(f"{target}/{SUCCESS}")
        self.fs.delete_dir(target)

    def apply_retention(self, keep: int, current: str) -> list[str]:
        """Withdraw all but the newest ``keep`` run dates (never ``current``, a date); returns the dates removed."""
        dates = sorted(self.run_dates(), reverse=True)
        removed = [day for day in dates[max(keep, 1):] if day != current]
        for day in removed:
            self.withdraw(day)
        return removed

