"""Scaling findings computed from the CSVs alone (pandas, no torch): length sweeps, slopes, crossovers, ablations.

Shared by the plots and the report (bench.analysis.summaries holds the trainings, decoding and numerics); a run's
CSVs are read through bench.analysis.load, the one read path, and every CSV fact (columns read, numeric columns,
options, modes, model order, the reference model) comes from bench.schema. Its command (__main__.py,
bench.analysis.findings) writes and prints the findings of runs with their 95% intervals:

    python -m bench.analysis RUN [RUN ...]
"""

import math
from pathlib import Path

import numpy as np
import pandas as pd

from bench import schema, stats
from bench.analysis import refine
from bench.analysis.load import load_csv, load_scaling  # noqa: F401  (load_scaling: the readers' door, from here)
from bench.schema import CROSSOVER_PAIR, MODELS_ORDER, MODES, OPTIONS, TABLES

LENGTHS = tuple(dict.fromkeys(t.length for t in TABLES.values() if t.length))  # every CSV's length column, once each


def finding_row(finding, model, other, value, low, high, *, unit, detail, options="", span="", **columns):
    """One finding in findings.csv's columns (`columns`: mode and dtype where the caller knows them), then its
    `options` and `span`, the parts of detail that say which sweep or training and which lengths (the pooling of
    runs joins on them)."""
    return dict(
        finding=finding,
        **columns,
        model=model,
        other=other,
        value=value,
        ci_low=low,
        ci_high=high,
        unit=unit,
        detail=detail,
        options=options,
        span=span,
    )


def ok(df):
    """The rows that measured something (every row of a CSV without a status column)."""
    return df[df.status == "ok"] if "status" in df.columns else df


def ordered_models(names):
    """Known models in a fixed order, then any others alphabetically."""
    names = set(names)
    return [m for m in MODELS_ORDER if m in names] + sorted(names - set(MODELS_ORDER))


def modes_dtypes(df):
    """(mode, dtype) pairs with ok rows, fwd before fwdbwd, float32 first."""
    pairs = ok(df)[["mode", "dtype"]].drop_duplicates().itertuples(index=False)
    return sorted(pairs, key=lambda p: (MODES.index(p[0]) if p[0] in MODES else 9, p[1] != "float32", p))


# ---- clocks: which times a comparison reads

# On CUDA a cell may have, besides its eager time_ms (launch-bound for short steps), gpu_ms: the step replayed from a
# CUDA graph, with every replay's time in gpu_times_ms. A comparison (the cells of one (mode, dtype)) reads the
# replays where every one of its cells has them, else the eager times of all: never one clock against the other.
EAGER, GRAPH = "eager", "cuda_graph"
REPLAYED = (
    "clock cuda_graph (gpu_ms): unpaired interval, each cell's replays bootstrapped on its own (the replays of two "
    "cells ran one after the other, not in paired rounds)"
)


def replayed(rows):
    """Boolean Series: the rows with a graph-replayed time and its replays (gpu_ms and gpu_times_ms, CUDA only)."""
    if "gpu_ms" not in rows or "gpu_times_ms" not in rows:
        return pd.Series(False, index=rows.index)
    return pd.to_numeric(rows.gpu_ms, errors="coerce").notna() & rows.gpu_times_ms.astype(str).str.strip().ne("")


def timed_cells(rows):
    """The ok rows with a time: the cells a comparison compares."""
    return ok(rows).dropna(subset=["time_ms"])


def clock(rows):
    """The clock of a comparison of these cells (a (mode, dtype) group): GRAPH where every timed cell has its
    graph-replayed gpu_ms and replays, else EAGER."""
    cells = timed_cells(rows)
    return GRAPH if len(cells) and replayed(cells).all() else EAGER


def on_clock(rows):
    """(rows as the findings read them, clock). On GRAPH, time_ms and times_ms hold gpu_ms and gpu_times_ms and
    gauge_times_ms is empty (the replays have no drift gauge); on EAGER, the rows as they are."""
    found = clock(rows)
    if found == EAGER:
        return rows, found
    return rows.assign(time_ms=rows.gpu_ms, times_ms=rows.gpu_times_ms, gauge_times_ms=""), found


def clock_note(rows):
    """What a finding's detail says of its clock (rows: its (mode, dtype) group): REPLAYED on GRAPH; on EAGER, how
    many cells lack gpu_ms where some have it; "" where none has it (CPU runs, runs from before it)."""
    cells = timed_cells(rows)
    have = int(replayed(cells).sum())
    if not have:
        return ""
    return REPLAYED if have == len(cells) else f"clock eager: {len(cells) - have} of {len(cells)} cells without gpu_ms"


# ---- scaling: length sweeps, slopes, crossovers, ablations


def full_taps(rows):
    """schema.full_taps of each row (its conv_kernel and seq_len), as a boolean Series."""
    return pd.Series(map(schema.full_taps, rows.conv_kernel, rows.seq_len), index=rows.index, dtype=bool)


def _series_key(rows):
    """Cells of one sweep share every option ("a|b|c|d", in OPTIONS order); full taps are one option ("full") at
    every length."""
    full = full_taps(rows)
    key = None
    for option in OPTIONS:
        value = rows[option].where(~full, "full") if option == "conv_kernel" else rows[option]
        key = value if key is None else key + "|" + value
    return key


def _sweep_groups(df, model, *, mode, dtype):
    """A model's length sweeps in (mode, dtype): every option set whose ok cells cover the most lengths
    (ablations hold one length each, so a preset's sweep stands alone; two sweeps of equal reach, as from
    `--kernel-n 64,512`, are both kept), as (key, rows of any status), in the order of the CSV."""
    rows = df[(df.model == model) & (df["mode"] == mode) & (df.dtype == dtype)]
    keys = _series_key(rows)
    good = rows.status == "ok"
    if not good.any():
        return []
    reach = rows[good].groupby(keys[good], sort=False).seq_len.nunique()
    return [(key, rows[keys == key]) for key in reach.index[reach == reach.max()]]


def _label(model, key, keys):
    """The model's name, plus the options that tell its tied sweeps apart."""
    if len(keys) == 1:
        return model
    parts = [k.split("|") for k in keys]
    own = key.split("|")
    return model + "".join(f" {name}={own[i]}" for i, name in enumerate(OPTIONS) if len({p[i] for p in parts}) > 1)


def model_sweeps(df, model, *, mode, dtype="float32"):
    """label -> rows (any status) of each of a model's length sweeps; the label is the model's name alone
    when it has one sweep, else the name and the options that differ, e.g. "gss kernel_N=64"."""
    groups = _sweep_groups(df, model, mode=mode, dtype=dtype)
    keys = [k for k, _ in groups]
    return {_label(model, k, keys): rows for k, rows in groups}


def _series(rows, value):
    rows = ok(rows)
    if not len(rows):
        return pd.Series(dtype=float)
    return rows.groupby("seq_len")[value].median().sort_index()


def fitted_lengths(lengths):
    """The lengths a slope is fitted over: the longest max(3, ceil(n/2)) of n; none when n < 3 (a line through two
    points is no fit). The one rule of the report, the figures and findings.csv."""
    lengths = sorted(lengths)
    return lengths[-max(3, math.ceil(len(lengths) / 2)) :] if len(lengths) >= 3 else []


def fitted_slope(series):
    """Least-squares slope of log(time) against log(seq_len) over fitted_lengths; None below 3 lengths."""
    series = series.dropna()
    series = series[fitted_lengths(series.index)]
    if len(series) < 3:
        return None
    x = [math.log(v) for v in series.index]
    y = [math.log(v) for v in series.values]
    mx, my = sum(x) / len(x), sum(y) / len(y)
    return sum((a - mx) * (b - my) for a, b in zip(x, y, strict=True)) / sum((a - mx) ** 2 for a in x)


def crossover(fast_at_long, slow_at_long, rows=None):
    """The length above which the first series stays faster than the second, interpolated on log-log
    axes between the two measured lengths around it; None when it never does or always did. With `rows`, the two
    sweeps' rows (model_sweeps): where every common length has one ok cell of each with its repeats, the time
    ratio at a length is the median of the paired rounds' ratios (refine.log_ratios), as in findings.csv."""
    common = fast_at_long.index.intersection(slow_at_long.index).sort_values()
    if len(common) < 2:
        return None
    ratio = np.log(fast_at_long[common].to_numpy() / slow_at_long[common].to_numpy())
    cells = [single_cells(r) for r in rows] if rows is not None else None
    if cells and all(L in c for c in cells for L in common):
        ratio = refine.log_ratios(*cells, list(common), resamples=0)[0]
    at = stats.crossover(common.to_numpy(), ratio)
    return None if math.isnan(at[0]) else float(at[0])


def single_cells(rows):
    """{seq_len: row (a dict)} of the lengths where a sweep has exactly one ok cell with a time (the pairs of
    refine.log_ratios; series.LengthSeries.cells)."""
    rows = ok(rows).dropna(subset=["time_ms"])
    return {L: g.iloc[0].to_dict() for L, g in rows.groupby("seq_len") if len(g) == 1}


def crossover_text(a_series, b_series, *, a=CROSSOVER_PAIR[0], b=CROSSOVER_PAIR[1], rows=None):
    """The crossover as a phrase, saying why there is none (rows: as for crossover)."""
    common = a_series.index.intersection(b_series.index).sort_values()
    if len(common) < 2:
        return "not measured (fewer than 2 common lengths)"
    cross = crossover(a_series, b_series, rows)
    if cross is not None:
        return f"{a} faster than {b} above seq_len ≈ {cross:,.0f}"
    if (a_series[common] < b_series[common]).all():
        return f"{a} faster than {b} at every measured length ({common[0]:,}..{common[-1]:,})"
    return f"none: {b} faster at seq_len {common[-1]:,} (longest common length)"


def length_series(df, *, mode, dtype, value="time_ms", models=None):
    """label -> length series of `value` for every length sweep in (mode, dtype) (labels: model_sweeps)."""
    out = {}
    for model in ordered_models(df.model) if models is None else models:
        for label, rows in model_sweeps(df, model, mode=mode, dtype=dtype).items():
            series = _series(rows, value)
            if not series.empty:
                out[label] = series
    return out


def crossovers(df, *, mode, dtype, a=CROSSOVER_PAIR[0], b=CROSSOVER_PAIR[1]):
    """(label of a, label of b, crossover_text) for every pair of their length sweeps in (mode, dtype), on the
    clock of its findings (on_clock: graph-replayed times are not paired rounds, so their medians' ratios)."""
    group, clock = on_clock(df[(df["mode"] == mode) & (df.dtype == dtype)])
    sa, sb = (model_sweeps(group, m, mode=mode, dtype=dtype) for m in (a, b))
    series = {label: _series(rows, "time_ms") for label, rows in (*sa.items(), *sb.items())}
    return [
        (la, lb, crossover_text(series[la], series[lb], a=la, b=lb, rows=(ra, rb) if clock == EAGER else None))
        for la, ra in sa.items()
        for lb, rb in sb.items()
        if not series[la].empty and not series[lb].empty
    ]


def key_lengths(series_by_model):
    """The longest length every model reached, and the longest any did (once when they agree)."""
    if not series_by_model:
        return []
    common = set.intersection(*(set(s.index) for s in series_by_model.values()))
    longest = max(max(s.index) for s in series_by_model.values())
    return sorted({max(common), longest}) if common else [longest]


def at_lengths(df, *, mode, dtype, value):
    """Frame seq_len x model of `value` at the key lengths of the sweeps (NaN where a model did not reach it)."""
    series = length_series(df, mode=mode, dtype=dtype, value=value)
    lengths = key_lengths(series)
    return pd.DataFrame({m: s.reindex(lengths) for m, s in series.items()}, index=pd.Index(lengths, name="seq_len"))


def absent(df, labels, *, mode, dtype, length):
    """ "; X did not reach it; Y not measured at it" for the sweeps (labels) without an ok cell at `length`: failed
    there (an oom or error row of the model), or not in the grid there (a preset may stop a slow model short);
    "" when none is absent."""
    rows = df[(df["mode"] == mode) & (df.dtype == dtype) & (df.seq_len == length) & (df.status != "ok")]
    failed = [lb for lb in labels if lb.split()[0] in set(rows.model)]
    others = [lb for lb in labels if lb not in failed]
    return "".join(
        f"; {', '.join(names)} {what}"
        for names, what in ((failed, "did not reach it"), (others, "not measured at it"))
        if names
    )


def option_ablation(df, option):
    """ok cells that vary `option` at one length, other options fixed: per (model, mode, dtype) the length
    with the most values of it (at least 2); with a numeric column x = the option's value."""
    parts = []
    for _, rows in ok(df).groupby(["model", "mode", "dtype"], sort=False):
        rows = rows[rows[option] != ""]
        counts = rows.groupby("seq_len")[option].nunique()
        if not len(counts) or counts.max() < 2:
            continue
        rows = rows[rows.seq_len == counts.idxmax()]
        fixed = [c for c in OPTIONS if c not in (option, "lambda_imag_exp")]
        common = rows[fixed].value_counts().idxmax()
        parts.append(rows[(rows[fixed] == pd.Series(common, index=fixed)).all(axis=1)])
    if not parts:
        return None
    out = pd.concat(parts)
    return out.assign(x=pd.to_numeric(out[option])).sort_values("x")


def failed_cells(run_dir):
    """Rows whose status is not ok, from every CSV of the run that has a status column."""
    columns, out = ["csv", "model", "mode", "dtype", "seq_len", "options", "status", "error"], []
    for path in sorted(Path(run_dir).glob("*.csv")):
        df = load_csv(run_dir, path.name)
        if df is None or "status" not in df.columns:
            continue
        for _, row in df[df.status != "ok"].iterrows():
            length = next((row[c] for c in LENGTHS if c in row), "")
            options = ", ".join(f"{c}={row[c]}" for c in OPTIONS if c in row and row[c] != "")
            where = (row.get(c, "") for c in ("model", "mode", "dtype"))
            out.append((path.name, *where, length, options, row.status, row.get("error", "")))
    return pd.DataFrame(out, columns=columns)
