"""One night for one logical date, in order: ingest -> clean -> features -> (training when a model
has no champion yet) -> score -> generate -> export -> validate. ``encore night`` and the README's
main command call ``run_night``; each step is also its own CLI command and Airflow task.

Every step replaces its date's outputs, so rerunning a night (or resuming after a failed step)
gives the same tables and export, never duplicates.
"""
from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass, field
from schemas.table_names import GOLD_MUSIC_SEQUENCES

log = logging.getLogger(__name__)


@dataclass
class NightReport:
    run_date: dt.date
    steps: list[tuple[str, str, float]] = field(default_factory=list)   # (step, result, seconds)

    def step(self, name: str, fn):
        """Run one step, log its start and end, and record its one-line result."""
        log.info("night %s: %s ...", self.run_date, name)
        started = time.monotonic()
        summary = fn()
        seconds = time.monotonic() - started
        self.steps.append((name, summary, seconds))
        log.info("night %s: %s done in %.1f s: %s", self.run_date, name, seconds, summary)
        return summary


def ingest_step(lake, dates: list[dt.date]) -> str:
    """Ingest the landing dates; a one-line summary of rows added per bronze table."""
    from jobs.ingest import ingest_landing
    return ", ".join(f"{k} +{v}" for k, v in ingest_landing(lake, dates).items())


def clean_step(lake, day: dt.date) -> str:
    """Clean one date; a one-line summary of kept and quarantined rows."""
    from jobs.clean import clean_date
    result = clean_date(lake, day)
    return f"{result.kept} kept, {result.quarantined} quarantined"


def ensure_models(lake, run_date: dt.date, report: NightReport) -> None:
    """Train whichever model has no champion yet (the first night of a fresh installation)."""
    from encore import tracking
    config = lake.config
    if tracking.champion(config, str(config.get("recommender.model_name"))) is None:
        def train_rec():
            from ray_jobs.train_recommender import train_recommender
            result = train_recommender(config, run_date)
            return f"v{result.model_version}: {result.decision.reason}"
        report.step("train-recommender (no champion yet)", train_rec)
    if tracking.champion(config, str(config.get("music.model_name"))) is None:
        if not lake.exists(GOLD_MUSIC_SEQUENCES):
            def corpus():
                from jobs.corpus import build_corpus
                counts = build_corpus(lake)
                return ", ".join(f"{k}={v}" for k, v in sorted(counts.items()))
            report.step("corpus (no music corpus yet)", corpus)

        def train_music_step():
            from ray_jobs.train_music import train_music
            result = train_music(config)
            return f"v{result.model_version}: {result.decision.reason}"
        report.step("train-music (no champion yet)", train_music_step)


def run_night(lake, run_date: dt.date, *, ingest: bool = True) -> NightReport:
    from jobs.export import export_run, validate_export
    from jobs.features import build_features
    from ray_jobs.packs import generate_packs
    from ray_jobs.score import score

    report = NightReport(run_date)
    if ingest:
        report.step("ingest", lambda: ingest_step(lake, [run_date]))
    report.step("clean", lambda: clean_step(lake, run_date))
    report.step("features", lambda: ", ".join(f"{k}={v}" for k, v in build_features(lake, run_date).items()))
    ensure_models(lake, run_date, report)

    def score_step():
        r = score(lake, run_date)
        return (f"{r.users} users, {r.rows} rows ({', '.join(f'{k}={v}' for k, v in sorted(r.per_strategy.items()))}), "
                f"recommender v{r.model_version}")
    report.step("score", score_step)

    def generate_step():
        r = generate_packs(lake, run_date)
        return (f"{r.packs} packs, {r.sketches} sketches, {r.pool_counts['generated']} generated for the pools, "
                f"{r.pool_counts['pool_dropped']} dropped, music v{r.model_version}")
    report.step("generate", generate_step)

    def export_step():
        r = export_run(lake, run_date)
        return f"{r.path} ({r.files} files, {r.rows['recommendations']} recommendations, {r.rows['packs']} sketches)"
    report.step("export", export_step)

    def validate_step():
        rows = validate_export(lake, run_date)
        return f"export matches its manifest and the warehouse ({rows['midi']} MIDI files)"
    report.step("validate", validate_step)
    return report
