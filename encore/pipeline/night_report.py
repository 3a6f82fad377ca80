"""The night's report: ``encore report --date D`` writes ``<paths.reports>/run_date=D/report.html``,
one self-contained page (images inline, no script, no network), with ``report.json`` beside it
holding every figure's numbers, and logs both to a ``report D`` run in the nightly MLflow experiment.

Everything is drawn from what lasts: the step ledger (encore/pipeline/ledger.py), the lakehouse
tables (read through DuckDB over delta-rs Arrow datasets: no JVM, aggregated as they stream) and
the MLflow registry. A section whose inputs are missing (a step that did not run, a model with no
champion, an MLflow run that is gone) says so in words and the rest is drawn; an export removed by
retention does not matter, since nothing here reads exports.
"""
from __future__ import annotations

import base64
import datetime as dt
import html
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from encore import figures
from encore.config import Config
from encore.errors import EncoreError
from encore.pipeline import ledger
from schemas.table_names import (GOLD_ITEMS, GOLD_USER_PROFILES, SILVER_PLAYS, SILVER_PLAYS_QUARANTINE,
                                 WAREHOUSE_RECOMMENDATIONS, WAREHOUSE_SKETCHES)

log = logging.getLogger(__name__)

WINDOW_DAYS = 30          # data quality and strategy mix over this many dates, ending at the report's
OVERLAP_USERS = 300       # listeners sampled for list overlap (every pair of them)
SKETCHES_SHOWN = 6        # piano rolls in the inspiration section, styles taken in turn
HEAD_SHARE = 0.2          # the "head" of the catalogue: its most listened-to fifth; the rest is the long tail
TOP_ARTISTS = 10


@dataclass
class Section:
    key: str
    title: str
    available: bool = True
    note: str = ""                                   # why it is not available, or what to know
    blocks: list[tuple[str, object]] = field(default_factory=list)   # ("figure", (title, png)) | ("table", (cols, rows)) | ("text", str)
    data: dict = field(default_factory=dict)

    def figure(self, title: str, png: bytes) -> None:
        self.blocks.append(("figure", (title, png)))

    def table(self, columns: list[str], rows: list[tuple]) -> None:
        self.blocks.append(("table", (columns, rows)))

    def text(self, words: str) -> None:
        self.blocks.append(("text", words))


def _missing(key: str, title: str, why: str) -> Section:
    return Section(key, title, available=False, note=why)


@dataclass
class ReportResult:
    run_date: dt.date
    html_path: Path
    json_path: Path
    sections: list[Section]
    mlflow_run_id: str | None
    seconds: float


class Tables:
    """The lakehouse tables as DuckDB views (current versions); a table that does not exist yet is None."""

    def __init__(self, config: Config, names: tuple[str, ...]):
        from encore.sql import duckdb_connection
        import duckdb
        self.con = duckdb.connect(":memory:")
        self.present = set()
        for name in names:
            try:
                duckdb_connection(config, [name], into=self.con)
                self.present.add(name)
            except EncoreError as exc:
                log.info("report: %s", exc)

    def has(self, *names: str) -> bool:
        return all(n in self.present for n in names)

    def rows(self, query: str, *params) -> list[tuple]:
        return self.con.execute(query, list(params)).fetchall()

    def close(self) -> None:
        self.con.close()


# --- sections ----------------------------------------------------------------------------------------

def night_section(records: list[dict], expected: tuple[str, ...] = ()) -> Section:
    """``expected``: the nightly steps in order (from the step registry); those without a record show as
    "not run"."""
    title = "The night"
    if not records:
        return _missing("night", title, "not run: no step recorded a run for this date (the step ledger is empty)")
    s = Section("night", title)
    s.figure("Step durations", figures.hbars([r["step"] for r in records], [r["seconds"] for r in records],
                                              "Seconds per step", "seconds",
                                              highlight=next((r["step"] for r in records if r["outcome"] != "succeeded"),
                                                             None)))
    rows = []
    for r in records:
        written = "; ".join(f"{table} v{c['version']} {(c['operation'] or '').lower()}"
                            + (f" {c['rows']:,} rows" if c["rows"] is not None else "")
                            for table, commits in sorted(r.get("writes", {}).items()) for c in commits)
        read = ", ".join(f"{t} v{v}" for t, v in sorted(r.get("reads", {}).items()) if v is not None)
        status = r["outcome"] if r["outcome"] == "succeeded" else f"{r['outcome']}: {r.get('error') or ''}"
        started = r.get("started_at", "")[11:19]   # HH:MM:SS of the ISO timestamp (UTC)
        rows.append((r["step"], status, f"{r['seconds']:.1f}", started, r.get("result") or "-",
                     read or "-", written or "-"))
    recorded = {r["step"] for r in records}
    rows += [(name, "not run", "-", "-", "-", "-", "-") for name in expected if name not in recorded]
    s.table(["step", "outcome", "seconds", "started (UTC)", "result", "Delta versions read", "Delta versions written"],
            rows)
    s.data = {"steps": records}
    return s


def _dates(day: dt.date) -> list[dt.date]:
    return [day - dt.timedelta(days=WINDOW_DAYS - 1 - i) for i in range(WINDOW_DAYS)]


def quality_section(t: Tables, day: dt.date) -> Section:
    title = f"Data quality, {WINDOW_DAYS} dates to {day}"
    if not t.has(SILVER_PLAYS):
        return _missing("quality", title, "not run: silver.plays does not exist yet (`encore clean`)")
    dates = _dates(day)
    start = dates[0]
    labels = [d.isoformat() for d in dates]
    kept = dict(t.rows("SELECT date, count(*) FROM silver.plays WHERE date BETWEEN ? AND ? GROUP BY date", start, day))
    reasons: dict[str, dict] = {}
    if t.has(SILVER_PLAYS_QUARANTINE):
        for d, reason, n in t.rows("SELECT date, reason, count(*) FROM silver.plays_quarantine WHERE date BETWEEN ? AND ? "
                                   "GROUP BY date, reason", start, day):
            reasons.setdefault(reason, {})[d] = n
    quarantined = {d: sum(r.get(d, 0) for r in reasons.values()) for d in dates}
    s = Section("quality", title)
    s.figure("Plays kept and quarantined per date",
             figures.stacked_bars(labels, {"kept": [kept.get(d, 0) for d in dates],
                                           "quarantined": [quarantined[d] for d in dates]},
                                  "Plays kept and quarantined per date", "plays"))
    ordered = sorted(reasons, key=lambda r: -sum(reasons[r].values()))
    if ordered:
        s.figure("Quarantine reasons per date",
                 figures.stacked_bars(labels, {r: [reasons[r].get(d, 0) for d in dates] for r in ordered},
                                      "Quarantine reasons per date", "records"))
    else:
        s.text("No record was quarantined in these dates.")
    data = {"dates": labels, "kept": [kept.get(d, 0) for d in dates], "quarantined": [quarantined[d] for d in dates],
            "reasons": {r: [reasons[r].get(d, 0) for d in dates] for r in ordered}}
    if t.has(WAREHOUSE_RECOMMENDATIONS, GOLD_USER_PROFILES):
        covered = {d: (users, with_recs) for d, users, with_recs in t.rows(
            "SELECT p.as_of_date, count(*), count(r.user_id) FROM "
            "(SELECT as_of_date, user_id FROM gold.user_profiles WHERE as_of_date BETWEEN ? AND ?) p LEFT JOIN "
            "(SELECT DISTINCT run_date, user_id FROM warehouse.recommendations WHERE run_date BETWEEN ? AND ?) r "
            "ON p.as_of_date = r.run_date AND p.user_id = r.user_id GROUP BY p.as_of_date", start, day, start, day)}
        share = [round(covered[d][1] / covered[d][0], 4) if d in covered and covered[d][0] else math.nan for d in dates]
        s.figure("Share of active listeners with recommendations",
                 figures.lines(labels, {"share": share}, "Share of active listeners with recommendations",
                               "share", ylim=(0, 1.05)))
        s.text("Active listeners: those in gold.user_profiles for the date (they played in its feature window); "
               "dates whose snapshot retention removed have no point.")
        data["listeners_with_recommendations"] = share
    if t.has(WAREHOUSE_RECOMMENDATIONS):
        mix: dict[str, dict] = {}
        for d, strategy, n in t.rows("SELECT run_date, strategy, count(*) FROM warehouse.recommendations "
                                     "WHERE run_date BETWEEN ? AND ? GROUP BY run_date, strategy", start, day):
            mix.setdefault(strategy, {})[d] = n
        totals = {d: sum(m.get(d, 0) for m in mix.values()) for d in dates}
        shares = {k: [round(v.get(d, 0) / totals[d], 4) if totals[d] else 0.0 for d in dates] for k, v in sorted(mix.items())}
        s.figure("Strategy mix of the recommendations",
                 figures.stacked_bars(labels, shares, "Strategy mix of the recommendations", "share of rows"))
        data["strategy_mix"] = shares
    s.data = data
    return s


def recommendations_section(t: Tables, day: dt.date) -> Section:
    title = f"Recommendations of {day}"
    if not t.has(WAREHOUSE_RECOMMENDATIONS):
        return _missing("recommendations", title, "not run: warehouse.recommendations does not exist yet (`encore score`)")
    [(rows, users, items)] = t.rows("SELECT count(*), count(DISTINCT user_id), count(DISTINCT item_id) FROM "
                                    "warehouse.recommendations WHERE run_date = ?", day)
    if not rows:
        return _missing("recommendations", title, f"not run: no recommendations for {day} (`encore score --date {day}`)")
    s = Section("recommendations", title)
    data: dict = {"rows": rows, "listeners": users, "distinct_artists": items}
    facts = [("recommendation rows", f"{rows:,}"), ("listeners with a list", f"{users:,}"),
             ("distinct artists recommended", f"{items:,}")]
    if t.has(GOLD_ITEMS):
        [(catalogue,)] = t.rows("SELECT count(*) FROM gold.items WHERE as_of_date = ?", day)
        head = max(1, int(catalogue * HEAD_SHARE))
        [(tail,)] = t.rows("SELECT count(*) FILTER (WHERE i.popularity_rank IS NULL OR i.popularity_rank > ?) FROM "
                           "(SELECT item_id FROM warehouse.recommendations WHERE run_date = ?) r LEFT JOIN "
                           "(SELECT item_id, popularity_rank FROM gold.items WHERE as_of_date = ?) i USING (item_id)",
                           head, day, day)
        coverage = items / catalogue if catalogue else math.nan
        facts += [("catalogue coverage", f"{coverage:.1%} of {catalogue:,} artists played in the window"),
                  ("long-tail share", f"{tail / rows:.1%} of recommended slots are outside the {head:,} most "
                                      f"listened-to artists (the top {HEAD_SHARE:.0%})")]
        data.update(catalogue=catalogue, coverage=coverage, head_artists=head, long_tail_share=tail / rows)
    overlap = _list_overlap(t, day)
    if overlap is not None:
        facts.append(("list overlap", f"mean Jaccard {overlap['mean_jaccard']:.3f} between the lists of "
                                      f"{overlap['pairs']:,} pairs of listeners"))
        data["overlap"] = overlap
    s.table(["measure", "value"], facts)
    top = t.rows("SELECT item_id, max(item_name), count(*) n FROM warehouse.recommendations WHERE run_date = ? "
                 "GROUP BY item_id ORDER BY n DESC, item_id LIMIT ?", day, TOP_ARTISTS)
    s.figure("Most recommended artists", figures.hbars([_label(name, item) for item, name, _ in top],
                                                       [n for _, _, n in top], "Most recommended artists",
                                                       "listeners recommended to"))
    data["top_recommended"] = [{"item_id": i, "name": n, "listeners": c} for i, n, c in top]
    if t.has(GOLD_ITEMS):
        played = t.rows("SELECT item_id, name, plays FROM gold.items WHERE as_of_date = ? ORDER BY plays DESC, item_id "
                        "LIMIT ?", day, TOP_ARTISTS)
        if played:
            s.figure("Most played artists", figures.hbars([_label(name, item) for item, name, _ in played],
                                                          [n for _, _, n in played], "Most played artists (feature window)",
                                                          "plays"))
            data["top_played"] = [{"item_id": i, "name": n, "plays": c} for i, n, c in played]
    s.data = data
    return s


def _label(name, item_id: str) -> str:
    text = str(name or item_id)
    return text if len(text) <= 28 else text[:27] + "…"


def _list_overlap(t: Tables, day: dt.date) -> dict | None:
    """Mean Jaccard similarity of the item sets of every pair among a fixed sample of listeners."""
    rows = t.rows("SELECT user_id, list(item_id) FROM warehouse.recommendations WHERE run_date = ? AND user_id IN "
                  "(SELECT DISTINCT user_id FROM warehouse.recommendations WHERE run_date = ? ORDER BY md5(user_id) "
                  "LIMIT ?) GROUP BY user_id", day, day, OVERLAP_USERS)
    lists = [set(items) for _, items in sorted(rows)]
    if len(lists) < 2:
        return None
    total, pairs = 0.0, 0
    for i in range(len(lists)):
        for j in range(i + 1, len(lists)):
            union = len(lists[i] | lists[j])
            total += len(lists[i] & lists[j]) / union if union else 0.0
            pairs += 1
    return {"listeners_sampled": len(lists), "pairs": pairs, "mean_jaccard": round(total / pairs, 4)}


def models_section(config: Config) -> Section:
    s = Section("models", "Models")
    try:
        from encore import tracking
        tracking.client(config)
    except Exception as exc:
        return _missing("models", "Models", f"not available: the MLflow store cannot be opened ({_line(exc)})")
    rows, data = [], {}
    for role, model_name, artifact in (("recommender", config.recommender.model_name, "comparison.json"),
                                       ("music model", config.music.model_name, "quality_report.json")):
        try:
            champion = tracking.champion(config, model_name)
        except Exception as exc:
            champion, why = None, f"not available ({_line(exc)})"
        else:
            why = "no champion yet (`encore ensure-models`)"
        if champion is None:
            rows.append((role, model_name, "-", "-", why))
            continue
        rows.append((role, model_name, f"v{champion.version}", champion.run_id, "champion"))
        data[role] = {"model": model_name, "version": champion.version, "run_id": champion.run_id}
        table = _run_table(champion.run_id, artifact)
        if table is None:
            s.text(f"The {role}'s {artifact} is not available in MLflow run {champion.run_id}.")
            continue
        if role == "recommender":
            _recommender_chart(s, table, data[role])
        else:
            _music_chart(s, table, data[role])
    s.blocks.insert(0, ("table", (["role", "registered model", "champion", "MLflow run", "state"], rows)))
    s.data = data
    return s


def _run_table(run_id: str, artifact: str):
    from mlflow import MlflowClient
    try:
        client = MlflowClient()
        experiment_id = client.get_run(run_id).info.experiment_id   # load_table looks in one experiment only
        return client.load_table(experiment_id, artifact, run_ids=[run_id]).drop(columns=["run_id"], errors="ignore")
    except Exception as exc:   # the run or its artifact is gone
        log.info("report: %s of run %s not available (%s)", artifact, run_id, _line(exc))
        return None


def _recommender_chart(s: Section, table, data: dict) -> None:
    metrics = [c for c in table.columns if c not in ("model", "seconds", "run_id")]
    chosen = [m for m in ("ndcg_at_10", "recall_at_10", "map_at_10") if m in metrics] or metrics[:3]
    models = list(table["model"])
    s.figure("The recommender against its baselines", figures.grouped_bars(
        chosen, {m: [float(table.loc[table["model"] == m, c].iloc[0]) for c in chosen] for m in models},
        "Recommender vs baselines on the held-out test split", "score"))
    data["comparison"] = table[["model", *chosen]].to_dict("records")


def _music_chart(s: Section, table, data: dict) -> None:
    """Each measure's generated mean against the held-out real pieces', per style; the numbers below."""
    records = table.to_dict("records")
    s.figure("Music quality: generated vs held-out real pieces", figures.quality_gaps(records))
    s.table(["style", "measure", "generated", "held-out real", "real SD"],
            [(r["style"], r["metric"], _fmt(r["generated"]), _fmt(r["real"]), _fmt(r["real_std"])) for r in records])
    data["quality"] = records


def _fmt(value) -> str:
    return "-" if value is None or value != value else f"{float(value):.3f}"


def inspiration_section(t: Tables, day: dt.date) -> Section:
    title = f"Inspiration of {day}"
    if not t.has(WAREHOUSE_SKETCHES):
        return _missing("inspiration", title, "not run: warehouse.sketches does not exist yet (`encore generate`)")
    rows = t.rows("SELECT sketch_id, style, key, tempo_bucket, tempo_bpm, chords, midi FROM warehouse.sketches "
                  "WHERE run_date = ? ORDER BY style, sketch_id", day)
    if not rows:
        return _missing("inspiration", title, f"not run: no sketches for {day} (`encore generate --date {day}`)")
    by_style: dict[str, list] = {}
    for row in rows:
        by_style.setdefault(row[1], []).append(row)
    chosen = []
    while len(chosen) < SKETCHES_SHOWN and any(by_style.values()):
        for style in sorted(by_style):   # the styles in turn, so every style shows
            if by_style[style] and len(chosen) < SKETCHES_SHOWN:
                chosen.append(by_style[style].pop(0))
    s = Section("inspiration", title)
    s.text(f"{len(rows)} sketches in the night's pools; {len(chosen)} shown, the styles in turn.")
    for sketch_id, style, key, bucket, bpm, chords, midi in chosen:
        caption = f"{style} · {key} · {bpm:.0f} bpm ({bucket}) · {chords}"
        s.figure(caption, figures.piano_roll(bytes(midi), f"{style}, {key}, {sketch_id}"))
    s.data = {"sketches": len(rows), "shown": [{"sketch_id": r[0], "style": r[1], "key": r[2], "tempo_bucket": r[3],
                                                 "tempo_bpm": r[4], "chords": r[5]} for r in chosen]}
    return s


def _line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


# --- the page --------------------------------------------------------------------------------------

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem auto;max-width:70rem;color:#222;padding:0 1rem}
h1{font-size:1.6rem} h2{font-size:1.25rem;border-bottom:1px solid #ddd;padding-bottom:.3rem;margin-top:2.2rem}
table{border-collapse:collapse;font-size:.85rem;margin:.8rem 0} td,th{border:1px solid #ddd;padding:.25rem .5rem;
text-align:left;vertical-align:top} th{background:#f4f4f4} section{display:flex;flex-wrap:wrap;column-gap:1.5rem}
.wide{flex-basis:100%;overflow-x:auto} td{max-width:26rem;overflow-wrap:anywhere} td:nth-child(-n+4){white-space:nowrap} figure{flex:0 0 calc(50% - .75rem);margin:.5rem 0} figcaption{font-size:.8rem;color:#555}
img{width:100%;height:auto}
.missing{color:#8a4b00;background:#fff6e5;padding:.5rem .8rem;border-left:3px solid #e2a33b}
nav a{margin-right:1rem} .meta{color:#666;font-size:.85rem}
"""


def render_html(day: dt.date, sections: list[Section], generated_at: str, config: Config) -> str:
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Encore night of {day}</title>",
             f"<style>{CSS}</style></head><body>",
             f"<h1>Encore night of {day}</h1>",
             f"<p class='meta'>profile {html.escape(config.profile)} · drawn {generated_at} UTC · report.json beside "
             "this file holds every figure's numbers</p>",
             "<nav>" + "".join(f"<a href='#{s.key}'>{html.escape(s.title)}</a>" for s in sections) + "</nav>"]
    for s in sections:
        parts.append(f"<section id='{s.key}'><h2 class='wide'>{html.escape(s.title)}</h2>")
        if not s.available:
            parts.append(f"<p class='missing wide'>{html.escape(s.note)}</p></section>")
            continue
        for kind, block in s.blocks:
            if kind == "figure":
                caption, png = block
                data = base64.b64encode(png).decode()
                parts.append(f"<figure><img alt='{html.escape(caption, quote=True)}' src='data:image/png;base64,{data}'>"
                             f"<figcaption>{html.escape(caption)}</figcaption></figure>")
            elif kind == "table":
                columns, rows = block
                parts.append("<div class='wide'><table><tr>"
                             + "".join(f"<th>{html.escape(str(c))}</th>" for c in columns) + "</tr>"
                             + "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>"
                                       for row in rows) + "</table></div>")
            else:
                parts.append(f"<p class='wide'>{html.escape(str(block))}</p>")
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _json_safe(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    if hasattr(value, "item"):   # numpy scalars
        return value.item()
    return value


def build_report(config: Config, day: dt.date, *, steps: tuple[str, ...] = (), to_mlflow: bool = True) -> ReportResult:
    """Draw the report of ``day``; ``steps`` are the nightly steps a night runs, in order (the step
    registry's, passed in by the report step). Raises ``EncoreError`` when nothing at all ran for that date."""
    started = time.monotonic()
    if "://" in config.path("reports"):
        raise EncoreError(f"report: paths.reports must be a local or mounted folder, not {config.path('reports')}")
    records = [r for r in ledger.read(config, day) if r.get("step") != "report"]
    tables = Tables(config, (SILVER_PLAYS, SILVER_PLAYS_QUARANTINE, GOLD_ITEMS, GOLD_USER_PROFILES,
                             WAREHOUSE_RECOMMENDATIONS, WAREHOUSE_SKETCHES))
    try:
        ran = bool(records) or any(
            tables.has(name) and tables.rows(f"SELECT count(*) FROM {name} WHERE {column} = ?", day)[0][0] > 0
            for name, column in ((SILVER_PLAYS, "date"), (WAREHOUSE_RECOMMENDATIONS, "run_date")))
        if not ran:
            raise EncoreError(f"report: no night ran for {day}: no step recorded a run and no table has rows for it; "
                              f"run `encore night --date {day}` first")
        sections = [night_section(records, steps), quality_section(tables, day), recommendations_section(tables, day),
                    models_section(config), inspiration_section(tables, day)]
    finally:
        tables.close()
    folder = Path(config.path("reports")) / f"run_date={day.isoformat()}"
    folder.mkdir(parents=True, exist_ok=True)
    generated_at = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    html_path, json_path = folder / "report.html", folder / "report.json"
    _replace(html_path, render_html(day, sections, generated_at, config))
    _replace(json_path, json.dumps(_json_safe({
        "run_date": day, "generated_at": generated_at, "profile": config.profile,
        "sections": {s.key: {"title": s.title, "available": s.available, "note": s.note, "data": s.data}
                     for s in sections}}), indent=1, sort_keys=True))
    run_id = _log_to_mlflow(config, day, html_path, json_path, sections) if to_mlflow else None
    return ReportResult(day, html_path, json_path, sections, run_id, time.monotonic() - started)


def _replace(path: Path, text: str) -> None:
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text, encoding="utf-8")
    partial.replace(path)


def _log_to_mlflow(config: Config, day: dt.date, html_path: Path, json_path: Path, sections) -> str | None:
    """A ``report D`` run in the nightly experiment holding the page and its numbers; a store that cannot
    be reached is a warning, not a failed report (the files are written)."""
    try:
        import mlflow
        from encore import tracking
        tracking.experiment(config, config.nightly.experiment)
        with mlflow.start_run(run_name=f"report {day}") as run:
            mlflow.set_tags({"job": "report", "run_date": str(day)})
            mlflow.log_metrics({"sections_drawn": sum(s.available for s in sections),
                                "sections_not_run": sum(not s.available for s in sections)})
            mlflow.log_artifact(str(html_path))
            mlflow.log_artifact(str(json_path))
        return run.info.run_id
    except Exception as exc:
        log.warning("report: not logged to MLflow (%s); the files are at %s", _line(exc), html_path.parent)
        return None
