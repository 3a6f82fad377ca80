"""The music model's reference table: trained models against an n-gram baseline and real pieces.

    ENCORE_HOME=<home with `encore corpus` built> .venv/bin/python tests/benchmarks/music_reference.py \\
        --model reference=runs/local6/state.pt --model demo-size=runs/demo6/state.pt [--sketches 16] \\
        [--no-tonic-frame] [--in-key]

For every model (a ``state.pt`` from train-music or ``ray_jobs/train_music_standalone.py``) and for
interpolated Kneser-Ney n-gram models of orders 2-6 fitted on the same training windows: NLL per
token and per note over the validation windows (the n-gram's best order is the one reported;
choosing it on the same windows favours the baseline). Then, per style, the musical measures of
``ray_jobs/music_quality.py`` on sketches sampled from each model (the best n-gram included) under
the conditions of held-out pieces, beside the held-out pieces' own values, and which of issue 32's
goals the first model meets. Sampling uses temperature 1.0 and top-p 0.95 (``MusicGenerator``'s
defaults, the profile's too), and the tonic frame and the in-key ban as ``music.generate`` sets them
unless a flag overrides them. Prints markdown tables for docs/music-quality.md.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from encore.config import load_config  # noqa: E402
from ray_jobs.music_bundle import MusicGenerator, check  # noqa: E402
from ray_jobs.music_ngram import KneserNey, NgramGenerator  # noqa: E402
from ray_jobs.music_quality import METRICS, _held_out, fit_references, report  # noqa: E402
from ray_jobs.train_music import prepare, validation_nll  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", default=[], metavar="NAME=STATE.pt", required=True)
    parser.add_argument("--sketches", type=int, default=16, help="sketches (and held-out pieces) per style")
    parser.add_argument("--bars", type=int, default=8)
    parser.add_argument("--in-key", action=argparse.BooleanOptionalAction,
                        help="sample with notes outside the key banned (default: music.generate.in_key)")
    parser.add_argument("--tonic-frame", action=argparse.BooleanOptionalAction,
                        help="first and last bar on the tonic triad (default: music.generate.tonic_frame)")
    args = parser.parse_args()
    config = load_config()
    # unset flags sample as the nightly packs do
    for flag in ("in_key", "tonic_frame"):
        if getattr(args, flag) is None:
            setattr(args, flag, getattr(config.music.generate, flag))
    print(f"[reference] sampling: in_key {args.in_key}, tonic_frame {args.tonic_frame}", file=sys.stderr, flush=True)
    prep = prepare(config)
    pad, notes = prep.vocab.pad_id, prep.valid_notes
    generators, nll = {}, []
    for spec in args.model:
        name, path = spec.split("=", 1)
        generators[name] = MusicGenerator(path, prep.tokenizer_path, device="cpu")
        per_token = validation_nll(generators[name].model, prep.valid_windows, pad)
        count = int((prep.valid_windows[:, 1:] != pad).sum())
        cfg = generators[name].model.cfg
        nll.append((name, f"{cfg.n_layers} x {cfg.d_model}", per_token, per_token * count / notes))
    best = None
    for order in range(2, 7):
        started = time.perf_counter()
        model = KneserNey(order, prep.vocab.size, pad).fit(prep.train_windows)
        total, count = model.nll_totals(prep.valid_windows)
        print(f"[reference] {order}-gram: {total / count:.4f} nats/token ({time.perf_counter() - started:.1f} s)",
              file=sys.stderr, flush=True)
        if best is None or total / count < best[1]:
            best = (model, total / count, total / notes)
    ngram_name = f"{best[0].order}-gram KN"
    nll.append((ngram_name, "-", best[1], best[2]))
    generators[ngram_name] = NgramGenerator(best[0], prep.tokenizer_path, context=prep.model_cfg.context)

    print("\n| model | shape | validation NLL/token | validation NLL/note | NLL/note below the n-gram's |")
    print("|---|---|---|---|---|")
    for name, shape, per_token, per_note in nll:
        print(f"| {name} | {shape} | {per_token:.3f} | {per_note:.3f} | {1 - per_note / best[2]:.1%} |")

    started = time.perf_counter()
    references = fit_references(generators[nll[0][0]].tokenizer, prep.frame, args.bars)
    print(f"[reference] chord bigrams and style classifier: {time.perf_counter() - started:.0f} s", file=sys.stderr,
          flush=True)
    tables = []
    for name, generator in generators.items():
        started = time.perf_counter()
        table = report(generator, prep.frame, args.sketches, args.bars, references=references, in_key=args.in_key,
                       tonic_frame=args.tonic_frame)
        print(f"[reference] measures of {name}: {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
        tables.append(table.assign(model=name))
    both = pd.concat(tables)
    real = both.groupby(["style", "metric"])[["real", "real_std", "real_n"]].first()
    wide = both.pivot_table(index=["style", "metric"], columns="model", values="generated",
                            dropna=False)[list(generators)]
    print(f"\nMeans over {args.sketches} sketches per style and model ({args.bars} bars), real pieces' openings "
          "beside them (style adherence: the classifier's accuracy on held-out pieces):\n")
    print("| style | measure | " + " | ".join(wide.columns) + " | real (mean ± std, n) |")
    print("|---|---|" + "---|" * (len(wide.columns) + 1))
    for (style, metric), row in wide.iterrows():
        r = real.loc[(style, metric)]
        spread = f" ± {r['real_std']:.3f}" if r["real_std"] == r["real_std"] else ""
        print(f"| {style} | {metric} | " + " | ".join(f"{v:.3f}" if v == v else "-" for v in row)
              + f" | {r['real']:.3f}{spread} ({int(r['real_n'])}) |")
    print(f"\nGoals for {nll[0][0]}, per style:\n")
    print("| style | " + " | ".join(GOALS) + " |")
    print("|---|" + "---|" * len(GOALS))
    mine = both[both["model"] == nll[0][0]].set_index(["style", "metric"])
    for style in sorted(set(both["style"])):
        print(f"| {style} | " + " | ".join("met" if check(mine, style) else "**missed**" for check in GOALS.values())
              + " |")
    _first_attempts(config, prep.frame, generators, args)
    counts = both[both["metric"] == METRICS[0]].groupby("model")["generated_n"].sum()
    styles = both["style"].nunique()
    print("\nSketches that decoded to measurable music: "
          + ", ".join(f"{m} {int(counts[m])}/{args.sketches * styles}" for m in generators))


def _first_attempts(config, frame: pd.DataFrame, generators: dict, args) -> None:
    """How many sketches pass the generation-time checks (music.generate) at the first attempt, and
    which checks the others fail: the same conditions and seeds as the measures."""
    rules = {k: getattr(config.music.generate, k) for k in (
        "min_bar_fill", "min_in_scale", "min_diatonic_share", "require_key", "max_shared_intervals", "retries")}
    intervals = [np.diff(np.asarray(m, dtype=np.int32)) for m in frame[frame["split"] == "train"]["melody"]]
    failed_by = {"bar fill": lambda r: r.get("bar_fill", 0) < rules["min_bar_fill"],
                 "in scale": lambda r: r.get("in_scale", 0) < rules["min_in_scale"],
                 "diatonic share": lambda r: r.get("diatonic_share", 0) < rules["min_diatonic_share"],
                 "key": lambda r: rules["require_key"] and r.get("detected_key") != r["requested_key"],
                 "originality": lambda r: r.get("longest_shared_intervals", 0) >= rules["max_shared_intervals"]}
    print("\nThe generation-time checks at the first attempt (the same sketches; a sketch may fail several):\n")
    print("| model | passed | " + " | ".join(f"failed {name}" for name in failed_by) + " |")
    print("|---|---|" + "---|" * len(failed_by))
    for name, generator in generators.items():
        conditions, seeds = [], []
        for style, held in _held_out(frame).groupby("style"):
            first = held.head(args.sketches)
            conditions += ([(style, k, t) for k, t in zip(first["key"], first["tempo_bucket"])] * args.sketches)[
                :args.sketches]
            seeds += range(args.sketches)   # report()'s seeds, style by style
        sketches = generator.generate(conditions, seeds, bars=args.bars, in_key=args.in_key,
                                      tonic_frame=args.tonic_frame)
        results = [{**check(generator, sk, args.bars, intervals, rules), "requested_key": sk.key} for sk in sketches]
        print(f"| {name} | {sum(bool(r.get('passed')) for r in results)} of {len(results)} | "
              + " | ".join(str(sum(bool(failed(r)) for r in results)) for failed in failed_by.values()) + " |")


def _within_std(mine: pd.DataFrame, style: str) -> bool:
    rows = mine.loc[style].loc[list(METRICS)]
    return bool(((rows["generated"] - rows["real"]).abs() <= rows["real_std"]).all())


GOALS = {
    "every measure within 1 std of real": _within_std,
    "diatonic share within 10 points": lambda m, s: abs(m.loc[(s, "diatonic_chord_share"), "generated"]
                                                       - m.loc[(s, "diatonic_chord_share"), "real"]) <= 0.10,
    "key adherence >= 90%": lambda m, s: m.loc[(s, "key_adherence"), "generated"] >= 0.9,
    "style adherence >= 80% (classifier >= 90%)": lambda m, s: m.loc[(s, "style_adherence"), "generated"] >= 0.8
    and m.loc[(s, "style_adherence"), "real"] >= 0.9,
}


if __name__ == "__main__":
    main()
