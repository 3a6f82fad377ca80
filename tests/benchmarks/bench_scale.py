"""Benchmark: one night at a music service's size: 10K, 100K and 1M listeners on this machine.

    .venv/bin/python tests/benchmarks/bench_scale.py                                 # 10K and 100K
    .venv/bin/python tests/benchmarks/bench_scale.py --sizes 1000000 --home /data/scale --driver-memory 8g

For each size, a fresh home gets a synthetic world from ``encore generate-logs`` (the normal landing
files, ingested by the normal steps):
- N listeners;
- N/10 artists, at most 100,000, with the generator's long tail of popularity, and a catalogue with tags;
- --days dates (30), about --plays plays per listener per day (2), 2% faults and no bots.

Then every step runs as an operator runs it, each an ``encore`` process in the local profile:
ingest, clean --from/--to, features, train-recommender (one model, no search: the night needs a champion), corpus
and train-music, score, generate, export, validate. The music model is the tests' tiny one: its cost
does not depend on the number of listeners, and a full one would take the whole run.

Per step the table gives:
- wall time;
- rows written: the Delta tables the step writes, from their logs' file statistics; for export and
  validate, the exported rows;
- throughput in rows/s;
- peak resident memory of the driver (the Python processes), the JVM, and the sum of Ray's processes,
  sampled every 0.2 s over the step's process tree, and the peak of all three together;
- the peak of the tree's proportional set size (PSS), sampled every second: memory shared between
  processes, Ray's object store above all, counted once instead of once per process that maps it.
  Summed RSS counts the object store's pages in the driver that wrote them and in every actor that
  reads them;
- bytes the step added to the home.

Then, per size, the cost per listener of the steps after features (score, generate, export, validate),
in milliseconds per 1,000 listeners, and its ratio to the previous size.

Targets (issue 29):
- the 1M night's peak memory (all processes, PSS) <= 12 GiB;
- score + generate + export + validate <= 20 min at 1M;
- cost per listener flat or falling from 100K to 1M.

Results also go to --out (JSON); docs/benchmarks.md keeps the latest table, tests/benchmarks/scale-history.md the history.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.benchmarks.bench_night import table  # noqa: E402
from tests.homes import LENIENT_CHECKS, TINY  # noqa: E402

ENCORE = str(Path(sys.executable).parent / "encore")
END = dt.date(2026, 11, 30)
AFTER_FEATURES = ("score", "generate", "export", "validate")
STEPS = ("generate-logs", "ingest", "clean", "features", "train-recommender", "corpus", "train-music",
         *AFTER_FEATURES)
GIB = 2 ** 30


@dataclass
class StepResult:
    step: str
    seconds: float
    rows: int
    peak_driver: int = 0
    peak_jvm: int = 0
    peak_ray: int = 0
    peak_total: int = 0
    peak_pss: int = 0
    bytes_added: int = 0
    notes: list[str] = field(default_factory=list)


class PeakSampler:
    """Peak resident memory of a process tree, by kind (Python driver, JVM, Ray), sampled on a thread."""

    PSS_EVERY = 5   # samples: PSS once a second at the default 0.2 s

    def __init__(self, pid: int, every_s: float = 0.2):
        import psutil
        self.root = psutil.Process(pid)
        self.every_s = every_s
        self.peaks = {"driver": 0, "jvm": 0, "ray": 0, "total": 0, "pss": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @staticmethod
    def _kind(process) -> str:
        name = process.name()
        if name == "java":
            return "jvm"
        if name in ("raylet", "gcs_server") or name.startswith("ray::") or "ray/" in " ".join(process.cmdline()[:2]):
            return "ray"
        return "driver"

    def _run(self) -> None:
        import psutil
        tick = 0
        while not self._stop.is_set():
            sums = {"driver": 0, "jvm": 0, "ray": 0}
            # PSS walks every mapping of a process: at 0.2 s it took a quarter of a core during score
            # at 1M listeners, so it is read every PSS_EVERY-th sample.
            with_pss, pss = tick % self.PSS_EVERY == 0, 0
            tick += 1
            try:
                processes = [self.root, *self.root.children(recursive=True)]
            except psutil.Error:
                break
            for process in processes:
                try:
                    if with_pss:
                        full = process.memory_full_info()   # reads /proc/<pid>/smaps_rollup
                        sums[self._kind(process)] += full.rss
                        pss += full.pss
                    else:
                        sums[self._kind(process)] += process.memory_info().rss
                except psutil.Error:
                    continue
            for kind, value in sums.items():
                self.peaks[kind] = max(self.peaks[kind], value)
            self.peaks["total"] = max(self.peaks["total"], sum(sums.values()))
            self.peaks["pss"] = max(self.peaks["pss"], pss)
            self._stop.wait(self.every_s)

    def stop(self) -> dict[str, int]:
        self._stop.set()
        self._thread.join(timeout=5)
        return self.peaks


def tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def delta_rows(lakehouse: Path, names: tuple[str, ...]) -> int:
    """Rows in the named tables' current versions, from the file statistics in their Delta logs."""
    from deltalake import DeltaTable
    total = 0
    for name in names:
        path = lakehouse / name.replace(".", "/")
        if (path / "_delta_log").is_dir():
            actions = DeltaTable(str(path)).get_add_actions(flatten=True)
            total += int(sum(v for v in actions.column("num_records").to_pylist() if v is not None))
    return total


def export_rows(home: Path, day: dt.date) -> int:
    manifest = home / "exports" / f"run_date={day}" / "manifest.json"
    if not manifest.is_file():
        return 0
    datasets = json.loads(manifest.read_text())["datasets"]
    return datasets["recommendations"]["rows"] + datasets["packs"]["rows"]


def run_step(name: str, argv: list[str], env: dict, home: Path, rows_of) -> StepResult:
    before = tree_bytes(home)
    started = time.perf_counter()
    log = home.parent / f"{home.name}-{name}.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([ENCORE, *argv], env=env, stdout=out, stderr=subprocess.STDOUT)
        sampler = PeakSampler(proc.pid)
        code = proc.wait()
        peaks = sampler.stop()
    seconds = time.perf_counter() - started
    if code != 0:
        tail = log.read_text().strip().splitlines()[-5:]
        raise SystemExit(f"bench_scale: encore {' '.join(argv)} failed ({code}); {log}:\n" + "\n".join(tail))
    result = StepResult(name, round(seconds, 1), rows_of(), peaks["driver"], peaks["jvm"], peaks["ray"], peaks["total"],
                        bytes_added=tree_bytes(home) - before, peak_pss=peaks["pss"])
    print(f"  {name}: {seconds:.0f} s, {result.rows:,} rows, peak {peaks['pss'] / GIB:.2f} GiB PSS "
          f"({peaks['total'] / GIB:.2f} GiB summed RSS)", flush=True)
    return result


def world_settings(listeners: int, args) -> dict[str, str]:
    return {
        **TINY, **LENIENT_CHECKS,
        "ENCORE__GENERATE__USERS": str(listeners),
        "ENCORE__GENERATE__ITEMS": str(min(100_000, max(1_000, listeners // 10))),
        "ENCORE__GENERATE__EVENTS_PER_DAY": str(int(listeners * args.plays)),
        "ENCORE__GENERATE__DAYS": str(args.days), "ENCORE__GENERATE__END_DATE": END.isoformat(),
        "ENCORE__GENERATE__BOTS": "0",
        # The night needs a champion, not a good one: one model of --rec-epochs (the gate admits the first).
        "ENCORE__RECOMMENDER__SEARCH__TRIALS": "0", "ENCORE__RECOMMENDER__PARAMS__EPOCHS": str(args.rec_epochs),
        "ENCORE__RECOMMENDER__PARAMS__ENSEMBLE": "1",
        "ENCORE__SPARK__DRIVER_MEMORY": args.driver_memory,
    }


def run_size(listeners: int, root: Path, args) -> list[StepResult]:
    home = root / f"n{listeners}"
    if not args.steps:
        shutil.rmtree(home, ignore_errors=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENCORE")}
    env.update(world_settings(listeners, args), ENCORE_HOME=str(home))
    lake = home / "lakehouse"
    first = END - dt.timedelta(days=args.days - 1)
    day = END.isoformat()
    steps = [
        ("generate-logs", ["generate-logs"], lambda: 0),
        ("ingest", ["ingest"], lambda: delta_rows(lake, ("bronze.plays_raw", "bronze.catalog_raw"))),
        ("clean", ["clean", "--from", first.isoformat(), "--to", day],
         lambda: delta_rows(lake, ("silver.plays", "silver.plays_quarantine", "silver.catalog"))),
        ("features", ["features", "--date", day],
         lambda: delta_rows(lake, ("gold.interactions", "gold.items", "gold.user_profiles"))),
        ("train-recommender", ["train-recommender", "--date", day, "--trials", "0"], lambda: 0),
        ("corpus", ["corpus"], lambda: delta_rows(lake, ("gold.music_sequences",))),
        ("train-music", ["train-music"], lambda: 0),
        ("score", ["score", "--date", day], lambda: delta_rows(lake, ("warehouse.recommendations",))),
        ("generate", ["generate", "--date", day],
         lambda: delta_rows(lake, ("warehouse.sketches", "warehouse.inspiration_packs"))),
        ("export", ["export", "--date", day], lambda: export_rows(home, END)),
        ("validate", ["validate", "--date", day], lambda: export_rows(home, END)),
    ]
    print(f"{listeners:,} listeners: {home}", flush=True)
    chosen = [(name, argv, rows) for name, argv, rows in steps if not args.steps or name in args.steps]
    results = []
    for name, argv, rows in chosen:
        results.append(run_step(name, argv, env, home, rows))
        # Saved after every step: a size stopped part-way keeps what it measured.
        partial = root / f"n{listeners}-steps.json"
        partial.write_text(json.dumps([asdict(r) for r in results], indent=2))
    if not args.keep and not args.steps:
        shutil.rmtree(home, ignore_errors=True)
    return results


def print_size(listeners: int, results: list[StepResult]) -> None:
    print(f"\n{listeners:,} listeners")
    rows = []
    for r in results:
        rate = f"{r.rows / r.seconds:,.0f}" if r.rows and r.seconds else "-"
        rows.append((r.step, f"{r.seconds:.1f}", f"{r.rows:,}" if r.rows else "-", rate,
                     f"{r.peak_driver / GIB:.2f}", f"{r.peak_jvm / GIB:.2f}", f"{r.peak_ray / GIB:.2f}",
                     f"{r.peak_total / GIB:.2f}", f"{r.peak_pss / GIB:.2f}", f"{r.bytes_added / 1e6:,.0f}"))
    table(["step", "s", "rows", "rows/s", "driver GiB", "JVM GiB", "Ray GiB", "all GiB", "all PSS GiB", "MB written"],
          rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--plays", type=float, default=2.0, help="plays per listener per day, on average")
    parser.add_argument("--driver-memory", default="4g")
    parser.add_argument("--home", type=Path, help="where the homes go (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep each size's home")
    parser.add_argument("--steps", nargs="+", choices=STEPS, metavar="STEP",
                        help="run only these steps, on the home a kept earlier run left (which is kept): "
                             "a long size can be built in parts, or one step measured again after a change")
    parser.add_argument("--rec-epochs", type=int, default=10,
                        help="epochs of the one recommender model (10; its cost grows with the listeners)")
    parser.add_argument("--out", type=Path, default=Path("bench_scale.json"))
    args = parser.parse_args()
    root = args.home or Path(tempfile.mkdtemp(prefix="encore-scale-"))
    root.mkdir(parents=True, exist_ok=True)
    measured = {}
    for listeners in args.sizes:
        measured[listeners] = run_size(listeners, root, args)
        print_size(listeners, measured[listeners])
        args.out.write_text(json.dumps({str(k): [asdict(r) for r in v] for k, v in measured.items()}, indent=2))

    print("\nsteps after features (score, generate, export, validate)")
    rows, previous = [], None
    for listeners, results in measured.items():
        after = sum(r.seconds for r in results if r.step in AFTER_FEATURES)
        per_thousand = after / listeners * 1000
        peak = max(r.peak_pss for r in results)
        ratio = f"{per_thousand / previous:.2f}" if previous else "-"
        rows.append((f"{listeners:,}", f"{after:.0f}", f"{per_thousand * 1000:.0f}", ratio, f"{peak / GIB:.2f}"))
        previous = per_thousand
    table(["listeners", "s after features", "ms per 1,000 listeners", "vs previous size", "peak PSS GiB (night)"], rows)


if __name__ == "__main__":
    main()
