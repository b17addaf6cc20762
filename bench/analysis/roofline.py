"""Each cell against the machine's measured limits (numpy + pandas, no torch): its place on the roofline, its
roofline fraction at the longest common length (findings.csv's roofline_frac rows), the cells above their roof,
and each profiled stage's distance from its own.

The limits are env.json's `limits` (bench.core.limits.measure's object: matmul_flops_per_s per dtype,
bandwidth_bytes_per_s); a cell's counts are scaling.csv's flops and min_bytes, its floor and fraction the suite's
floor_ms and roofline_frac. A run without them (older runs, the smoke preset, a model that states no min_bytes)
has no roofline: every function here then returns nothing, and says nothing.

The binding roof of a step is the longer of its two floors: its FLOPs at the dtype's matrix-product rate
(compute) and its minimum bytes at the copy bandwidth (memory). A stage's fraction of its binding roof is the
larger of its peak_frac and bandwidth_frac (op_breakdown.csv): each is that floor over the stage's time.

A fraction compares one cell's time with limits measured once, at another time of the run: findings.csv gives it
no interval. The cell's repeats alone bound its median time (bench.stats.median_order_interval), and detail quotes
the fraction over that range, which leaves out the limits' own noise."""

import math

import numpy as np
import pandas as pd

from bench import analysis
from bench.analysis import ok, refine
from bench.floors import positive, roofs_ms
from bench.results import read_env
from bench.stats import median_order_interval

FINDING = "roofline_frac"
ABOVE = 1.05  # a cell this far above its roof: a limit or a count is wrong
POINT_COLUMNS = ["model", "mode", "dtype", "seq_len", "label", "intensity", "flops_per_s", "roofline_frac"]


def limits_of(run_dir):
    """env.json's `limits` when it holds a positive bandwidth and at least one dtype's positive matrix-product
    rate; None otherwise (no env.json, an older run, the smoke preset)."""
    limits = (read_env(run_dir) or {}).get("limits")
    if not isinstance(limits, dict):
        return None
    rates = limits.get("matmul_flops_per_s")
    if not isinstance(rates, dict) or not positive(limits.get("bandwidth_bytes_per_s")):
        return None
    return limits if any(positive(r) for r in rates.values()) else None


def rate_text(flops_per_s):
    """A matrix-product rate as REPORT.md and the figure write it: GFLOP/s, or TFLOP/s from 1e12."""
    return f"{flops_per_s / 1e12:.3g} TFLOP/s" if flops_per_s >= 1e12 else f"{flops_per_s / 1e9:.3g} GFLOP/s"


def ms_text(ms):
    """A floor or a time in ms: 4 significant digits, whole milliseconds from 10 s."""
    return f"{ms:,.0f}" if ms >= 1e4 else f"{ms:.4g}"


def binding(flops, min_bytes, dtype, limits):
    """("compute" or "memory", compute floor ms, memory floor ms): which floor is the longer; None without the
    dtype's rate or the counts."""
    roofs = roofs_ms(flops, min_bytes, dtype, limits)
    if roofs is None:
        return None
    compute_ms, memory_ms = roofs
    return ("compute" if compute_ms > memory_ms else "memory"), compute_ms, memory_ms


def _counted(df):
    """The ok cells with positive flops, min_bytes and time_ms (none where scaling.csv has no min_bytes)."""
    if df is None or "min_bytes" not in df.columns:
        return None
    cells = ok(df)
    return cells[(cells.flops > 0) & (cells.min_bytes > 0) & (cells.time_ms > 0)]


def points(df):
    """One row per ok cell with its counts (POINT_COLUMNS): arithmetic intensity (flops / min_bytes, FLOP/byte)
    and achieved FLOP/s (flops / time_ms); label names the length sweep (bench.analysis.model_sweeps) a cell
    belongs to, "" for a cell of none (an ablation's). Empty without min_bytes."""
    cells = _counted(df)
    if cells is None or cells.empty:
        return pd.DataFrame(columns=POINT_COLUMNS)
    labels = pd.Series("", index=cells.index)
    for mode, dtype in analysis.modes_dtypes(cells):
        for model in analysis.ordered_models(cells.model):
            for label, rows in analysis.model_sweeps(cells, model, mode=mode, dtype=dtype).items():
                labels[rows.index] = label
    out = cells.assign(
        label=labels,
        intensity=cells.flops / cells.min_bytes,
        flops_per_s=cells.flops / (cells.time_ms / 1e3),
        roofline_frac=cells.get("roofline_frac", np.nan),
    )
    return out[POINT_COLUMNS].reset_index(drop=True)


def _with_fraction(df):
    """The ok cells whose roofline_frac and floor_ms are positive numbers."""
    if df is None or not {"roofline_frac", "floor_ms"} <= set(df.columns):
        return None
    cells = ok(df)
    return cells[(cells.roofline_frac > 0) & (cells.floor_ms > 0)]


def at_common_length(df, limits=None):
    """Per (mode, dtype), each length sweep's cell at the longest length at which every sweep of that mode and
    dtype with a roofline_frac has one (the longest common length): a list of dicts, each with the sweep (model,
    label, options), the length, the fraction and its floor and time, the binding roof (None without the
    limits) and, for one cell with its repeats, the range of the fraction over its median's order-statistic
    interval (repeat_range) and the number of repeats."""
    cells, out = _with_fraction(df), []
    if cells is None or cells.empty:
        return out
    for mode, dtype in analysis.modes_dtypes(cells):
        sweeps = {}
        for model in analysis.ordered_models(cells.model):
            for label, rows in analysis.model_sweeps(cells, model, mode=mode, dtype=dtype).items():
                sweeps[label] = (model, rows)
        common = set.intersection(*(set(rows.seq_len) for _, rows in sweeps.values())) if sweeps else set()
        if not common:
            continue
        length = max(common)
        for label, (model, rows) in sweeps.items():
            here = rows[rows.seq_len == length]
            out.append(_cell(here, model=model, label=label, mode=mode, dtype=dtype, length=length, limits=limits))
    return out


def _cell(rows, *, model, label, mode, dtype, length, limits):
    """One sweep's fraction at `length`: its one cell's, or the median of its cells' (then no repeat range)."""
    frac, floor = rows.roofline_frac.median(), rows.floor_ms.median()
    found = binding(rows.flops.median(), rows.min_bytes.median(), dtype, limits) if "min_bytes" in rows else None
    repeat_range, repeats = None, 0
    if len(rows) == 1:
        row = rows.iloc[0].to_dict()
        try:
            times = refine.times_of(row)
        except ValueError:  # findings.compute names the cell; here it only has no range
            times = None
        # the range only where the fraction was taken against time_ms (on CUDA it may be against the GPU's time)
        if times and math.isclose(floor / frac, row["time_ms"], rel_tol=1e-3):
            low_ms, high_ms = median_order_interval(times)
            repeat_range, repeats = (floor / high_ms, floor / low_ms), len(times)
    return dict(
        mode=mode,
        dtype=dtype,
        model=model,
        label=label,
        options=label.removeprefix(model).strip(),
        seq_len=int(length),
        roofline_frac=float(frac),
        floor_ms=float(floor),
        time_ms=float(floor / frac),
        binding=found,
        repeat_range=repeat_range,
        repeats=repeats,
    )


def floor_text(cell):
    """ "compute-bound: floor 41.9 ms (memory 0.52 ms) vs time 52.3 ms", or without limits "floor ... vs ..."."""
    vs = f"floor {ms_text(cell['floor_ms'])} ms vs time {ms_text(cell['time_ms'])} ms"
    if cell["binding"] is None:
        return f"{vs} (binding roof unknown: no limits in env.json)"
    roof, compute_ms, memory_ms = cell["binding"]
    other = f"memory {memory_ms:.3g} ms" if roof == "compute" else f"compute {compute_ms:.3g} ms"
    return f"{roof}-bound: {vs} ({other})"


def finding_rows(cells):
    """findings.csv's roofline_frac rows of at_common_length's cells: value the fraction, no interval (one cell
    against limits measured once), detail the length, the binding roof, floor vs time and the repeats' range."""
    out = []
    for c in cells:
        span = f"at seq_len {c['seq_len']}"
        if c["repeat_range"] is None:
            noise = "no interval: one cell against limits measured once"
        else:
            low, high = c["repeat_range"]
            noise = (
                f"no interval: one cell against limits measured once (its {c['repeats']} repeats alone: "
                f"{low:.3f}..{high:.3f}, its median's order-statistic interval; the limits' noise not in it)"
            )
        detail = "; ".join(p for p in (c["options"], span, floor_text(c), noise) if p)
        out.append(
            analysis.finding_row(
                FINDING,
                c["model"],
                "",
                c["roofline_frac"],
                None,
                None,
                unit="fraction",
                detail=detail,
                options=c["options"],
                span=span,
                mode=c["mode"],
                dtype=c["dtype"],
            )
        )
    return out


def compute(df, limits=None):
    """findings.csv's roofline_frac rows of a scaling frame (finding_row's columns), none without the columns."""
    return finding_rows(at_common_length(df, limits))


def above_roof(df, threshold=ABOVE):
    """The ok cells whose roofline_frac exceeds `threshold`, as scaling.csv holds them (empty without the column)."""
    cells = _with_fraction(df)
    if cells is None:
        return pd.DataFrame()
    return cells[cells.roofline_frac > threshold]


def stage_fractions(ops):
    """Per profiled cell (model, mode, dtype, seq_len) and category: its fraction of its binding roof, the larger
    of peak_frac and bandwidth_frac (binding: compute or memory), with the category's share of the step's time.
    Empty where op_breakdown.csv has neither column filled in."""
    columns = ["model", "mode", "dtype", "seq_len", "category", "fraction", "binding", "share"]
    have = [c for c in ("peak_frac", "bandwidth_frac") if ops is not None and c in ops.columns]
    rows = ok(ops) if have else None
    if rows is None or rows[have].isna().all().all():
        return pd.DataFrame(columns=columns)
    rows = rows[rows.category != ""]
    key = ["model", "mode", "dtype", "seq_len"]
    out = rows.groupby([*key, "category"], sort=False)[[*have, "time_ms"]].median().reset_index()
    out["share"] = out.time_ms / out.groupby(key).time_ms.transform("sum")
    compute = out.get("peak_frac", pd.Series(np.nan, index=out.index))
    memory = out.get("bandwidth_frac", pd.Series(np.nan, index=out.index))
    out["fraction"] = np.fmax(compute, memory)
    out["binding"] = np.where(memory.fillna(-1) > compute.fillna(-1), "memory", "compute")
    return out[out.fraction.notna()][columns]
