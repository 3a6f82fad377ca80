"""The ``encore`` command line: one sub-command per pipeline step, plus sql, tables and demo.

Every step is a thin call of the same function the Airflow DAGs call. Problems the user can fix
(``EncoreError``) print one line and exit with status 2.
"""
from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
import time

from encore.config import Config, load_config
from encore.errors import EncoreError
from schemas.table_names import BRONZE_PLAYS_RAW, GOLD_INTERACTIONS, GOLD_ITEMS, GOLD_USER_PROFILES

log = logging.getLogger("encore")


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a date: use YYYY-MM-DD") from None


def _dates(args) -> list[dt.date] | None:
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


def _add_date_args(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--date", type=_date, help="one logical date, YYYY-MM-DD")
    g.add_argument("--from", dest="start", type=_date, help="first date of a range (a backfill)")
    p.add_argument("--to", dest="end", type=_date, help="last date of the range, inclusive")


def _print_table(columns: list[str], rows: list[tuple], max_width: int = 60) -> None:
    cells = [[("NULL" if v is None else str(v)) for v in row] for row in rows]
    widths = [max([len(c)] + [min(len(r[i]), max_width) for r in cells]) for i, c in enumerate(columns)]
    line = "+".join("-" * (w + 2) for w in widths)
    print(" | ".join(c.ljust(w) for c, w in zip(columns, widths)))
    print(line)
    for r in cells:
        print(" | ".join((v if len(v) <= max_width else v[:max_width - 3] + "...").ljust(w) for v, w in zip(r, widths)))


# --- commands ------------------------------------------------------------------------------------

def _generate(cfg: Config, **overrides) -> dict[str, int]:
    """generate-logs with the config's `generate` section, overridden by any non-None argument."""
    from encore.sources.generate_logs import generate
    g = {**cfg.section("generate"), **{k: v for k, v in overrides.items() if v is not None}}
    return generate(cfg.path("landing"), str(g["source"]), _date(str(g["end_date"])), int(g["days"]), int(g["seed"]),
                    events_per_day=int(g["events_per_day"]), users=int(g["users"]), items=int(g["items"]),
                    fault_rate=float(g["fault_rate"]), bots=int(g["bots"]), events_per_file=int(g["events_per_file"]),
                    hetrec_dir=g.get("hetrec_dir"), scale=float(g.get("scale", 0.01)), workers=g.get("workers"))


def cmd_generate_logs(cfg: Config, args) -> None:
    options = ("source", "days", "seed", "events_per_day", "users", "items", "fault_rate", "bots",
               "events_per_file", "hetrec_dir", "scale", "workers")
    written = _generate(cfg, end_date=args.end_date and args.end_date.isoformat(),
                        **{name: getattr(args, name) for name in options})
    _print_table(["date", "lines"], sorted(written.items()))
    print(f"landing: {cfg.path('landing')}")


_STEP = "encore"   # the Spark application name: encore-<step>, so a cluster's UI says which step ran


def _lake(cfg: Config, catalog: bool = False):
    from encore.lakehouse import open_lakehouse
    return open_lakehouse(cfg, _STEP, catalog=catalog)


def cmd_ingest(cfg: Config, args) -> None:
    from jobs import ingest
    lake = _lake(cfg)
    if args.source == "landing":
        added = ingest.ingest_landing(lake, _dates(args))
    elif args.path is None:
        raise EncoreError(f"--source {args.source} needs --path")
    elif args.source == "lastfm1k":
        added = {BRONZE_PLAYS_RAW: ingest.ingest_lastfm1k(lake, args.path, args.date)}
    else:
        added = ingest.ingest_hetrec(lake, args.path, args.date)
    _print_table(["table", "rows added"], sorted(added.items()))


def cmd_clean(cfg: Config, args) -> None:
    from jobs.clean import clean_date
    dates = _dates(args)
    if not dates:
        raise EncoreError("clean needs --date D or --from D1 --to D2")
    lake = _lake(cfg)
    results = [clean_date(lake, d) for d in dates]
    _print_table(["date", "events", "kept", "quarantined", "reasons"],
                 [(r.date, r.events, r.kept, r.quarantined,
                   ", ".join(f"{k}={v}" for k, v in sorted(r.reasons.items()))) for r in results])


def cmd_features(cfg: Config, args) -> None:
    from jobs.features import build_features
    dates = _dates(args)
    if not dates:
        raise EncoreError("features needs --date D (the as-of date) or a --from/--to range")
    lake = _lake(cfg)
    rows = []
    for d in dates:
        out = build_features(lake, d)
        rows.append((d, out[GOLD_INTERACTIONS], out[GOLD_ITEMS], out[GOLD_USER_PROFILES]))
    _print_table(["as_of_date", "interactions", "items", "user_profiles"], rows)


def cmd_sql(cfg: Config, args) -> None:
    lake = _lake(cfg, catalog=True)
    try:
        df = lake.spark.sql(args.query)
    except Exception as exc:  # analysis errors: show Spark's first line, not a JVM trace
        raise EncoreError(f"query failed: {str(exc).splitlines()[0]}") from None
    rows = df.limit(args.limit + 1).collect()
    _print_table(df.columns, [tuple(r) for r in rows[: args.limit]])
    if len(rows) > args.limit:
        print(f"(first {args.limit} rows; raise --limit for more)")


def cmd_tables(cfg: Config, args) -> None:
    from encore.lakehouse import open_lakehouse
    from schemas.tables import TABLES
    lake = open_lakehouse(cfg)
    rows = []
    for name, table in TABLES.items():
        version = lake.version(name) if lake.exists(name) else "-"
        rows.append((name, version, ",".join(table.partition_by) or "-", table.doc))
    _print_table(["table", "version", "partitioned by", "description"], rows)
    print(f"lakehouse: {lake.root}")


def cmd_schema(cfg: Config, args) -> None:
    """Print a contract's fields: a raw record (play_event, catalog_entry) or a table."""
    from schemas.events import field_docs
    from schemas.tables import TABLES
    if args.name in TABLES:
        table = TABLES[args.name]
        print(f"{table.name}: {table.doc}")
        _print_table(["column", "type", "description"],
                     [(f.name + ("" if f.nullable else " (not null)"), f.dataType.simpleString(), f.metadata.get("comment", ""))
                      for f in table.schema], max_width=200)
        for name, expr in table.constraints.items():
            print(f"CHECK {name}: {expr}")
    elif args.name in ("play_event", "catalog_entry"):
        _print_table(["field", "JSON type", "description"], field_docs(args.name), max_width=200)
    elif args.name.startswith("export."):
        from schemas import export
        files = {f"export.{k}": v for k, v in export.FILES.items()}
        if args.name == "export.manifest":
            import json
            print(json.dumps(export.manifest_schema(), indent=2))
            return
        if args.name not in files:
            raise EncoreError(f"no export contract named '{args.name}': use {', '.join(files)} or export.manifest")
        print(f"{args.name} (export contract {export.SCHEMA_VERSION})")
        _print_table(["column", "type", "description"],
                     [(f.name, f.dataType.simpleString(), f.metadata.get("comment", "")) for f in files[args.name]],
                     max_width=200)
    else:
        raise EncoreError(f"no contract named '{args.name}': use play_event, catalog_entry, export.recommendations, "
                          f"export.packs, export.manifest or one of {', '.join(TABLES)}")


def cmd_setup(cfg: Config, args) -> None:
    from encore.lakehouse import open_lakehouse
    lake = open_lakehouse(cfg)
    probe = f"{cfg.path('catalog')}/setup-probe"
    lake.spark.range(1).write.format("delta").mode("overwrite").save(probe)
    assert lake.spark.read.format("delta").load(probe).count() == 1
    print(f"Spark {lake.spark.version} with Delta is ready; home: {cfg.home}")


def _print_night(report) -> None:
    _print_table(["step", "result", "seconds"], [(s, r, f"{secs:.1f}") for s, r, secs in report.steps], max_width=110)


def cmd_demo(cfg: Config, args) -> None:
    """Generate the embedded synthetic logs, backfill the earlier dates, then run the night of the last one."""
    from encore.pipeline.night import NightReport, clean_step, ingest_step, run_night
    started = time.monotonic()
    written = _generate(cfg)
    dates = sorted(dt.date.fromisoformat(d) for d in written)
    lake = _lake(cfg)
    earlier = NightReport(dates[-1])
    earlier.steps.append(("generate-logs", f"{sum(written.values())} lines over {len(written)} days",
                          time.monotonic() - started))
    earlier.step("ingest", lambda: ingest_step(lake, dates))
    for d in dates[:-1]:
        earlier.step(f"clean {d}", lambda d=d: clean_step(lake, d))
    report = run_night(lake, dates[-1], ingest=False)
    report.steps[:0] = earlier.steps
    _print_night(report)
    last = dates[-1]
    print(f"\nTables under {lake.root}, export under {cfg.path('exports')}/run_date={last}. Try:\n"
          f"  .venv/bin/encore sql \"SELECT rank, item_name, strategy, reason FROM warehouse.recommendations "
          f"WHERE run_date = DATE'{last}' AND user_id = (SELECT min(user_id) FROM warehouse.recommendations) "
          f"ORDER BY rank LIMIT 10\"")


def cmd_night(cfg: Config, args) -> None:
    from encore.pipeline.night import run_night
    _print_night(run_night(_lake(cfg), args.date))


def cmd_ensure_models(cfg: Config, args) -> None:
    from encore.pipeline.night import NightReport, ensure_models
    report = NightReport(args.date)
    ensure_models(_lake(cfg), args.date, report)
    if not report.steps:
        report.steps.append(("ensure-models", "both models have a champion: nothing to train", 0.0))
    _print_night(report)


def cmd_score(cfg: Config, args) -> None:
    from ray_jobs.score import score
    r = score(_lake(cfg), args.date)
    _print_table(["run_date", "users", "rows", "per strategy", "recommender", "MLflow run", "seconds"],
                 [(r.run_date, r.users, r.rows, ", ".join(f"{k}={v}" for k, v in sorted(r.per_strategy.items())),
                   f"v{r.model_version}", r.run_id, f"{r.seconds:.1f}")])


def cmd_generate(cfg: Config, args) -> None:
    from ray_jobs.packs import generate_packs
    r = generate_packs(_lake(cfg), args.date)
    _print_table(["run_date", "packs", "sketches", "short packs", "pool generated", "pool dropped", "music model",
                  "MLflow run", "seconds"],
                 [(r.run_date, r.packs, r.sketches, r.short_packs, r.pool_counts["generated"],
                   r.pool_counts["pool_dropped"], f"v{r.model_version}", r.run_id, f"{r.seconds:.1f}")])


def cmd_export(cfg: Config, args) -> None:
    from jobs.export import export_run
    r = export_run(_lake(cfg), args.date)
    _print_table(["run_date", "folder", "recommendations", "sketches", "files", "MB", "removed old runs"],
                 [(r.run_date, r.path, r.rows["recommendations"], r.rows["packs"], r.files, f"{r.bytes / 1e6:.1f}",
                   ", ".join(r.removed_runs) or "-")], max_width=100)


def cmd_validate(cfg: Config, args) -> None:
    from jobs.export import validate_export
    rows = validate_export(_lake(cfg), args.date)
    _print_table(["run_date", "recommendations", "sketches", "MIDI files", "checks"],
                 [(args.date, rows["recommendations"], rows["packs"], rows["midi"],
                   "_SUCCESS, manifest contract, sha256 and size of every file, row counts vs manifest and warehouse")],
                 max_width=120)


def cmd_corpus(cfg: Config, args) -> None:
    from jobs.corpus import build_corpus
    counts = build_corpus(_lake(cfg))
    _print_table(["what", "rows"], sorted(counts.items()))


def cmd_train_music(cfg: Config, args) -> None:
    from ray_jobs.train_music import train_music
    result = train_music(cfg)
    rows = [(int(r["epoch"]), f"{r['train_loss']:.3f}", f"{r['valid_nll_per_token']:.3f}", f"{r['valid_nll_per_note']:.3f}",
             f"{r['tokens_per_second']:.0f}") for r in result.history]
    _print_table(["epoch", "train loss", "valid NLL/token", "valid NLL/note", "tokens/s"], rows)
    print(f"\nMLflow run {result.run_id}: {cfg.get('music.model_name')} v{result.model_version} "
          f"{'PROMOTED to champion' if result.decision.promoted else 'not promoted'}: {result.decision.reason}")


def cmd_sample(cfg: Config, args) -> None:
    from encore import music
    from ray_jobs.music_bundle import load_generator
    from encore.tracking import CHAMPION, require_champion
    name = str(cfg.get("music.model_name"))
    require_champion(cfg, name, "run `encore train-music` first")
    key = music.normalise_key(args.key if ":" in args.key else f"{args.key}:{'min' if args.minor else 'maj'}")
    if key is None:
        raise EncoreError(f"--key {args.key} is not a key: use a note name such as D, F# or Bb (add --minor for minor)")
    if args.style not in music.STYLES:
        raise EncoreError(f"--style {args.style} is not one of {', '.join(music.STYLES)}")
    generator = load_generator(f"models:/{name}@{CHAMPION}")
    sketch = generator.generate([(args.style, key, args.tempo)], [args.seed], bars=args.bars,
                                temperature=args.temperature, top_p=args.top_p)[0]
    if sketch.midi is None:
        raise EncoreError(f"the sample did not decode to MIDI ({sketch.checks.get('error')}): try another --seed")
    from pathlib import Path
    Path(args.output).write_bytes(sketch.midi)
    print(f"wrote {args.output}: {args.style}, {key}, {args.tempo} tempo, {args.bars} bars, seed {args.seed}, "
          f"{len(sketch.tokens)} tokens")


def cmd_train_recommender(cfg: Config, args) -> None:
    from encore.pipeline.recommender_eval import print_comparison
    from ray_jobs.train_recommender import train_recommender
    versions = {k: v for k, v in {GOLD_INTERACTIONS: args.interactions_version,
                                  GOLD_ITEMS: args.items_version}.items() if v is not None}
    result = train_recommender(cfg, args.date, search_trials=args.trials, versions=versions)
    print_comparison(result.comparison, f"held-out split of gold.interactions as of {args.date or 'latest'} "
                     f"(versions {result.versions})")
    print(f"\nMLflow run {result.run_id}: {cfg.get('recommender.model_name')} v{result.model_version} "
          f"{'PROMOTED to champion' if result.decision.promoted else 'not promoted'}: {result.decision.reason}")


def cmd_recommender_eval(cfg: Config, args) -> None:
    from encore.pipeline.recommender_eval import recommender_eval
    frame = recommender_eval(cfg, args.hetrec_dir, args.out, trials=args.trials, keep_home=args.keep_home)
    print(f"\nwrote {args.out}: {frame['user_id'].nunique()} users x top-10 (columns user_id, item_id, rank)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="encore", description="Encore: nightly batch pipeline from music play logs to recommendations.",
        epilog="Settings: encore/defaults.yaml, --config FILE, ENCORE_HOME, ENCORE__SECTION__KEY=value. "
               "Run `encore STEP --help` for a step's options.")
    parser.add_argument("--profile", help="config profile (default: local, or ENCORE_PROFILE)")
    parser.add_argument("--config", help="a YAML file overriding the embedded defaults (or ENCORE_CONFIG)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="STEP")

    p = sub.add_parser("demo", help="generate embedded synthetic logs and run the whole night on them")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("night", help="one logical date end to end: ingest -> clean -> features -> (training when "
                       "there is no champion) -> score -> generate -> export")
    p.add_argument("--date", type=_date, required=True, help="logical date, YYYY-MM-DD")
    p.set_defaults(func=cmd_night)

    p = sub.add_parser("generate-logs", help="write seeded raw play logs to the landing folder")
    p.add_argument("--source", choices=["synthetic", "hetrec"])
    p.add_argument("--hetrec-dir", help="HetRec Last.fm-2K folder (for --source hetrec)")
    p.add_argument("--scale", type=float, default=0.01, help="hetrec: events per recorded play (1 = 69M events)")
    p.add_argument("--days", type=int, help="number of landing dates")
    p.add_argument("--end-date", type=_date, help="last landing date, YYYY-MM-DD")
    p.add_argument("--seed", type=int)
    p.add_argument("--events-per-day", type=int, help="synthetic: events per date")
    p.add_argument("--users", type=int, help="synthetic: number of users")
    p.add_argument("--items", type=int, help="synthetic: number of artists")
    p.add_argument("--fault-rate", type=float, help="share of events given a fault")
    p.add_argument("--bots", type=int, help="number of bot-like users")
    p.add_argument("--events-per-file", type=int)
    p.add_argument("--workers", type=int, help="processes writing files (default: cores, at most 4)")
    p.set_defaults(func=cmd_generate_logs)

    p = sub.add_parser("ingest", help="raw files -> bronze (each file once)")
    p.add_argument("--source", choices=["landing", "lastfm1k", "hetrec"], default="landing")
    p.add_argument("--path", help="file or folder for --source lastfm1k / hetrec")
    _add_date_args(p)
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("clean", help="bronze -> silver.plays + silver.plays_quarantine for dates")
    _add_date_args(p)
    p.set_defaults(func=cmd_clean)

    p = sub.add_parser("features", help="silver -> gold snapshot as of a date")
    _add_date_args(p)
    p.set_defaults(func=cmd_features)

    p = sub.add_parser("corpus", help="symbolic music -> gold.music_sequences (MidiTok REMI + BPE) with Spark")
    p.set_defaults(func=cmd_corpus)

    p = sub.add_parser("train-music", help="train the music Transformer with Ray Train, log and gate it in MLflow")
    p.set_defaults(func=cmd_train_music)

    p = sub.add_parser("sample", help="generate one sketch with the champion music model to a MIDI file")
    p.add_argument("--style", default="folk", help="chorale, folk or pop")
    p.add_argument("--key", default="D", help="tonic, e.g. D, F#, Bb (or 'D:min')")
    p.add_argument("--minor", action="store_true", help="minor instead of major")
    p.add_argument("--tempo", default="medium", choices=["slow", "medium", "fast"])
    p.add_argument("--bars", type=int, default=8)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("-o", "--output", default="sketch.mid")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("train-recommender", help="fit LightFM with a Ray Tune search, evaluate against baselines, "
                       "log to MLflow and gate the champion")
    p.add_argument("--date", type=_date, help="as_of_date of the gold snapshot (default: the newest)")
    p.add_argument("--trials", type=int, help="search trials (default recommender.search.trials; 0 = no search)")
    p.add_argument("--interactions-version", type=int, help="pin gold.interactions to this Delta version")
    p.add_argument("--items-version", type=int, help="pin gold.items to this Delta version")
    p.set_defaults(func=cmd_train_recommender)

    p = sub.add_parser("recommender-eval", help="train on a HetRec folder's rows in a temporary lakehouse and "
                       "write top-10 lists for every user")
    p.add_argument("--hetrec-dir", required=True, help="HetRec Last.fm-2K folder whose user_artists.dat holds training rows")
    p.add_argument("--out", required=True, help="Parquet file to write (user_id, item_id, rank)")
    p.add_argument("--trials", type=int, help="search trials (default recommender.search.trials)")
    p.add_argument("--keep-home", action="store_true", help="keep the temporary lakehouse and MLflow store")
    p.set_defaults(func=cmd_recommender_eval)

    p = sub.add_parser("ensure-models", help="train the recommender and/or the music model if it has no champion yet")
    p.add_argument("--date", type=_date, required=True, help="as-of date of the gold snapshot to train on")
    p.set_defaults(func=cmd_ensure_models)

    p = sub.add_parser("score", help="champion recommender's top-K for every user -> warehouse.recommendations")
    p.add_argument("--date", type=_date, required=True, help="run date (reads the gold snapshot as of it)")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("generate", help="inspiration packs from the champion music model -> warehouse.inspiration_packs")
    p.add_argument("--date", type=_date, required=True, help="run date (needs that date's recommendations)")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("export", help="publish the run date's warehouse rows to exports/run_date=D/ (manifest, "
                       "_SUCCESS, atomic)")
    p.add_argument("--date", type=_date, required=True, help="run date")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("validate", help="check a published export against its manifest and the warehouse")
    p.add_argument("--date", type=_date, required=True, help="run date")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("sql", help="run Spark SQL against the catalog and print a table")
    p.add_argument("query")
    p.add_argument("--limit", type=int, default=100)
    p.set_defaults(func=cmd_sql)

    p = sub.add_parser("tables", help="list the registered tables, their versions and descriptions")
    p.set_defaults(func=cmd_tables)

    p = sub.add_parser("schema", help="print a contract: play_event, catalog_entry, a table's columns, "
                       "export.recommendations, export.packs or export.manifest")
    p.add_argument("name")
    p.set_defaults(func=cmd_schema)

    p = sub.add_parser("setup", help="resolve Delta's jars and check that Spark with Delta starts")
    p.set_defaults(func=cmd_setup)
    return parser


def main(argv: list[str] | None = None) -> int:
    global _STEP
    args = build_parser().parse_args(argv)
    _STEP = f"encore-{args.command}"
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for noisy in ("py4j", "pyspark"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # py4j logs a reset socket at INFO on the root logger and then retries on a new connection.
    for handler in logging.getLogger().handlers:
        handler.addFilter(lambda record: record.getMessage() != "Exception while sending command.")
    try:
        cfg = load_config(args.profile, args.config)
        args.func(cfg, args)
    except EncoreError as exc:
        print(f"encore: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
