"""One night for one logical date: every nightly step of the registry, in its order
(ingest -> clean -> features -> ensure-models -> score -> generate -> export -> validate).
``encore night`` and the README's main command call ``run_night``; each step is also its own CLI
command and Airflow task.

Every step replaces its date's outputs, so rerunning a night (or resuming after a failed step)
gives the same tables and export, never duplicates.
"""
from __future__ import annotations

import datetime as dt

from encore.pipeline import ledger
from encore.pipeline.report import NightReport
from encore.pipeline.steps import NIGHTLY, StepContext, of_dag


def run_night(lake, run_date: dt.date, *, ingest: bool = True, report: NightReport | None = None) -> NightReport:
    """Run the nightly steps for ``run_date`` on ``lake``; ``ingest=False`` when the landing files
    were ingested already (the demo ingests every date at once)."""
    ctx = StepContext(lake.config, run_date, report or NightReport(run_date), lake=lake)
    for step in of_dag(NIGHTLY):
        if step.name == "ingest" and not ingest:
            continue
        with ledger.recording(ctx.config, step, run_date) as record:
            record.result = ctx.report.step(step.name, lambda step=step: step.run(ctx))
    return ctx.report
