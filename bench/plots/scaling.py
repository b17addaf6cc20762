"""Figures of scaling.csv: time, memory and FLOPs against seq_len, and the kernel-size ablations."""

import pandas as pd

from bench import analysis
from bench.analysis import findings, ok, ordered_models
from bench.plots.style import (
    MODE_TITLES,
    STYLES,
    _axes,
    _context,
    _data,
    _dtypes,
    _finish,
    _log2_axis,
    _log_y,
    _save,
    _sweep_lines,
    _tokens,
    look,
    note,
    shade,
)
from bench.report.paper import PAPER_SPEEDUP
from bench.schema import CROSSOVER_PAIR, MODES


def crossover_finding(df, found, *, mode, dtype):
    """(value, ci_low, ci_high) of the crossover of schema.CROSSOVER_PAIR in the findings (analysis.findings; computed
    from df's cells of the pair when found is None: the same finding, each pair of cells' draws being seeded by their
    keys), the interval None where there is none (cells without times_ms); None without such a crossover."""
    fast, slow = CROSSOVER_PAIR
    if found is None:
        found = findings.compute(df[df.model.isin(CROSSOVER_PAIR) & (df["mode"] == mode) & (df.dtype == dtype)])
    rows = found[
        (found.finding == "crossover")
        & (found["mode"] == mode)
        & (found.dtype == dtype)
        & (found.model == fast)
        & (found.other == slow)
    ]
    if len(rows) != 1:
        return None
    r = rows.iloc[0]
    return float(r.value), *((None, None) if pd.isna(r.ci_low) else (float(r.ci_low), float(r.ci_high)))


def plot_time(source, out_path, *, mode, dtype="float32", found=None):
    """Time per step vs seq_len, log-log, each model's sweep with its fitted slope, and the crossover of
    schema.CROSSOVER_PAIR with its 95% interval as a band (found: the run's findings, bench.analysis.findings;
    computed when not given)."""
    df = _data(source, "scaling.csv", f"time {mode} {dtype}")
    if df is None:
        return None
    fig, (ax,) = _axes(width=7.2)
    lengths = _sweep_lines(ax, df, mode=mode, dtypes=[dtype], value="time_ms", err="time_iqr_ms", slope=True)
    if not lengths:
        return note(f"skipped time {mode} {dtype}: no ok sweep")
    fast, slow = (analysis.length_series(df, mode=mode, dtype=dtype, models=[m]) for m in CROSSOVER_PAIR)
    # marked when there is one pair of sweeps; with several, REPORT.md gives each pair's crossover
    cross = crossover_finding(df, found, mode=mode, dtype=dtype) if len(fast) == len(slow) == 1 else None
    if cross:
        cross, *band = cross
        if band[0] is not None:
            ax.axvspan(*band, color="black", alpha=0.12, linewidth=0, zorder=0)
        ax.axvline(cross, color="black", linestyle="--", linewidth=1)
        interval = f"\n(95%: {band[0]:,.0f}..{band[1]:,.0f})" if band[0] is not None else ""
        ax.annotate(
            f"crossover ≈ {cross:,.0f}:\n{CROSSOVER_PAIR[0]} faster than\n{CROSSOVER_PAIR[1]} above{interval}",
            (cross, 0.97),
            xycoords=ax.get_xaxis_transform(),
            xytext=(-6, 0),
            textcoords="offset points",
            va="top",
            ha="right",
            fontsize=8,
            bbox=dict(facecolor="white", edgecolor="none", alpha=0.8),
        )
    _log2_axis(ax, lengths, label="sequence length (tokens)")
    _log_y(ax, "time per step (ms, median; bars: IQR)")
    _finish(ax, f"Time per {MODE_TITLES.get(mode, mode)} step, {dtype} ({_context(ok(df))})", loc="outside")
    ax.get_legend().set_title("model (log-log slope, upper half)", prop=dict(size=8))
    return _save(fig, out_path)


PAPER_LENGTH = 4096  # the GSS paper's training length


def plot_gss_dss(source, out_path, *, found=None):
    """The GSS paper's claim: gss and dss time per step vs seq_len (each mode and dtype), and gss's speed-up over
    dss at each length with its 95% interval (findings.csv's speedup rows, other = dss), beside the paper's 2-3x."""
    df = _data(source, "scaling.csv", "gss vs dss")
    if df is None:
        return None
    found = findings.compute(df[df.model.isin(["gss", "dss"])]) if found is None else found
    rows = findings.speedups(found, "gss", "dss")
    if rows.empty:
        return note("skipped gss vs dss: no length where both were measured")
    fig, (times, ratio) = _axes(2, width=5.6)
    pairs = list(dict.fromkeys(zip(rows["mode"], rows.dtype)))
    spans = rows.span if "span" in rows else rows.detail  # "at seq_len N": a detail may go on after it (a clock)
    lengths = sorted({int(s.split()[-1]) for s in spans})
    for i, (mode, dtype) in enumerate(pairs):
        label = f"{mode} {dtype}" if len({d for _, d in pairs}) > 1 else mode
        for model in ("gss", "dss"):
            line = ok(df[(df.model == model) & (df["mode"] == mode) & (df.dtype == dtype)]).groupby("seq_len").time_ms
            times.plot(
                line.median().index,
                line.median().to_numpy(),
                linestyle=STYLES[i % len(STYLES)],
                label=f"{model} {label}",
                **look(model),
            )
        part = rows[(rows["mode"] == mode) & (rows.dtype == dtype)]
        at = [int(s.split()[-1]) for s in (part.span if "span" in part else part.detail)]
        ratio.errorbar(
            at,
            part.value,
            yerr=[part.value - part.ci_low, part.ci_high - part.value],
            capsize=3,
            linestyle=STYLES[i % len(STYLES)],
            label=label,
            **look("gss"),
        )
    ratio.axhspan(*PAPER_SPEEDUP, color="grey", alpha=0.15, linewidth=0, label="the paper: 2-3x (TPU)")
    ratio.axhline(1.0, color="black", linewidth=0.8)
    for ax in (times, ratio):
        ax.axvline(PAPER_LENGTH, color="grey", linestyle=":", linewidth=1)
        _log2_axis(ax, lengths, label=f"sequence length (tokens; dotted: the paper's {PAPER_LENGTH:,})")
    _log_y(times, "time per step (ms, median)")
    ratio.set_ylim(bottom=0)
    ratio.set_ylabel("speed-up: median of paired dss / gss (95%)")
    ratio.grid(True, which="major", alpha=0.3)
    _finish(times, f"GSS vs DSS ({_context(ok(df))})", loc="upper left")
    _finish(ratio, "GSS's speed-up over DSS", loc="upper left")
    return _save(fig, out_path)


def plot_memory(source, out_path, *, mode):
    """Peak memory vs seq_len, log-log, per model (and dtype)."""
    df = _data(source, "scaling.csv", f"memory {mode}")
    if df is None:
        return None
    fig, (ax,) = _axes()
    lengths = _sweep_lines(ax, df, mode=mode, dtypes=_dtypes(df, mode), value="peak_mem_mb")
    if not lengths:
        return note(f"skipped memory {mode}: no ok sweep")
    _log2_axis(ax, lengths, label="sequence length (tokens)")
    _log_y(ax, "peak memory above baseline (MiB)")
    _finish(ax, f"Peak memory, {MODE_TITLES.get(mode, mode)} ({_context(ok(df))})", loc="outside")
    return _save(fig, out_path)


def plot_flops(source, out_path, *, mode):
    """Counted FLOPs per step and achieved TFLOP/s vs seq_len, two panels."""
    df = _data(source, "scaling.csv", f"flops {mode}")
    if df is None:
        return None
    fig, axes = _axes(2, width=5.6)
    dtypes = _dtypes(df, mode)
    for ax, value, ylabel, title in (
        (axes[0], "flops", "FLOPs per step", "Counted FLOPs"),
        (axes[1], "tflops_per_s", "achieved TFLOP/s", "Achieved throughput"),
    ):
        lengths = _sweep_lines(ax, df, mode=mode, dtypes=dtypes, value=value, mark=False)
        if not lengths:
            return note(f"skipped flops {mode}: no ok sweep")
        _log2_axis(ax, lengths, label="sequence length (tokens)")
        ax.set_yscale("log")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="major", alpha=0.3)
        _finish(ax, f"{title}, {MODE_TITLES.get(mode, mode)}", loc="outside" if value != "flops" else None)
    axes[1].set_yscale("linear")
    axes[1].set_ylim(bottom=0)
    return _save(fig, out_path)


def _ablation(source, out_path, *, option, by, xlabel, what):
    df = _data(source, "scaling.csv", f"{option} ablation")
    rows = analysis.option_ablation(df, option) if df is not None else None
    if rows is None:
        return note(f"skipped {option} ablation: no cells varying {option} at one length") if df is not None else None
    modes = [m for m in MODES if m in set(rows["mode"])] or sorted(set(rows["mode"]))
    fig, axes = _axes(len(modes), width=5.4)
    for ax, mode in zip(axes, modes, strict=True):
        part = rows[rows["mode"] == mode]
        dtypes, order = _dtypes(part, mode), ordered_models(part.model)
        groups = sorted(
            part.groupby(["model", "dtype", *by]),
            key=lambda kv: (order.index(kv[0][0]), dtypes.index(kv[0][1]), [v != "true" for v in kv[0][2:]]),
        )
        for key, line in groups:
            model, dtype, *rest = key
            options = (f"{c}={v}" for c, v in zip(by, rest, strict=True))
            label = " ".join([model, *([dtype] if len(dtypes) > 1 else []), *options])
            style = STYLES[0 if not rest or rest[0] in ("true", "") else 1]
            ax.plot(
                line.x,
                line.time_ms,
                linestyle=style,
                label=label,
                **{**look(model), "color": shade(model, dtypes.index(dtype), len(dtypes)), "linewidth": 1.8, "ms": 6},
            )
        full = set(part.x[analysis.full_taps(part)]) if option == "conv_kernel" else set()

        def fmt(v, full=full):  # full bound now: the ticks are drawn at save, after the loop has moved on
            return _tokens(v) + ("\n(full)" if v in full else "")

        _log2_axis(ax, part.x, label=xlabel, fmt=fmt)
        _log_y(ax, "time per step (ms)")
        lengths = "/".join(_tokens(v) for v in sorted(set(part.seq_len)))
        _finish(ax, f"{what}: {MODE_TITLES.get(mode, mode)}, seq_len {lengths}", loc="upper left")
    return _save(fig, out_path)


def plot_kernel_n(source, out_path):
    """Time vs DSS state size kernel_N at one length, per mode, a line per lambda_imag_exp."""
    return _ablation(
        source,
        out_path,
        option="kernel_N",
        by=["lambda_imag_exp"],
        xlabel="DSS state size kernel_N",
        what="Time vs kernel_N",
    )


def plot_conv_kernel(source, out_path):
    """Time vs convolution taps at one length, per mode, a line per model."""
    return _ablation(
        source, out_path, option="conv_kernel", by=[], xlabel="convolution taps conv_kernel", what="Time vs taps"
    )
