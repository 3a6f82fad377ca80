"""Progress of Encore's own long loops (checking landing files, hashing an export), for a person and
for a log: on a terminal a tqdm bar on stderr; anywhere else (Airflow, a Ray job's log, a file) one
log line each time another tenth is done or 30 s have passed, whichever comes first. Spark draws
its own console bar on a terminal (encore/spark.py) and Ray Data logs its own progress off one
(encore/ray_runtime.py).
"""
from __future__ import annotations

import logging
import sys
import time
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")
log = logging.getLogger("encore.progress")


class Progress:
    def __init__(self, what: str, total: int, unit: str = "files", *, tty: bool | None = None, stream=None,
                 every_share: float = 0.1, every_s: float = 30.0, clock=time.monotonic):
        self.what, self.total, self.unit = what, max(int(total), 0), unit
        self.done, self.clock = 0, clock
        self.every_share, self.every_s = every_share, every_s
        self.started = self.last_time = clock()
        self.last_share = 0.0
        stream = stream or sys.stderr
        self.bar = None
        if (stream.isatty() if tty is None else tty) and self.total:
            from tqdm import tqdm
            self.bar = tqdm(total=self.total, desc=what, unit=unit.rstrip("s") or unit, file=stream, leave=False,
                            dynamic_ncols=True)

    def update(self, n: int = 1) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            return
        now = self.clock()
        share = self.done / self.total if self.total else 1.0
        if share - self.last_share >= self.every_share - 1e-9 or now - self.last_time >= self.every_s:
            self.last_share, self.last_time = share, now
            log.info("%s: %d/%d %s (%.0f%%, %.0f s)", self.what, self.done, self.total, self.unit, 100 * share,
                     now - self.started)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.done and self.last_share < 1.0:
            log.info("%s: %d/%d %s (100%%, %.0f s)", self.what, self.done, self.total, self.unit,
                     self.clock() - self.started)


def tracked(items: Iterable[T], what: str, total: int, unit: str = "files") -> Iterator[T]:
    """``items`` as they come, counted on a bar or in timed log lines."""
    progress = Progress(what, total, unit)
    try:
        for item in items:
            yield item
            progress.update()
    finally:
        progress.close()
