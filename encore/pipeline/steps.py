"""The step registry: every pipeline step once, with its engine, the tables it reads and writes,
and the function it runs. The CLI's step commands, ``encore night``'s order, both DAGs' tasks and
their Airflow assets are all built from ``STEPS``; adding a step is one entry here.

A step's ``run`` takes a ``StepContext`` (the config, the logical date, the night's report, and a
lakehouse opened on first use, so steps that never touch Spark start no JVM) and returns its
one-line result, or ``None`` when it recorded its own parts in the report (``ensure-models``
records one line per model it trained). ``command`` is the CLI's fuller view of the same run
(a table of what was written); a step without one gets the one-line result as its CLI output.
"""
from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path
from dataclasses import dataclass
from typing import Callable

from encore.config import Config
from encore.errors import EncoreError
from encore.pipeline.report import NightReport, print_table
from schemas.table_names import (BRONZE_CATALOG_RAW, BRONZE_PLAY_COUNTS_RAW, BRONZE_PLAYS_RAW, GOLD_INTERACTIONS,
                                 GOLD_ITEMS, GOLD_MUSIC_SEQUENCES, GOLD_USER_PROFILES, SILVER_CATALOG,
                                 SILVER_MUSIC_QUARANTINE, SILVER_PLAY_COUNTS, SILVER_PLAYS, SILVER_PLAYS_QUARANTINE,
                                 WAREHOUSE_INSPIRATION_PACKS, WAREHOUSE_RECOMMENDATIONS, WAREHOUSE_SKETCHES)

NIGHTLY, TRAINING = "nightly", "training"


class StepContext:
    """What a step runs with: config, logical date, the night's report, and the lakehouse (opened
    on first use and shared by every step of one ``night``)."""

    def __init__(self, config: Config, day: dt.date | None, report: NightReport | None = None,
                 app_name: str = "encore", lake=None):
        self.config, self.day, self._lake, self._app_name = config, day, lake, app_name
        self.report = report or NightReport(day)

    @property
    def lake(self):
        if self._lake is None:
            from encore.lakehouse import open_lakehouse
            self._lake = open_lakehouse(self.config, self._app_name)
        return self._lake


@dataclass(frozen=True)
class Step:
    name: str                                  # the CLI command; the Airflow task id is name with '_' for '-'
    engine: str                                # "spark" or "ray": which cluster runs it in the cluster profile;
                                               # "python": the task's own process (DuckDB, no cluster)
    dag: str                                   # NIGHTLY (per logical date, in STEPS order) or TRAINING
    reads: tuple[str, ...]
    writes: tuple[str, ...]                    # the task's Airflow assets
    help: str
    run: Callable[[StepContext], str | None]
    command: Callable[[Config, argparse.Namespace], None] | None = None
    arguments: Callable[[argparse.ArgumentParser], None] | None = None
    date_help: str = "logical date, YYYY-MM-DD"

    @property
    def task_id(self) -> str:
        return self.name.replace("-", "_")

    @property
    def dated(self) -> bool:
        return self.dag == NIGHTLY


# --- shared argument helpers -------------------------------------------------------------------------

def parse_date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a date: use YYYY-MM-DD") from None


def add_date_range(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--date", type=parse_date, help="one logical date, YYYY-MM-DD")
    g.add_argument("--from", dest="start", type=parse_date, help="first date of a range (a backfill)")
    p.add_argument("--to", dest="end", type=parse_date, help="last date of the range, inclusive")


def dates_of(args) -> list[dt.date] | None:
    if getattr(args, "date", None):
        return [args.date]
    start, end = getattr(args, "start", None), getattr(args, "end", None)
    if start or end:
        if not (start and end):
            raise EncoreError("--from and --to go together: give both, or --date for one day")
        if end < start:
            raise EncoreError(f"--from {start} is after --to {end}")
        return [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]
    return None


def lakehouse(cfg: Config, app_name: str | None = None):
    from encore.lakehouse import open_lakehouse
    return open_lakehouse(cfg, app_name or f"encore-{current_command}")


current_command = "encore"   # set by the CLI: the Spark application is encore-<command>, so a cluster's UI says which


def _counts(counts: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(counts.items()))


# --- ingest, clean, features: Spark, per date or over a range ---------------------------------------

def ingest_run(ctx: StepContext) -> str:
    from jobs.ingest import ingest_landing
    return ", ".join(f"{k} +{v}" for k, v in ingest_landing(ctx.lake, [ctx.day]).items())


def ingest_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", choices=["landing", "lastfm1k", "hetrec"], default="landing")
    p.add_argument("--path", help="file or folder for --source lastfm1k / hetrec")
    add_date_range(p)


def ingest_command(cfg: Config, args) -> None:
    from jobs import ingest
    lake = lakehouse(cfg)
    if args.source == "landing":
        dates = dates_of(args)
        added = ingest.ingest_landing(lake, dates, missing_ok=dates is not None and len(dates) > 1)
    elif args.path is None:
        raise EncoreError(f"--source {args.source} needs --path")
    elif args.source == "lastfm1k":
        added = {BRONZE_PLAYS_RAW: ingest.ingest_lastfm1k(lake, args.path, args.date)}
    else:
        added = ingest.ingest_hetrec(lake, args.path, args.date)
    print_table(["table", "rows added"], sorted(added.items()))


def clean_run(ctx: StepContext) -> str:
    from jobs.clean import clean_date
    result = clean_date(ctx.lake, ctx.day)
    return f"{result.kept} kept, {result.quarantined} quarantined"


def clean_command(cfg: Config, args) -> None:
    from jobs.clean import clean_date
    dates = dates_of(args)
    if not dates:
        raise EncoreError("clean needs --date D or --from D1 --to D2")
    lake = lakehouse(cfg)
    if len(dates) == 1:   # one date (and the night): strict, its failure is the command's
        results = [clean_date(lake, dates[0])]
    else:
        results = over_range("clean", dates, lambda d: clean_date(lake, d))
    print_table(["date", "events", "kept", "quarantined", "reasons"],
                [(r.date, r.events, r.kept, r.quarantined, _counts(r.reasons)) if hasattr(r, "kept") else
                 (r[0], "-", "-", "-", r[1]) for r in results])
    held_back_line("clean", results)


def over_range(step: str, dates: list[dt.date], run) -> list:
    """A backfill: every date in order; a date with no data is skipped, one that fails its gate is held
    back, and the range goes on. Returns each date's result, or (date, what happened) for the others."""
    import logging
    from encore.errors import DateHeldBack, NoDataForDate
    results = []
    for day in dates:
        try:
            results.append(run(day))
        except NoDataForDate:
            logging.getLogger("encore.pipeline").info("%s %s: skipped, no data", step, day)
            results.append((day, "skipped: no data for this date"))
        except DateHeldBack as exc:
            logging.getLogger("encore.pipeline").warning("%s %s: held back: %s", step, day, exc)
            results.append((day, f"held back: {str(exc).split('; ')[0].split(': ', 1)[-1]}"))
    return results


def held_back_line(step: str, results: list) -> None:
    """After a range: one line naming every date skipped or held back, and a non-zero exit if any was held back."""
    skipped = [r[0].isoformat() for r in results if isinstance(r, tuple) and r[1].startswith("skipped")]
    held = [f"{r[0]} ({r[1][len('held back: '):]})" for r in results if isinstance(r, tuple) and r[1].startswith("held")]
    done = len(results) - len(skipped) - len(held)
    if held:
        raise EncoreError(f"{step}: {len(held)} of {len(results)} dates held back: {'; '.join(held)}"
                          + (f"; skipped (no data): {', '.join(skipped)}" if skipped else "")
                          + f"; {done} done. Fix the cause and rerun those dates (see docs/data-engineer.md, "
                          "'Backfills')")
    if skipped:
        print(f"{step}: {done} of {len(results)} dates done; skipped (no data): {', '.join(skipped)}")


def features_run(ctx: StepContext) -> str:
    from jobs.features import build_features
    return ", ".join(f"{k}={v}" for k, v in build_features(ctx.lake, ctx.day).items())


def features_command(cfg: Config, args) -> None:
    from jobs.features import build_features
    dates = dates_of(args)
    if not dates:
        raise EncoreError("features needs --date D (the as-of date) or a --from/--to range")
    lake = lakehouse(cfg)
    rows = []
    for d in dates:
        out = build_features(lake, d)
        rows.append((d, out[GOLD_INTERACTIONS], out[GOLD_ITEMS], out[GOLD_USER_PROFILES]))
    print_table(["as_of_date", "interactions", "items", "user_profiles"], rows)


# --- models: trained when missing (nightly) or weekly (training DAG) -------------------------------

def ensure_models_run(ctx: StepContext) -> None:
    """Train whichever model has no champion yet (the first night of a fresh installation); one
    report line per model trained, none when both have a champion."""
    from encore import tracking
    config, report = ctx.config, ctx.report
    if tracking.champion(config, config.recommender.model_name) is None:
        report.step("train-recommender (no champion yet)", lambda: train_recommender_run(ctx))
    if tracking.champion(config, config.music.model_name) is None:
        if not ctx.lake.exists(GOLD_MUSIC_SEQUENCES):
            report.step("corpus (no music corpus yet)", lambda: corpus_run(ctx))
        report.step("train-music (no champion yet)", lambda: train_music_run(ctx))
    return None


def ensure_models_command(cfg: Config, args) -> None:
    ctx = StepContext(cfg, args.date, app_name=f"encore-{current_command}")
    ensure_models_run(ctx)
    if not ctx.report.steps:
        ctx.report.steps.append(("ensure-models", "both models have a champion: nothing to train", 0.0))
    ctx.report.print()


def corpus_run(ctx: StepContext) -> str:
    from jobs.corpus import build_corpus
    return _counts(build_corpus(ctx.lake))


def corpus_command(cfg: Config, args) -> None:
    from jobs.corpus import build_corpus
    print_table(["what", "rows"], sorted(build_corpus(lakehouse(cfg)).items()))


def train_recommender_run(ctx: StepContext) -> str:
    from ray_jobs.train_recommender import train_recommender
    result = train_recommender(ctx.config, ctx.day)
    return f"v{result.model_version}: {result.decision.reason}"


def train_recommender_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--date", type=parse_date, help="as_of_date of the gold snapshot (default: the newest)")
    p.add_argument("--trials", type=int, help="search trials (default recommender.search.trials; 0 = no search)")
    p.add_argument("--interactions-version", type=int, help="pin gold.interactions to this Delta version")
    p.add_argument("--items-version", type=int, help="pin gold.items to this Delta version")


def train_recommender_command(cfg: Config, args) -> None:
    from encore.pipeline.recommender_eval import print_comparison
    from ray_jobs.train_recommender import train_recommender
    versions = {k: v for k, v in {GOLD_INTERACTIONS: args.interactions_version,
                                  GOLD_ITEMS: args.items_version}.items() if v is not None}
    result = train_recommender(cfg, args.date, search_trials=args.trials, versions=versions)
    print_comparison(result.comparison, f"held-out split of gold.interactions as of {args.date or 'latest'} "
                     f"(versions {result.versions})")
    print(f"\nMLflow run {result.run_id}: {cfg.recommender.model_name} v{result.model_version} "
          f"{'PROMOTED to champion' if result.decision.promoted else 'not promoted'}: {result.decision.reason}")


def train_music_run(ctx: StepContext) -> str:
    from ray_jobs.train_music import train_music
    result = train_music(ctx.config)
    return f"v{result.model_version}: {result.decision.reason}"


def train_music_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--export-windows", metavar="FILE.npz", type=Path,
                   help="write the training's inputs to one file for ray_jobs/train_music_standalone.py "
                        "(a machine with PyTorch alone, e.g. a GPU machine) and stop")
    g.add_argument("--import-run", metavar="DIR", type=Path,
                   help="log, register and gate a run that train_music_standalone.py wrote to DIR, "
                        "instead of training with Ray")


def train_music_command(cfg: Config, args) -> None:
    from ray_jobs.train_music import export_windows, train_music
    if args.export_windows:
        prep = export_windows(cfg, args.export_windows)
        print_table(["file", "train windows", "validation windows", "context", "vocab", "tokenizer sha256"],
                    [(str(args.export_windows), len(prep.train_windows), len(prep.valid_windows),
                      prep.model_cfg.context, prep.vocab.size, prep.tokenizer_sha256[:12])])
        return
    result = train_music(cfg, import_run=args.import_run)
    rows = [(int(r["epoch"]), f"{r['train_loss']:.3f}", f"{r['valid_nll_per_token']:.3f}", f"{r['valid_nll_per_note']:.3f}",
             f"{r['tokens_per_second']:.0f}") for r in result.history]
    print_table(["epoch", "train loss", "valid NLL/token", "valid NLL/note", "tokens/s"], rows)
    print(f"\nMLflow run {result.run_id}: {cfg.music.model_name} v{result.model_version} "
          f"{'PROMOTED to champion' if result.decision.promoted else 'not promoted'}: {result.decision.reason}")


# --- score, generate: Ray, per run date ------------------------------------------------------------

def score_run(ctx: StepContext) -> str:
    from ray_jobs.score import score
    r = score(ctx.lake, ctx.day)
    return (f"{r.users} users, {r.rows} rows ({', '.join(f'{k}={v}' for k, v in sorted(r.per_strategy.items()))}), "
            f"recommender v{r.model_version}")


def score_command(cfg: Config, args) -> None:
    from ray_jobs.score import score
    r = score(lakehouse(cfg), args.date)
    print_table(["run_date", "users", "rows", "per strategy", "recommender", "MLflow run", "seconds"],
                [(r.run_date, r.users, r.rows, _counts(r.per_strategy), f"v{r.model_version}", r.run_id,
                  f"{r.seconds:.1f}")])


def generate_run(ctx: StepContext) -> str:
    from ray_jobs.packs import generate_packs
    r = generate_packs(ctx.lake, ctx.day)
    return (f"{r.packs} packs, {r.sketches} sketches, {r.pool_counts['generated']} generated for the pools, "
            f"{r.pool_counts['pool_dropped']} dropped, music v{r.model_version}")


def generate_command(cfg: Config, args) -> None:
    from ray_jobs.packs import generate_packs
    r = generate_packs(lakehouse(cfg), args.date)
    print_table(["run_date", "packs", "sketches", "short packs", "pool generated", "pool dropped", "music model",
                 "MLflow run", "seconds"],
                [(r.run_date, r.packs, r.sketches, r.short_packs, r.pool_counts["generated"],
                  r.pool_counts["pool_dropped"], f"v{r.model_version}", r.run_id, f"{r.seconds:.1f}")])


# --- export, validate: Spark, per run date ---------------------------------------------------------

def export_run(ctx: StepContext) -> str:
    from jobs.export import export_run as publish
    r = publish(ctx.lake, ctx.day)
    return f"{r.location} ({r.files} files, {r.rows['recommendations']} recommendations, {r.rows['packs']} sketches)"


def export_command(cfg: Config, args) -> None:
    from jobs.export import export_run as publish
    r = publish(lakehouse(cfg), args.date)
    print_table(["run_date", "folder", "recommendations", "sketches", "files", "MB", "removed old runs"],
                [(r.run_date, r.location, r.rows["recommendations"], r.rows["packs"], r.files, f"{r.bytes / 1e6:.1f}",
                  ", ".join(r.removed_runs) or "-")], max_width=100)


def validate_run(ctx: StepContext) -> str:
    from jobs.export import validate_export
    rows = validate_export(ctx.lake, ctx.day)
    previews = f", {rows['audio']} audio previews" if "audio" in rows else ""
    return f"export matches its manifest and the warehouse ({rows['midi']} MIDI files{previews})"


def validate_command(cfg: Config, args) -> None:
    from jobs.export import validate_export
    rows = validate_export(lakehouse(cfg), args.date)
    print_table(["run_date", "recommendations", "sketches", "MIDI files", "audio previews", "checks"],
                [(args.date, rows["recommendations"], rows["packs"], rows["midi"], rows.get("audio", "-"),
                  "_SUCCESS, manifest contract, sha256 and size of every file, row counts vs manifest and warehouse")],
                max_width=120)


# --- report: Python (DuckDB over delta-rs, matplotlib), per run date ------------------------------------

def _reported_steps() -> tuple[str, ...]:
    return tuple(s.name for s in of_dag(NIGHTLY) if s.name != "report")


def report_run(ctx: StepContext) -> str:
    from encore.pipeline.night_report import build_report
    r = build_report(ctx.config, ctx.day, steps=_reported_steps())
    not_run = [s.key for s in r.sections if not s.available]
    return f"{r.html_path}" + (f" (not run: {', '.join(not_run)})" if not_run else "")


def report_command(cfg: Config, args) -> None:
    from encore.pipeline.night_report import build_report
    r = build_report(cfg, args.date, steps=_reported_steps())
    print_table(["run_date", "report", "sections drawn", "not run", "MLflow run", "seconds"],
                [(r.run_date, r.html_path, sum(s.available for s in r.sections),
                  ", ".join(s.key for s in r.sections if not s.available) or "-", r.mlflow_run_id or "not logged",
                  f"{r.seconds:.1f}")], max_width=110)


# --- maintain: Spark, the whole lakehouse (weekly) ---------------------------------------------------

def maintain_run(ctx: StepContext) -> str:
    from jobs.maintain import maintain
    r = maintain(ctx.lake)
    deleted = sum(len(u.dates_deleted) for u in r.tables)
    return (f"{deleted} old dates deleted, {sum(u.files_compacted for u in r.tables)} files compacted, "
            f"{sum(u.files_vacuumed for u in r.tables)} vacuumed over {len(r.tables)} tables")


def maintain_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dry-run", action="store_true", help="say what would be deleted and vacuumed; change nothing")
    p.add_argument("--force", action="store_true",
                   help="allow maintain.vacuum_retention_hours or log_retention_hours below Delta's 168-hour safety "
                        "minimum (only when no night can run meanwhile: a shorter window can delete the files, or the "
                        "log entries, of a write in flight)")


def maintain_command(cfg: Config, args) -> None:
    from jobs.maintain import maintain
    r = maintain(lakehouse(cfg), force=args.force, dry_run=args.dry_run)
    print_table(["table", "dates deleted", "rows deleted", "files compacted", "vacuum window h", "files vacuumed",
                 "log entries deleted", "files now", "MB now", "note"],
                [(u.table, len(u.dates_deleted), u.rows_deleted, f"{u.files_compacted} -> {u.files_written}",
                  f"{u.retention_hours:g}", u.files_vacuumed, u.log_entries_deleted, u.files, f"{u.bytes / 1e6:.1f}",
                  u.note or "-")
                 for u in r.tables], max_width=100)
    for line in r.lineage:
        print(line)
    print("\ndry run: nothing was changed" if r.dry_run else f"\nMLflow run {r.run_id} ({cfg.maintain.experiment}), "
          f"{r.seconds:.0f} s")


def _no_arguments(p: argparse.ArgumentParser) -> None:
    pass


SILVER_READ = (SILVER_PLAYS, SILVER_PLAY_COUNTS, SILVER_CATALOG)
GOLD = (GOLD_INTERACTIONS, GOLD_ITEMS, GOLD_USER_PROFILES)
WAREHOUSE = (WAREHOUSE_RECOMMENDATIONS, WAREHOUSE_SKETCHES, WAREHOUSE_INSPIRATION_PACKS)
CORPUS = (GOLD_MUSIC_SEQUENCES, SILVER_MUSIC_QUARANTINE)

STEPS: tuple[Step, ...] = (
    Step("ingest", "spark", NIGHTLY, (), (BRONZE_PLAYS_RAW, BRONZE_CATALOG_RAW, BRONZE_PLAY_COUNTS_RAW),
         "raw files -> bronze (each file once)", ingest_run, ingest_command, ingest_arguments),
    Step("clean", "spark", NIGHTLY, (BRONZE_PLAYS_RAW, BRONZE_CATALOG_RAW, BRONZE_PLAY_COUNTS_RAW, SILVER_PLAYS),
         (SILVER_PLAYS, SILVER_PLAYS_QUARANTINE, SILVER_PLAY_COUNTS, SILVER_CATALOG),
         "bronze -> silver.plays + silver.plays_quarantine for dates", clean_run, clean_command, add_date_range),
    Step("features", "spark", NIGHTLY, SILVER_READ, GOLD,
         "silver -> gold snapshot as of a date", features_run, features_command, add_date_range),
    Step("ensure-models", "ray", NIGHTLY, GOLD[:2] + (GOLD_MUSIC_SEQUENCES,), CORPUS,
         "train the recommender and/or the music model if it has no champion yet", ensure_models_run,
         ensure_models_command, date_help="as-of date of the gold snapshot to train on"),
    Step("score", "ray", NIGHTLY, GOLD + (SILVER_PLAYS, SILVER_PLAY_COUNTS), (WAREHOUSE_RECOMMENDATIONS,),
         "champion recommender's top-K for every user -> warehouse.recommendations", score_run, score_command,
         date_help="run date (reads the gold snapshot as of it)"),
    Step("generate", "ray", NIGHTLY, (GOLD_MUSIC_SEQUENCES, GOLD_USER_PROFILES, WAREHOUSE_RECOMMENDATIONS),
         (WAREHOUSE_SKETCHES, WAREHOUSE_INSPIRATION_PACKS),
         "inspiration packs from the champion music model -> warehouse.sketches + warehouse.inspiration_packs", generate_run,
         generate_command, date_help="run date (needs that date's recommendations)"),
    Step("export", "spark", NIGHTLY, WAREHOUSE, (),
         "publish the run date's warehouse rows to exports/run_date=D/ (manifest, _SUCCESS, atomic)", export_run,
         export_command, date_help="run date"),
    Step("validate", "spark", NIGHTLY, WAREHOUSE, (),
         "check a published export against its manifest and the warehouse", validate_run, validate_command,
         date_help="run date"),
    Step("report", "python", NIGHTLY, SILVER_READ[:1] + (SILVER_PLAYS_QUARANTINE, GOLD_ITEMS, GOLD_USER_PROFILES)
         + WAREHOUSE, (),
         "the night's report: <paths.reports>/run_date=D/report.html (+ report.json), logged to MLflow", report_run,
         report_command, date_help="run date"),
    Step("corpus", "spark", TRAINING, (), CORPUS,
         "symbolic music -> gold.music_sequences (MidiTok REMI + BPE) with Spark", corpus_run, corpus_command,
         _no_arguments),
    Step("train-recommender", "ray", TRAINING, (GOLD_INTERACTIONS, GOLD_ITEMS), (),
         "fit LightFM with a Ray Tune search, evaluate against baselines, log to MLflow and gate the champion",
         train_recommender_run, train_recommender_command, train_recommender_arguments),
    Step("train-music", "ray", TRAINING, (GOLD_MUSIC_SEQUENCES,), (),
         "train the music Transformer with Ray Train, log and gate it in MLflow", train_music_run,
         train_music_command, train_music_arguments),
    Step("maintain", "spark", TRAINING, (), (),
         "lakehouse upkeep: retention of old dates, OPTIMIZE with Z-order, VACUUM keeping the champions' data",
         maintain_run, maintain_command, maintain_arguments),
)


def of_dag(dag: str) -> list[Step]:
    """The steps of one DAG, in the order they run."""
    return [s for s in STEPS if s.dag == dag]


def get(name: str) -> Step:
    for s in STEPS:
        if s.name == name:
            return s
    raise KeyError(name)


def add_arguments(step: Step, p: argparse.ArgumentParser) -> None:
    """A step's own options, else ``--date`` (required) for a nightly step."""
    if step.arguments is not None:
        step.arguments(p)
    elif step.dated:
        p.add_argument("--date", type=parse_date, required=True, help=step.date_help)


def run_command(step: Step, cfg: Config, args) -> None:
    """The CLI command of a step: its own, else its one-line result as a table; a nightly step run for
    one date is recorded in the step ledger (encore/pipeline/ledger.py)."""
    from encore.pipeline import ledger
    day = getattr(args, "date", None) if step.dated else None
    with ledger.recording(cfg, step, day) as record:
        if step.command is not None:
            return step.command(cfg, args)
        ctx = StepContext(cfg, day or getattr(args, "date", None), app_name=f"encore-{current_command}")
        record.result = ctx.report.step(step.name, lambda: step.run(ctx))
        ctx.report.print()
