"""The roofline figure of a run: each cell's achieved FLOP/s against its arithmetic intensity, under the machine's
measured limits (env.json's `limits`, bench.analysis.roofline)."""

import math

import pandas as pd

from bench.analysis import ok, roofline
from bench.floors import rate
from bench.plots.style import (
    _axes,
    _context,
    _data,
    _finish,
    _format_tick,
    _log2_axis,
    _log_y,
    _save,
    _tokens,
    colour,
    note,
)

MODE_MARKERS = {"fwd": "o", "fwdbwd": "s"}  # a marker per mode; the colour is the model's
MODE_LINES = {"fwd": "-", "fwdbwd": "--"}
ROOF_STYLES = (":", "-.", (0, (5, 2)), (0, (1, 3)))  # a line style per dtype's roof
MARGIN = 1.5  # the axes reach this factor beyond the outermost point, ridge or roof
BELOW_RIDGE = 4  # the bandwidth slope is drawn from at most a quarter of the lowest ridge's intensity


def roofline_series(df, limits):
    """What the figure draws, as data, or None when there is nothing to draw (no limits, no cell with min_bytes):
    roofs {dtype: FLOP/s} of the dtypes of the cells, bandwidth (bytes/s), x and y (the axes' ranges: intensity,
    FLOP/s), slope ((x0, x1), (y0, y1)): bandwidth x intensity up to the highest roof's ridge, and series: a list
    of dicts (model, label, mode, dtype, seq_len, intensity, flops_per_s, sweep), one per length sweep and mode,
    its cells by length (joined by a line), then per model and mode the cells of no sweep (ablations): points
    only."""
    cells = roofline.points(df)
    if limits is None or cells.empty:
        return None
    bandwidth = limits["bandwidth_bytes_per_s"]
    dtypes = sorted(set(cells.dtype), key=lambda d: (d != "float32", d))
    roofs = {d: r for d in dtypes if (r := rate(limits, d)) is not None}
    ridges = [r / bandwidth for r in roofs.values()]
    low = min([*cells.intensity, *(r / BELOW_RIDGE for r in ridges)]) / MARGIN
    high = max([*cells.intensity, *ridges]) * MARGIN
    top = max(ridges, default=high)
    y = (min([*cells.flops_per_s, bandwidth * low]) / MARGIN, max([*cells.flops_per_s, *roofs.values()]) * MARGIN)
    series = []
    for (model, label, mode, dtype), rows in cells.groupby(["model", "label", "mode", "dtype"], sort=False):
        rows = rows.sort_values("seq_len", kind="stable")
        series.append(
            dict(
                model=model,
                label=label or model,
                mode=mode,
                dtype=dtype,
                seq_len=list(rows.seq_len),
                intensity=list(rows.intensity),
                flops_per_s=list(rows.flops_per_s),
                sweep=bool(label),
            )
        )
    return dict(
        roofs=roofs,
        bandwidth=bandwidth,
        x=(low, high),
        y=y,
        slope=((low, top), (bandwidth * low, bandwidth * top)),
        series=series,
    )


def plot_roofline(source, out_path, *, limits=None):
    """Roofline, log-log: achieved FLOP/s (flops / time_ms) of every ok cell against its arithmetic intensity
    (flops / min_bytes), a marker per mode in the model's colour, each length sweep joined and its longest length
    named; the measured roof of each dtype and the bandwidth slope drawn and labelled. limits:
    env.json's (read from the run directory when source is one). None, with a note, without limits or
    min_bytes."""
    df = _data(source, "scaling.csv", "roofline")
    if df is None:
        return None
    if limits is None and not isinstance(source, pd.DataFrame):
        limits = roofline.limits_of(source)
    if limits is None:
        return note("skipped roofline: no limits in env.json (a run before them, or the smoke preset)")
    drawn = roofline_series(df, limits)
    if drawn is None:
        return note("skipped roofline: no ok cell of scaling.csv states its min_bytes")
    scale, unit = (1e12, "TFLOP/s") if max([*drawn["roofs"].values(), 0]) >= 1e12 else (1e9, "GFLOP/s")
    fig, (ax,) = _axes(width=7.6, height=5.0)
    for i, (dtype, peak) in enumerate(drawn["roofs"].items()):
        style = ROOF_STYLES[i % len(ROOF_STYLES)]
        ax.plot(
            drawn["x"],
            [peak / scale] * 2,
            color="0.25",
            linestyle=style,
            label=f"{dtype} roof {roofline.rate_text(peak)}",
        )
    (x0, x1), (y0, y1) = drawn["slope"]
    copy = f"bandwidth {drawn['bandwidth'] / 1e9:.3g} GB/s × intensity"
    ax.plot([x0, x1], [y0 / scale, y1 / scale], color="0.55", linewidth=2, label=copy)
    for s in drawn["series"]:
        y = [v / scale for v in s["flops_per_s"]]
        mark = dict(color=colour(s["model"]), marker=MODE_MARKERS.get(s["mode"], "D"), ms=6)
        dtypes = {t["dtype"] for t in drawn["series"]}
        name = f"{s['label']} {s['mode']}" + (f" {s['dtype']}" if len(dtypes) > 1 else "")
        if s["sweep"]:
            ax.plot(s["intensity"], y, linestyle=MODE_LINES.get(s["mode"], ":"), linewidth=1.2, label=name, **mark)
            ax.annotate(
                _tokens(s["seq_len"][-1]),  # the longest length: which way the sweep runs
                (s["intensity"][-1], y[-1]),
                xytext=(4, -9 if s["mode"] == "fwdbwd" else 4),
                textcoords="offset points",
                fontsize=6.5,
                color=mark["color"],
            )
        else:
            ax.plot(s["intensity"], y, linestyle="none", alpha=0.6, label=f"{name} (other options)", **mark)
    low, high = drawn["x"]
    decades = [10.0**k for k in range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)]
    label = "arithmetic intensity (counted FLOPs / minimum bytes, FLOP/byte)"
    _log2_axis(ax, [d for d in decades if low <= d <= high], label=label, fmt=_format_tick, base=10)
    ax.set_xlim(low, high)
    _log_y(ax, f"achieved {unit} (counted FLOPs / median step time)")
    ax.set_ylim(drawn["y"][0] / scale, drawn["y"][1] / scale)
    _finish(ax, f"Roofline against the measured limits ({_context(ok(df))})", loc="outside")
    return _save(fig, out_path)
