"""What a person sees of a run: the plain-text table every command prints, and the night's report
(each step's one-line result and duration)."""
from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass, field

log = logging.getLogger("encore.pipeline")


def print_table(columns: list[str], rows: list[tuple], max_width: int = 60) -> None:
    cells = [[("NULL" if v is None else str(v)) for v in row] for row in rows]
    widths = [max([len(c)] + [min(len(r[i]), max_width) for r in cells]) for i, c in enumerate(columns)]
    line = "+".join("-" * (w + 2) for w in widths)
    print(" | ".join(c.ljust(w) for c, w in zip(columns, widths)))
    print(line)
    for r in cells:
        print(" | ".join(_shorten(v, max_width).ljust(w) for v, w in zip(r, widths)))


def _shorten(value: str, width: int) -> str:
    """A cell cut to ``width`` in its middle: a path keeps its file name, an id its tail."""
    if len(value) <= width:
        return value
    head = (width - 3) // 2
    return value[:head] + "..." + value[len(value) - (width - 3 - head):]


@dataclass
class NightReport:
    run_date: dt.date
    steps: list[tuple[str, str, float]] = field(default_factory=list)   # (step, result, seconds)

    def step(self, name: str, fn):
        """Run one step, log its start and end, and record its one-line result (none when it returns
        None: a step that recorded its own parts, such as ensure-models)."""
        log.info("night %s: %s ...", self.run_date, name)
        started = time.monotonic()
        summary = fn()
        seconds = time.monotonic() - started
        if summary is None:
            log.info("night %s: %s done in %.1f s", self.run_date, name, seconds)
            return None
        self.steps.append((name, summary, seconds))
        log.info("night %s: %s done in %.1f s: %s", self.run_date, name, seconds, summary)
        return summary

    def print(self) -> None:
        print_table(["step", "result", "seconds"], [(s, r, f"{secs:.1f}") for s, r, secs in self.steps], max_width=110)
