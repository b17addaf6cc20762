"""The look shared by every figure: one colour and marker per model, log axes, failed cells, saving.

The one module of GSS Bench that imports matplotlib (the house rule: only bench.plots draws); it selects the
Agg backend before anything else of matplotlib is imported, so figures render without a display."""

import math
import sys
import zlib
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display: figures go to files
import pandas as pd
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullLocator

from bench import analysis
from bench.analysis import ok, ordered_models

DPI = 130
# One look per model in every figure: colour, marker, marker size, line width (sizes shrink in drawing order, so
# equal values stay visible)
LOOKS = {
    "gss": ("#1f77b4", "o", 8, 3.6),
    "gss-fast": ("#0b3d6b", "v", 6.5, 2.2),
    "gss-direct": ("#9467bd", "s", 6.5, 2.6),
    "conv": ("#2ca02c", "^", 5.5, 1.7),
    "attention": ("#d62728", "D", 4, 1.2),
    "dss": ("#ff7f0e", "P", 6, 2.0),
    "attention-chunked": ("#e377c2", "X", 5, 1.5),
    "gss-hybrid": ("#17becf", "*", 7, 1.8),
}
MODEL_COLOURS = {model: look[0] for model, look in LOOKS.items()}
FALLBACK_COLOURS = ("#8c564b", "#bcbd22", "#7f7f7f", "#aec7e8", "#98df8a")
CATEGORY_COLOURS = {
    "dss_kernel": "#1f77b4",
    "fft_conv": "#aec7e8",
    "direct_conv": "#9467bd",
    "projection": "#ff7f0e",
    "norm": "#2ca02c",
    "attention": "#d62728",
    "backward": "#8c564b",
    "other": "#c7c7c7",
}
STYLES = ("-", "--", ":", "-.")
METHOD_STYLES = {"recurrent": "-", "kv_cache": "--", "reforward": ":"}
MODE_TITLES = {"fwd": "forward", "fwdbwd": "forward + backward"}


def colour(model):
    """One fixed colour per model in every figure; unknown names get a stable one from their hash."""
    return MODEL_COLOURS.get(model) or FALLBACK_COLOURS[zlib.crc32(model.encode()) % len(FALLBACK_COLOURS)]


def look(model):
    """Colour, marker and width of a model's lines (LOOKS; an unknown model gets its colour from its name)."""
    _, marker, size, width = LOOKS.get(model, (None, "v", 5, 1.5))
    return dict(color=colour(model), marker=marker, ms=size, linewidth=width)


def shade(model, i, n):
    """The i-th of n variants of a model's colour, from its own colour towards dark."""
    rgb = to_rgb(colour(model))
    f = 0.55 * i / max(n - 1, 1)
    return tuple(c * (1 - f) for c in rgb)


def note(message):
    print(f"note: {message}", file=sys.stderr)


def _data(source, name, figure):
    df = source if isinstance(source, pd.DataFrame) else analysis.load_csv(source, name)
    if df is None or ok(df).empty:
        note(f"skipped {figure}: {name} {'absent or without rows' if df is None else 'has no ok rows'}")
        return None
    return df


def _summary(source, name, figure, summarise, empty):
    """summarise(frame) of a run's CSV, or None (with a note) when the CSV is absent or the summary is empty."""
    df = _data(source, name, figure)
    summary = None if df is None else summarise(df)
    if summary is not None and summary.empty:
        note(empty)
        return None
    return summary


def _axes(n=1, *, width=6.4, height=4.4, rows=1):
    fig = Figure(figsize=(width * n, height * rows), layout="constrained")
    return fig, list(fig.subplots(rows, n, squeeze=False).flat)


def _save(fig, out_path):
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=DPI)
    return out_path


def _tokens(v):
    v = int(round(v))
    return f"{v // 1024}K" if v >= 1024 and v % 1024 == 0 else f"{v:,}"


def _format_tick(v, _=None):
    return f"{v:,.0f}" if v >= 10 else f"{v:g}"


def _log2_axis(ax, values, *, label, fmt=_tokens, base=2):
    """log x axis (base 2 unless told) ticked at the values measured (powers of two read as 512, 1K, 8K)."""
    ax.set_xscale("log", base=base)
    ax.xaxis.set_major_locator(FixedLocator(sorted(set(values))))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: fmt(v)))
    ax.set_xlabel(label)


def _log_y(ax, label):
    """log y with plain numbers; narrow ranges label minor ticks too (one label is not a scale)."""

    def minor(v, _):
        low, high = ax.get_ylim()
        mantissa = round(v / 10 ** math.floor(math.log10(v) + 1e-9), 1)
        span = high / low
        shown = (
            (1.5, 2, 2.5, 3, 4, 5, 6, 8) if span < 4 else (2, 3, 5, 7) if span < 10 else (2, 5) if span < 100 else ()
        )
        return _format_tick(v) if mantissa in shown else ""

    ax.set_yscale("log")
    ax.yaxis.set_minor_locator(LogLocator(subs=(1.5, 2, 2.5, 3, 4, 5, 6, 7, 8, 9)))
    ax.yaxis.set_major_formatter(FuncFormatter(_format_tick))
    ax.yaxis.set_minor_formatter(FuncFormatter(minor))
    ax.set_ylabel(label)
    ax.grid(True, which="major", alpha=0.3)


def _finish(ax, title, *, loc="best"):
    """Title and legend; loc "outside" puts the legend right of the axes, clear of every line and mark."""
    ax.set_title(title)
    if loc and ax.get_legend_handles_labels()[0]:
        where = dict(loc="upper left", bbox_to_anchor=(1.01, 1.0)) if loc == "outside" else dict(loc=loc)
        ax.legend(fontsize=8, framealpha=0.85, **where)


def _context(df):
    """batch, dim, device of the rows, for titles."""
    parts = [f"{c} {'/'.join(sorted(map(str, df[c].dropna().unique())))}" for c in ("batch", "dim") if c in df]
    devices = sorted(set(df.device)) if "device" in df else []
    return ", ".join(parts + [d.removeprefix("cuda:") for d in devices])


def _mark_failed(ax, rows, *, model, k, color=None):
    """An x per failed length of a sweep along the bottom of the axes, in the model's colour."""
    color = color or colour(model)
    for length, status in rows[rows.status != "ok"].groupby("seq_len").status.first().items():
        y = 0.04 + 0.08 * k
        ax.plot(
            [length],
            [y],
            transform=ax.get_xaxis_transform(),
            marker="x",
            ms=8,
            mew=2,
            color=color,
            linestyle="none",
            clip_on=False,
        )
        ax.annotate(
            f"{model} {status}",
            (length, y),
            xycoords=ax.get_xaxis_transform(),
            xytext=(0, 6),
            textcoords="offset points",
            fontsize=7,
            color=color,
            ha="center",
        )


def _dtypes(df, mode):
    """dtypes with ok rows in a mode, float32 first (drawn solid)."""
    return sorted(set(ok(df)[ok(df)["mode"] == mode].dtype), key=lambda d: (d != "float32", d))


def _sweep_lines(ax, df, *, mode, dtypes, value, err=None, slope=False, mark=True):
    """Each model's length sweep of `value` (one line style per dtype); returns the lengths shown."""
    lengths, models = [], ordered_models(df.model)
    for j, dtype in enumerate(dtypes):
        for k, model in enumerate(models):
            variants = analysis.model_sweeps(df, model, mode=mode, dtype=dtype)  # label -> rows; usually one
            for i, (name, rows) in enumerate(variants.items()):
                good = ok(rows).dropna(subset=[value])
                if good.empty:
                    continue
                s = good.groupby("seq_len")[[value] + ([err] if err else [])].median()
                label = name + (f" {dtype}" if len(dtypes) > 1 else "")
                fit = analysis.fitted_slope(s[value]) if slope else None
                label += f" (slope {fit:.2f})" if fit is not None else ""
                yerr = (s[err] / 2).clip(upper=0.9 * s[value]) if err else None
                style = {**look(model), "color": shade(model, i, len(variants))}
                ax.errorbar(s.index, s[value], yerr=yerr, linestyle=STYLES[j % 4], capsize=2, label=label, **style)
                if mark:
                    _mark_failed(ax, rows, model=name, k=k, color=colour(model))
                lengths += list(rows.seq_len)
    return lengths
