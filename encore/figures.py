"""Every picture Encore draws, as PNG bytes (matplotlib, no display): bar and line charts of the
night's figures and piano rolls of sketches drawn from their MIDI notes. The night's report embeds
them; MLflow runs log the same figures.
"""
from __future__ import annotations

import io
from typing import Sequence

PALETTE = ["#3b6ea8", "#e28a2b", "#5a9e4b", "#c2474a", "#8a6bb8", "#8c6d5c", "#d87fb9", "#7f7f7f", "#b8b83a",
           "#3ab0c2"]


def _figure(width: float = 7.5, height: float = 3.2):
    import matplotlib
    matplotlib.use("Agg", force=True)   # never a display: steps run headless (Airflow, Ray jobs)
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(width, height), dpi=100)
    ax.spines[["top", "right"]].set_visible(False)
    return fig, ax


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def hbars(labels: Sequence[str], values: Sequence[float], title: str, xlabel: str, *,
          highlight: str | None = None) -> bytes:
    """Horizontal bars, first label on top; ``highlight`` colours one label's bar."""
    fig, ax = _figure(7.5, 0.45 * max(len(labels), 3) + 1.0)
    colours = [PALETTE[1] if label == highlight else PALETTE[0] for label in labels]
    ax.barh(list(range(len(labels)))[::-1], values, color=colours)
    ax.set_yticks(list(range(len(labels)))[::-1], labels)
    ax.set_xlabel(xlabel)
    ax.set_title(title, loc="left")
    return _png(fig)


def stacked_bars(x: Sequence[str], series: dict[str, Sequence[float]], title: str, ylabel: str) -> bytes:
    """One bar per x (a date), stacked by series (a reason, a strategy)."""
    fig, ax = _figure()
    bottom = [0.0] * len(x)
    for i, (name, values) in enumerate(series.items()):
        ax.bar(range(len(x)), values, bottom=bottom, label=name, color=PALETTE[i % len(PALETTE)])
        bottom = [b + v for b, v in zip(bottom, values)]
    ax.set_ylabel(ylabel)
    ax.set_title(title, loc="left")
    _date_ticks(ax, x)
    if series:
        ax.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _png(fig)


def lines(x: Sequence[str], series: dict[str, Sequence[float]], title: str, ylabel: str, *,
          ylim: tuple[float, float] | None = None) -> bytes:
    fig, ax = _figure()
    for i, (name, values) in enumerate(series.items()):
        ax.plot(range(len(x)), values, marker="o", markersize=3, label=name, color=PALETTE[i % len(PALETTE)])
    ax.set_ylabel(ylabel)
    ax.set_title(title, loc="left")
    if ylim:
        ax.set_ylim(*ylim)
    _date_ticks(ax, x)
    if len(series) > 1:
        ax.legend(fontsize=8, frameon=False)
    return _png(fig)


def grouped_bars(groups: Sequence[str], series: dict[str, Sequence[float]], title: str, ylabel: str, *,
                 errors: dict[str, Sequence[float]] | None = None) -> bytes:
    """Bars side by side per group (a style, a metric), one colour per series; optional error bars."""
    fig, ax = _figure(7.5, 3.4)
    width = 0.8 / max(len(series), 1)
    for i, (name, values) in enumerate(series.items()):
        xs = [g + (i - (len(series) - 1) / 2) * width for g in range(len(groups))]
        ax.bar(xs, values, width, label=name, color=PALETTE[i % len(PALETTE)],
               yerr=(errors or {}).get(name), capsize=3)
    ax.set_xticks(range(len(groups)), groups, rotation=20 if max(map(len, groups), default=0) > 10 else 0)
    ax.set_ylabel(ylabel)
    ax.set_title(title, loc="left")
    ax.legend(fontsize=8, frameon=False)
    return _png(fig)


def _date_ticks(ax, x: Sequence[str]) -> None:
    # x is plotted by position, not as strings: matplotlib's categorical axis logs a line per chart
    # when every label parses as a date, and the labels here are ISO dates.
    step = max(1, len(x) // 10)
    ax.set_xticks(range(0, len(x), step), [str(v)[5:] if len(str(v)) == 10 else str(v) for v in x[::step]],
                  rotation=0, fontsize=8)


def piano_roll(midi: bytes, title: str) -> bytes:
    """A piano roll of a Standard MIDI File: one bar per note (pitch against beats), bar lines dotted."""
    import symusic
    from matplotlib.patches import Rectangle
    score = symusic.Score.from_midi(midi)
    tpq = score.ticks_per_quarter or 480
    notes = [(n.time / tpq, n.duration / tpq, n.pitch, n.velocity) for track in score.tracks for n in track.notes]
    fig, ax = _figure(4.6, 2.4)
    if notes:
        for start, length, pitch, velocity in notes:
            ax.add_patch(Rectangle((start, pitch - 0.4), max(length, 0.05), 0.8,
                                   color=PALETTE[0], alpha=0.35 + 0.65 * velocity / 127, linewidth=0))
        end = max(s + d for s, d, _, _ in notes)
        low, high = min(p for _, _, p, _ in notes), max(p for _, _, p, _ in notes)
        ax.set_xlim(0, end)
        ax.set_ylim(low - 2, high + 2)
        beats_per_bar = 4
        if score.time_signatures:
            ts = score.time_signatures[0]
            beats_per_bar = ts.numerator * 4 / ts.denominator
        bar = beats_per_bar
        while bar < end:
            ax.axvline(bar, color="#999999", linewidth=0.6, linestyle=":")
            bar += beats_per_bar
    else:
        ax.text(0.5, 0.5, "no notes", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("beats")
    ax.set_ylabel("MIDI pitch")
    ax.set_title(title, loc="left", fontsize=9)
    return _png(fig)


def quality_gap(row: dict) -> float:
    """A measure's generated mean minus the held-out real pieces' mean, in the real pieces' standard
    deviations; NaN where there is no spread to measure against."""
    generated, real, spread = (float(row.get(k, float("nan"))) for k in ("generated", "real", "real_std"))
    if any(v != v for v in (generated, real, spread)) or spread == 0:
        return float("nan")
    return (generated - real) / spread


def quality_gaps(rows: list[dict]) -> bytes:
    """The music quality report (rows of style, metric, generated, real, real_std) as one chart:
    each measure's gap per style, in real standard deviations (the goal is within one)."""
    styles = sorted({r["style"] for r in rows})
    measures = list(dict.fromkeys(r["metric"] for r in rows))
    by = {(r["style"], r["metric"]): r for r in rows}
    gaps = {style: [quality_gap(by[(style, m)]) if (style, m) in by else float("nan") for m in measures]
            for style in styles}
    return grouped_bars(measures, gaps, "Generated minus real mean, in real standard deviations (goal: within ±1)",
                        "gap (real SDs)")
