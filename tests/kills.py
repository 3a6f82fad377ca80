"""Test support for the fault matrix's kill rows: run a step as a process group of its own and SIGKILL it
(the Python driver, Spark's JVM, a local Ray's workers) at a point inside its write."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path


def committed_files(table: Path) -> set[str]:
    """The file names every commit in the Delta table's log added."""
    names = set()
    for commit in (table / "_delta_log").glob("*.json"):
        for line in commit.read_text().splitlines():
            action = json.loads(line) if line.strip() else {}
            if "add" in action:
                names.add(Path(action["add"]["path"]).name)
    return names


def kill_when(argv: list[str], env: dict, written: Callable[[], set[Path]], timeout: float = 300) -> set[Path]:
    """Run ``argv`` and SIGKILL its process group as soon as ``written()`` names a file it did not name before;
    returns those new files."""
    before = written()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            new = written() - before
            if new:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=60)
                return new
            if proc.poll() is not None:
                raise AssertionError(f"{argv[1:]} ended before it wrote a data file: {proc.stderr.read()[-2000:]}")
            time.sleep(0.01)
        raise AssertionError(f"{argv[1:]} wrote no data file in {timeout} s")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def kill_inside_write(argv: list[str], env: dict, table: Path, timeout: float = 300) -> None:
    """SIGKILL the step as soon as its first new data file lands in the Delta ``table``: the write has started
    and is not committed (checked against the table's log)."""
    def data_files() -> set[Path]:
        return {p for p in table.rglob("*.parquet") if "_delta_log" not in p.parts} if table.exists() else set()
    new = kill_when(argv, env, data_files, timeout)
    assert not {p.name for p in new} & committed_files(table), "the kill came after the commit: not inside the write"
