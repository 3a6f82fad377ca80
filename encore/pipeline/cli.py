"""The ``encore`` command line: one sub-command per registered step (encore.pipeline.steps), plus
the commands around them: demo, night, generate-logs, sample, recommender-eval, forget, sql,
tables, schema, config and setup.

Every step command is a thin call of the same function ``night`` and the Airflow DAGs run. Problems
the user can fix (``EncoreError``) print one ``encore: error: …`` line and exit with status 2.
"""
from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from encore.config import Config, load_config
from encore.errors import EncoreError, describe
from encore.locations import log_file
from encore.pipeline import ledger, steps
from encore.pipeline.report import NightReport, print_table
from encore.pipeline.steps import StepContext, parse_date

log = logging.getLogger("encore")


def cmd_generate_logs(cfg: Config, args) -> None:
    from encore.sources.generate_logs import generate_from_config
    options = ("source", "days", "seed", "events_per_day", "users", "items", "fault_rate", "bots",
               "events_per_file", "hetrec_dir", "scale", "workers")
    written = generate_from_config(cfg, end_date=args.end_date and args.end_date.isoformat(),
                                   **{name: getattr(args, name) for name in options})
    print_table(["date", "lines"], sorted(written.items()))
    print(f"landing: {cfg.path('landing')}")


def generate_logs_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", choices=["synthetic", "hetrec"])
    p.add_argument("--hetrec-dir", help="HetRec Last.fm-2K folder (for --source hetrec)")
    p.add_argument("--scale", type=float, default=0.01, help="hetrec: events per recorded play (1 = 69M events)")
    p.add_argument("--days", type=int, help="number of landing dates")
    p.add_argument("--end-date", type=parse_date, help="last landing date, YYYY-MM-DD")
    p.add_argument("--seed", type=int)
    p.add_argument("--events-per-day", type=int, help="synthetic: events per date")
    p.add_argument("--users", type=int, help="synthetic: number of users")
    p.add_argument("--items", type=int, help="synthetic: number of artists")
    p.add_argument("--fault-rate", type=float, help="share of events given a fault")
    p.add_argument("--bots", type=int, help="number of bot-like users")
    p.add_argument("--events-per-file", type=int)
    p.add_argument("--workers", type=int, help="processes writing files (default: cores, at most 4)")


def cmd_demo(cfg: Config, args) -> None:
    """Generate the embedded synthetic logs, backfill the earlier dates, then run the night of the last one."""
    from encore.pipeline.night import run_night
    from encore.sources.generate_logs import generate_from_config
    from jobs.ingest import ingest_landing
    started = time.monotonic()
    written = generate_from_config(cfg)
    dates = sorted(dt.date.fromisoformat(d) for d in written)
    last = dates[-1]
    report = NightReport(last)
    report.steps.append(("generate-logs", f"{sum(written.values())} lines over {len(written)} days",
                         time.monotonic() - started))
    lake = steps.lakehouse(cfg)
    earlier = StepContext(cfg, None, report, lake=lake)
    with ledger.recording(cfg, steps.get("ingest"), last) as record:   # it ingests the last date's files too
        record.result = report.step("ingest", lambda: ", ".join(f"{k} +{v}"
                                                                for k, v in ingest_landing(lake, dates).items()))
    for d in dates[:-1]:
        earlier.day = d
        report.step(f"clean {d}", lambda: steps.clean_run(earlier))
    run_night(lake, last, ingest=False, report=report)
    report.print()
    print(f"\nThe night's report: {Path(cfg.path('reports')) / f'run_date={last}' / 'report.html'}")
    print(f"Tables under {lake.root}, export under {cfg.path('exports')}/run_date={last}. Try:\n"
          f"  .venv/bin/encore sql \"SELECT rank, item_name, strategy, reason FROM warehouse.recommendations "
          f"WHERE run_date = DATE'{last}' AND user_id = (SELECT min(user_id) FROM warehouse.recommendations) "
          f"ORDER BY rank LIMIT 10\"")


def cmd_night(cfg: Config, args) -> None:
    from encore.pipeline.night import run_night
    run_night(steps.lakehouse(cfg), args.date).print()


def night_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--date", type=parse_date, required=True, help="logical date, YYYY-MM-DD")


def cmd_sql(cfg: Config, args) -> None:
    """Read-only SQL over the lakehouse tables (encore/sql.py): DuckDB by default, Spark on request."""
    from encore import sql
    limit = args.limit if args.limit is not None else (100 if args.format == "table" else None)
    if args.allow_writes and args.engine != "spark":
        raise EncoreError("sql: --allow-writes needs --engine spark (DuckDB reads the tables and cannot change them)")
    if args.engine == "duckdb":
        result, cut = sql.run_duckdb(cfg, args.query, limit)
    else:
        from encore.lakehouse import open_lakehouse
        result, cut = sql.run_spark(open_lakehouse(cfg, f"encore-{steps.current_command}", catalog=True), args.query,
                                    limit, allow_writes=args.allow_writes)
    if args.format == "table" and not args.output:
        print_table(result.column_names, [tuple(r.values()) for r in result.to_pylist()])
        if cut:
            print(f"(first {limit} rows; raise --limit for more)")
        return
    sql.write_result(result, "csv" if args.format == "table" else args.format, args.output)
    if cut:
        print(f"encore: sql: kept the first {limit} rows (--limit)", file=sys.stderr)


def cmd_sql_server(cfg: Config, args) -> None:
    """The SQL endpoint for BI tools (encore/sql_server.py): the Spark Thrift Server, read-only."""
    from encore.sql_server import serve
    serve(cfg, args.host or cfg.sql_server.host, args.port or cfg.sql_server.port, allow_writes=args.allow_writes)


def sql_server_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", type=int, help="port to listen on (default sql_server.port: 10000)")
    p.add_argument("--host", help="address to bind (default sql_server.host: 127.0.0.1; the endpoint has no "
                   "authentication)")
    p.add_argument("--allow-writes", action="store_true",
                   help="let statements that change tables through; each is logged to <home>/logs/sql-writes.log")


def cmd_forget(cfg: Config, args) -> None:
    """Erase listeners on request (jobs/forget.py, docs/privacy.md)."""
    from jobs.forget import forget, read_ids
    ids = read_ids(args.user, args.users_file)
    r = forget(steps.lakehouse(cfg), ids, dry_run=args.dry_run)
    if not r.found:
        raise EncoreError(f"none of the {len(ids)} listener ids is in any table ({', '.join(r.tables)}): nothing was "
                          "changed; check the ids against warehouse.recommendations or silver.plays")
    verb = "would remove" if r.dry_run else "removed"
    totals = {name: sum(removed.get(name, 0) for removed in r.found.values()) for name in r.tables}
    print_table(["table", f"rows {verb}"], [(name, rows) for name, rows in totals.items()])
    print(f"{len(r.found)} of {len(ids)} listeners found"
          + (f"; not in any table (nothing to remove): {', '.join(r.unknown)}" if r.unknown else ""))
    if r.dry_run:
        print(f"published exports that hold them: {', '.join(r.exports_holding) or 'none'}")
        print("\ndry run: nothing was changed")
        return
    print(f"exports published again without them: {', '.join(r.exports_republished) or 'none'}")
    if r.exports_withdrawn:
        print(f"exports withdrawn (the warehouse no longer has the date): {', '.join(r.exports_withdrawn)}")
    print(f"audit: {len(r.found)} rows in ops.erasure_log (salted hashes, never the ids); {r.seconds:.0f} s")
    print("Replaced files still hold the rows until `encore maintain` vacuums them (maintain.vacuum_retention_hours) "
          "and older Delta log entries may name them until log retention (30 days) passes; models trained before "
          "now keep the listeners' factors until their next training (docs/privacy.md).")


def forget_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--user", action="append", metavar="ID", help="a listener id to erase (repeatable)")
    p.add_argument("--users-file", metavar="FILE", help="a text file of listener ids, one per line (# comments)")
    p.add_argument("--dry-run", action="store_true", help="count what would be removed; change nothing")


def cmd_tables(cfg: Config, args) -> None:
    from schemas.tables import TABLES
    from encore.lakehouse import open_lakehouse
    lake = open_lakehouse(cfg)
    rows = []
    for name, table in TABLES.items():
        version = lake.version(name) if lake.exists(name) else "-"
        rows.append((name, version, ",".join(table.partition_by) or "-", table.doc))
    print_table(["table", "version", "partitioned by", "description"], rows)
    print(f"lakehouse: {lake.root}")


def cmd_schema(cfg: Config, args) -> None:
    """Print a contract's fields: a raw record (play_event, catalog_entry) or a table."""
    from schemas.events import field_docs
    from schemas.tables import TABLES
    if args.name in TABLES:
        table = TABLES[args.name]
        print(f"{table.name}: {table.doc}")
        print_table(["column", "type", "description"],
                     [(f.name + ("" if f.nullable else " (not null)"), f.dataType.simpleString(), f.metadata.get("comment", ""))
                      for f in table.schema], max_width=200)
        for name, expr in table.constraints.items():
            print(f"CHECK {name}: {expr}")
    elif args.name in ("play_event", "catalog_entry"):
        print_table(["field", "JSON type", "description"], field_docs(args.name), max_width=200)
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
        print_table(["column", "type", "description"],
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
    from encore.spark import build_class_archive, class_archive
    archive = class_archive(cfg) or build_class_archive(cfg)
    print(f"Class archive for faster JVM starts: {archive}" if archive else
          "No class archive (see the log): Spark starts without it, a few seconds slower")


def cmd_sample(cfg: Config, args) -> None:
    from encore import music
    from ray_jobs.music_bundle import load_generator
    from encore.tracking import CHAMPION, require_champion
    name = cfg.music.model_name
    require_champion(cfg, name, "run `encore train-music` first")
    key = music.normalise_key(args.key if ":" in args.key else f"{args.key}:{'min' if args.minor else 'maj'}")
    if key is None:
        raise EncoreError(f"--key {args.key} is not a key: use a note name such as D, F# or Bb (add --minor for minor)")
    if args.style not in music.STYLES:
        raise EncoreError(f"--style {args.style} is not one of {', '.join(music.STYLES)}")
    generator = load_generator(f"models:/{name}@{CHAMPION}")
    sketch = generator.generate([(args.style, key, args.tempo)], [args.seed], bars=args.bars,
                                temperature=args.temperature, top_p=args.top_p,
                                in_key=cfg.music.generate.in_key, tonic_frame=cfg.music.generate.tonic_frame)[0]
    if sketch.midi is None:
        raise EncoreError(f"the sample did not decode to MIDI ({sketch.checks.get('error')}): try another --seed")
    Path(args.output).write_bytes(sketch.midi)
    print(f"wrote {args.output}: {args.style}, {key}, {args.tempo} tempo, {args.bars} bars, seed {args.seed}, "
          f"{len(sketch.tokens)} tokens")
    if args.audio:
        from encore.audio import render_audio, soundfont
        font = soundfont(cfg.music.audio.soundfont)
        seconds = render_audio(sketch.midi, font, Path(args.audio))
        print(f"wrote {args.audio}: {seconds:.1f} s of audio rendered with {font}")


def cmd_recommender_eval(cfg: Config, args) -> None:
    from encore.pipeline.recommender_eval import recommender_eval
    frame = recommender_eval(cfg, args.hetrec_dir, args.out, trials=args.trials, keep_home=args.keep_home)
    print(f"\nwrote {args.out}: {frame['user_id'].nunique()} users x top-10 (columns user_id, item_id, rank)")


def cmd_config(cfg: Config, args) -> None:
    """Every resolved setting, its value and where it came from."""
    from encore.config import leaves
    print(f"profile: {cfg.profile}")
    print_table(["key", "value", "from"], [(k, v, cfg.origins.get(k, "default")) for k, v in leaves(cfg.settings).items()],
                max_width=80)


def config_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["show"], help="show: every resolved setting and where its value came from "
                   "(default, profile, file, environment)")


def sample_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--style", default="folk", help="chorale, folk or pop")
    p.add_argument("--key", default="D", help="tonic, e.g. D, F#, Bb (or 'D:min')")
    p.add_argument("--minor", action="store_true", help="minor instead of major")
    p.add_argument("--tempo", default="medium", choices=["slow", "medium", "fast"])
    p.add_argument("--bars", type=int, default=8)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("-o", "--output", default="sketch.mid")
    p.add_argument("--audio", metavar="FILE", help="also render the sketch to FILE (.wav, .flac or .ogg) with a "
                   "General MIDI SoundFont (music.audio.soundfont, else a system one; FluidSynth)")


def recommender_eval_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--hetrec-dir", required=True, help="HetRec Last.fm-2K folder whose user_artists.dat holds training rows")
    p.add_argument("--out", required=True, help="Parquet file to write (user_id, item_id, rank)")
    p.add_argument("--trials", type=int, help="search trials (default recommender.search.trials)")
    p.add_argument("--keep-home", action="store_true", help="keep the temporary lakehouse and MLflow store")


def sql_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("query", help="one SQL statement over the tables by name, e.g. warehouse.recommendations")
    p.add_argument("--engine", choices=["duckdb", "spark"], default="duckdb",
                   help="duckdb (default: no JVM, about a second) or spark (Spark SQL with Delta, for large tables)")
    p.add_argument("--format", choices=["table", "csv", "json", "parquet"], default="table",
                   help="table (printed), csv, json (one object per line) or parquet (needs --output)")
    p.add_argument("--output", "-o", help="write the result to this file instead of printing it")
    p.add_argument("--limit", type=int, help="at most this many rows (default: 100 for the printed table, all otherwise)")
    p.add_argument("--allow-writes", action="store_true",
                   help="run a statement that changes tables (Spark engine only); every use is logged")


def schema_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name")


@dataclass(frozen=True)
class Command:
    """A command that is not a pipeline step."""
    name: str
    help: str
    run: Callable[[Config, argparse.Namespace], None]
    arguments: Callable[[argparse.ArgumentParser], None] | None = None


BEFORE_STEPS = (
    Command("demo", "generate embedded synthetic logs and run the whole night on them", cmd_demo),
    Command("night", "one logical date end to end: every nightly step in order ("
            + " -> ".join(s.name for s in steps.of_dag(steps.NIGHTLY)) + ")", cmd_night, night_arguments),
    Command("generate-logs", "write seeded raw play logs to the landing folder", cmd_generate_logs,
            generate_logs_arguments),
)
AFTER_STEPS = (
    Command("sample", "generate one sketch with the champion music model to a MIDI file", cmd_sample,
            sample_arguments),
    Command("recommender-eval", "train on a HetRec folder's rows in a temporary lakehouse and write top-10 lists "
            "for every user", cmd_recommender_eval, recommender_eval_arguments),
    Command("forget", "erase listeners on request: their rows in every table and published export, an audit row in "
            "ops.erasure_log", cmd_forget, forget_arguments),
    Command("sql", "read-only SQL over the tables (DuckDB; --engine spark for Spark SQL)", cmd_sql, sql_arguments),
    Command("sql-server", "a JDBC/ODBC endpoint for BI tools (Spark Thrift Server, HiveServer2 protocol), read-only",
            cmd_sql_server, sql_server_arguments),
    Command("tables", "list the registered tables, their versions and descriptions", cmd_tables),
    Command("schema", "print a contract: play_event, catalog_entry, a table's columns, export.recommendations, "
            "export.packs or export.manifest", cmd_schema, schema_arguments),
    Command("config", "show the resolved settings and where each value came from", cmd_config, config_arguments),
    Command("setup", "resolve Delta's jars and check that Spark with Delta starts", cmd_setup),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="encore", description="Encore: nightly batch pipeline from music play logs to recommendations.",
        epilog="Settings: encore/defaults.yaml, --config FILE, ENCORE_HOME, ENCORE__SECTION__KEY=value. "
               "Run `encore STEP --help` for a step's options.")
    parser.add_argument("--profile", help="config profile (default: local, or ENCORE_PROFILE)")
    parser.add_argument("--config", help="a YAML file overriding the embedded defaults (or ENCORE_CONFIG)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--debug", action="store_true",
                        help="print the full traceback of a failure (it always goes to <home>/logs/errors.log)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="STEP")
    for command in BEFORE_STEPS:
        p = sub.add_parser(command.name, help=command.help)
        if command.arguments:
            command.arguments(p)
        p.set_defaults(func=command.run)
    for step in steps.STEPS:
        p = sub.add_parser(step.name, help=step.help)
        steps.add_arguments(step, p)
        p.set_defaults(func=lambda cfg, args, step=step: steps.run_command(step, cfg, args))
    for command in AFTER_STEPS:
        p = sub.add_parser(command.name, help=command.help)
        if command.arguments:
            command.arguments(p)
        p.set_defaults(func=command.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    steps.current_command = args.command
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for noisy in ("py4j", "pyspark"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # py4j logs a reset socket at INFO on the root logger and then retries on a new connection.
    for handler in logging.getLogger().handlers:
        handler.addFilter(lambda record: record.getMessage() != "Exception while sending command.")
    cfg = None
    try:
        cfg = load_config(args.profile, args.config)
        args.func(cfg, args)
    except EncoreError as exc:
        print(f"encore: error: {_named(args, str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"encore: error: {_what(args)}: interrupted; a rerun replaces whatever it had written", file=sys.stderr)
        return 130
    except Exception as exc:   # Spark, Delta, MLflow, Ray...: one line here, the traceback to the log
        saved = _save_traceback(cfg, sys.argv[1:] if argv is None else argv)
        if args.debug:
            traceback.print_exc()
        where = f"; traceback in {saved}" if saved else ""
        print(f"encore: error: {_what(args)}: {describe(exc)}{where} (or rerun with --debug)", file=sys.stderr)
        return 1
    return 0


def _named(args, message: str) -> str:
    """``message`` after the command and date it is about, unless it already starts with them."""
    what = _what(args)
    return message if message.startswith((f"{what}:", f"{args.command}:", f"{args.command} ")) else f"{what}: {message}"


def _what(args) -> str:
    """The step and its date (or range), as the error line names them."""
    date = getattr(args, "date", None)
    start, end = getattr(args, "start", None), getattr(args, "end", None)
    if date:
        return f"{args.command} {date}"
    if start or end:
        return f"{args.command} {start or '…'}..{end or '…'}"
    return args.command


def _save_traceback(cfg, words: list[str]) -> Path | None:
    """Append the running exception's traceback to <home>/logs/errors.log; None if it cannot be written."""
    if cfg is None:
        return None
    try:
        path = log_file(cfg, "errors.log")
        if path is None:
            return None
        stamp = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        with open(path, "a", encoding="utf-8") as out:
            out.write(f"--- {stamp} encore {' '.join(words)}\n")
            out.write(traceback.format_exc())
        return path
    except OSError:
        return None


if __name__ == "__main__":
    sys.exit(main())
