"""Progress of long loops: a bar on a terminal, timed log lines anywhere else."""
from __future__ import annotations

import io
import logging

from encore.progress import Progress, tracked


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_off_a_terminal_progress_is_a_log_line_per_tenth(caplog):
    caplog.set_level(logging.INFO, logger="encore.progress")
    progress = Progress("export: hashing files", 50, tty=False, clock=Clock())
    for _ in range(50):
        progress.update()
    progress.close()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 10 and lines[0].startswith("export: hashing files: 5/50 files (10%")
    assert lines[-1].startswith("export: hashing files: 50/50 files (100%")


def test_off_a_terminal_a_slow_loop_also_logs_every_30_seconds(caplog):
    caplog.set_level(logging.INFO, logger="encore.progress")
    clock = Clock()
    progress = Progress("ingest: checking landing files", 1000, tty=False, clock=clock)
    for _ in range(3):
        clock.now += 31
        progress.update()
    progress.close()
    lines = [r.getMessage() for r in caplog.records]
    assert [line.split(": ", 2)[2].split(" (")[0] for line in lines] == ["1/1000 files", "2/1000 files",
                                                                         "3/1000 files", "3/1000 files"]
    assert lines[-1].endswith("(100%, 93 s)")


def test_on_a_terminal_it_is_a_bar_and_no_log_lines(caplog):
    caplog.set_level(logging.INFO, logger="encore.progress")
    screen = io.StringIO()
    progress = Progress("export: hashing files", 4, tty=True, stream=screen)
    for _ in range(4):
        progress.update()
    progress.close()
    assert "export: hashing files:" in screen.getvalue() and "| 0/4 [" in screen.getvalue()   # a tqdm bar
    assert caplog.records == []


def test_tracked_yields_every_item_once():
    assert list(tracked(iter(range(7)), "loop", 7)) == list(range(7))
