"""Figures of a run, from its CSVs alone (pandas + matplotlib, no torch), then its REPORT.md.

    python -m bench.plots RUN_DIR [--out DIR]      # default DIR: plots/<run_id>/ (mirrors results/...)

The only module that imports matplotlib. Every plot_xxx(df_or_run_dir, out_path, ...) returns the PNG written,
or None (with a note on stderr) when its CSV is absent or has no ok rows.
"""

import argparse
import math
import sys
import zlib
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import pandas as pd  # noqa: E402
from matplotlib.colors import to_rgb  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullLocator  # noqa: E402

from bench import analysis, report  # noqa: E402
from bench.analysis import ok, ordered_models  # noqa: E402
from bench.results import ResultsError  # noqa: E402

DPI = 130
MODEL_COLOURS = {"gss": "#1f77b4", "gss-direct": "#9467bd", "conv": "#2ca02c", "attention": "#d62728"}
FALLBACK_COLOURS = ("#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f")
CATEGORY_COLOURS = {"dss_kernel": "#1f77b4", "fft_conv": "#aec7e8", "direct_conv": "#9467bd", "projection": "#ff7f0e",
                    "norm": "#2ca02c", "attention": "#d62728", "backward": "#8c564b", "other": "#c7c7c7"}
MODEL_MARKERS = {"gss": ("o", 8, 3.6), "gss-direct": ("s", 6.5, 2.6), "conv": ("^", 5.5, 1.7),  # marker, size, width
                 "attention": ("D", 4, 1.2)}
STYLES = ("-", "--", ":", "-.")
METHOD_STYLES = {"recurrent": "-", "kv_cache": "--", "reforward": ":"}
MODE_TITLES = {"fwd": "forward", "fwdbwd": "forward + backward"}


def colour(model):
    """One fixed colour per model in every figure; unknown names get a stable one from their hash."""
    return MODEL_COLOURS.get(model) or FALLBACK_COLOURS[zlib.crc32(model.encode()) % len(FALLBACK_COLOURS)]


def look(model):
    """Colour, marker and width of a model's lines: sizes shrink in drawing order, so equal values stay visible."""
    marker, size, width = MODEL_MARKERS.get(model, ("v", 5, 1.5))
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
        note(f"skipped {figure}: {name} {'absent' if df is None else 'has no ok rows'}")
        return None
    return df


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


def _number(v, _=None):
    return f"{v:,.0f}" if v >= 10 else f"{v:g}"


def _log2_axis(ax, values, *, label, fmt=_tokens):
    """log2 x axis ticked at the values measured (powers of two read as 512, 1K, 8K)."""
    ax.set_xscale("log", base=2)
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
        shown = ((1.5, 2, 2.5, 3, 4, 5, 6, 8) if span < 4 else (2, 3, 5, 7) if span < 10
                 else (2, 5) if span < 100 else ())
        return _number(v) if mantissa in shown else ""
    ax.set_yscale("log")
    ax.yaxis.set_minor_locator(LogLocator(subs=(1.5, 2, 2.5, 3, 4, 5, 6, 7, 8, 9)))
    ax.yaxis.set_major_formatter(FuncFormatter(_number))
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


def _mark_failed(ax, rows, *, model, k):
    """An x per failed length of a sweep along the bottom of the axes, in the model's colour."""
    for length, status in rows[rows.status != "ok"].groupby("seq_len").status.first().items():
        y = 0.04 + 0.08 * k
        ax.plot([length], [y], transform=ax.get_xaxis_transform(), marker="x", ms=8, mew=2, color=colour(model),
                linestyle="none", clip_on=False)
        ax.annotate(f"{model} {status}", (length, y), xycoords=ax.get_xaxis_transform(), xytext=(0, 6),
                    textcoords="offset points", fontsize=7, color=colour(model), ha="center")


def _dtypes(df, mode):
    """dtypes with ok rows in a mode, float32 first (drawn solid)."""
    return sorted(set(ok(df)[ok(df)["mode"] == mode].dtype), key=lambda d: (d != "float32", d))


def _sweep_lines(ax, df, *, mode, dtypes, value, err=None, slope=False, mark=True):
    """Each model's length sweep of `value` (one line style per dtype); returns the lengths shown."""
    lengths, models = [], ordered_models(df.model)
    for j, dtype in enumerate(dtypes):
        for k, model in enumerate(models):
            rows = analysis.sweep_rows(df, model, mode=mode, dtype=dtype)
            good = ok(rows).dropna(subset=[value])
            if good.empty:
                continue
            s = good.groupby("seq_len")[[value] + ([err] if err else [])].median()
            label = model + (f" {dtype}" if len(dtypes) > 1 else "")
            fit = analysis.fitted_slope(s[value]) if slope else None
            label += f" (slope {fit:.2f})" if fit is not None else ""
            yerr = (s[err] / 2).clip(upper=0.9 * s[value]) if err else None
            ax.errorbar(s.index, s[value], yerr=yerr, linestyle=STYLES[j % 4], capsize=2, label=label, **look(model))
            if mark:
                _mark_failed(ax, rows, model=model, k=k)
            lengths += list(rows.seq_len)
    return lengths


def plot_time(source, out_path, *, mode, dtype="float32"):
    """Time per step vs seq_len, log-log, each model's sweep with its fitted slope, and the gss/attention crossover."""
    df = _data(source, "scaling.csv", f"time {mode} {dtype}")
    if df is None:
        return None
    fig, (ax,) = _axes(width=7.2)
    lengths = _sweep_lines(ax, df, mode=mode, dtypes=[dtype], value="time_ms", err="time_iqr_ms", slope=True)
    if not lengths:
        return note(f"skipped time {mode} {dtype}: no ok sweep")
    gss, att = (analysis.length_series(df, m, mode=mode, dtype=dtype) for m in ("gss", "attention"))
    cross = analysis.crossover(gss, att) if len(gss) and len(att) else None
    if cross:
        ax.axvline(cross, color="black", linestyle="--", linewidth=1)
        ax.annotate(f"crossover ≈ {cross:,.0f}:\ngss faster than\nattention above", (cross, 0.97),
                    xycoords=ax.get_xaxis_transform(), xytext=(-6, 0), textcoords="offset points", va="top", ha="right",
                    fontsize=8, bbox=dict(facecolor="white", edgecolor="none", alpha=0.8))
    _log2_axis(ax, lengths, label="sequence length (tokens)")
    _log_y(ax, "time per step (ms, median; bars: IQR)")
    _finish(ax, f"Time per {MODE_TITLES.get(mode, mode)} step, {dtype} ({_context(ok(df))})", loc="outside")
    ax.get_legend().set_title("model (log-log slope, upper half)", prop=dict(size=8))
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
    for ax, value, ylabel, title in ((axes[0], "flops", "FLOPs per step", "Counted FLOPs"),
                                     (axes[1], "tflops_per_s", "achieved TFLOP/s", "Achieved throughput")):
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
    modes = [m for m in analysis.MODES if m in set(rows["mode"])] or sorted(set(rows["mode"]))
    fig, axes = _axes(len(modes), width=5.4)
    for ax, mode in zip(axes, modes):
        part = rows[rows["mode"] == mode]
        dtypes, order = _dtypes(part, mode), ordered_models(part.model)
        groups = sorted(part.groupby(["model", "dtype", *by]), key=lambda kv: (
            order.index(kv[0][0]), dtypes.index(kv[0][1]), [v != "true" for v in kv[0][2:]]))
        for key, line in groups:
            model, dtype, *rest = key
            label = " ".join([model, *([dtype] if len(dtypes) > 1 else []), *(f"{c}={v}" for c, v in zip(by, rest))])
            style = STYLES[0 if not rest or rest[0] in ("true", "") else 1]
            ax.plot(line.x, line.time_ms, linestyle=style, label=label, **{
                **look(model), "color": shade(model, dtypes.index(dtype), len(dtypes)), "linewidth": 1.8, "ms": 6})
        full = set(part[part.x == part.seq_len].x) if option == "conv_kernel" else set()
        fmt = (lambda v, full=full: _tokens(v) + ("\n(full)" if v in full else ""))  # bound now: drawn at save
        _log2_axis(ax, part.x, label=xlabel, fmt=fmt)
        _log_y(ax, "time per step (ms)")
        lengths = "/".join(_tokens(v) for v in sorted(set(part.seq_len)))
        _finish(ax, f"{what}: {MODE_TITLES.get(mode, mode)}, seq_len {lengths}", loc="upper left")
    return _save(fig, out_path)


def plot_kernel_n(source, out_path):
    """Time vs DSS state size kernel_N at one length, per mode, a line per lambda_imag_exp."""
    return _ablation(source, out_path, option="kernel_N", by=["lambda_imag_exp"], xlabel="DSS state size kernel_N",
                     what="Time vs kernel_N")


def plot_conv_kernel(source, out_path):
    """Time vs convolution taps at one length, per mode, a line per model."""
    return _ablation(source, out_path, option="conv_kernel", by=[], xlabel="convolution taps conv_kernel",
                     what="Time vs taps")


def _lines(ax, stats, *, x, band=False):
    """A line per label of a seed-stats frame (mean, std), in its model's colour; a model's variants in shades."""
    order = {m: i for i, m in enumerate(ordered_models(stats.model))}
    labels = sorted(stats.groupby("label", sort=False).model.first().items(), key=lambda lm: (order[lm[1]], lm[0]))
    for label, model in labels:
        same = [lb for lb, m in labels if m == model]
        g, i = stats[stats.label == label].sort_values(x), same.index(label)
        kw = {**look(model), "color": shade(model, i, len(same)), "linestyle": STYLES[i % 4], "label": label}
        if len(same) > 1:  # variants differ by shade and dash; thick lines would hide the dashes
            kw.update(linewidth=1.8, ms=5)
        if band:
            ax.plot(g[x], g["mean"], **{**kw, "marker": None})
            low, high = g["mean"] - g["std"], g["mean"] + g["std"]
            ax.fill_between(g[x], low, high, color=kw["color"], alpha=0.15, linewidth=0)
        else:
            ax.errorbar(g[x], g["mean"], yerr=g["std"], capsize=2, **kw)


def _per_corpus(stats, out_path, draw, *, what, width=6.0):
    """One panel per corpus; None (with a note) when nothing is left to draw."""
    if stats.empty:
        return note(f"skipped {what}: no ok rows to compare")
    corpora = list(dict.fromkeys(stats.corpus))
    fig, axes = _axes(len(corpora), width=width)
    for ax, corpus in zip(axes, corpora):
        draw(ax, stats[stats.corpus == corpus], f"corpus {corpus}" if corpus else "")
    return _save(fig, out_path)


def _floor(ax, stats):
    floor = stats["floor"].dropna() if "floor" in stats else []
    if len(floor):
        ax.axhline(floor.iloc[0], color="black", linestyle="--", linewidth=1,
                   label=f"entropy floor {floor.iloc[0]:.3f}")


def plot_bpb(source, out_path):
    """bits/byte at the training length per model (bar: mean ± std over seeds), with the corpus's entropy floor."""
    df = _data(source, "perplexity.csv", "bits/byte")
    if df is None:
        return None

    def draw(ax, s, corpus):
        s = s.reset_index(drop=True)
        variant = s.groupby("model").cumcount()
        colours = [shade(m, i, (s.model == m).sum()) for m, i in zip(s.model, variant)]
        ax.bar(s.index, s["mean"], yerr=s["std"], capsize=3, color=colours)
        for i, r in s.iterrows():
            ax.annotate(f"{r['mean']:.3f}\n±{r['std']:.3f}", (i, r["mean"] + r["std"]), xytext=(0, 2),
                        textcoords="offset points", ha="center", fontsize=7)
        ax.set_xticks(s.index, s.label, rotation=25 if len(s) > 3 else 0, ha="right" if len(s) > 3 else "center")
        _floor(ax, s)
        ax.set_ylim(0, 1.18 * (s["mean"] + s["std"]).max())
        ax.set_ylabel("bits/byte on held-out text (lower is better)")
        seeds = f"{s.n.iloc[0]} seeds" if s.n.nunique() == 1 else "seeds"
        _finish(ax, f"Bits/byte at the training length, {corpus}\n(mean ± std over {seeds})", loc="lower right")
    return _per_corpus(analysis.bpb_table(df), out_path, draw, what="bits/byte", width=5.2)


def plot_lambda(source, out_path):
    """Paired lambda_imag_exp true vs false bits/byte per (model, kernel_N), mean ± std over seeds, with the delta."""
    df = _data(source, "perplexity.csv", "lambda_imag_exp ablation")
    deltas = analysis.lambda_deltas(df) if df is not None else None
    if deltas is None or deltas.empty:
        return note("skipped lambda_imag_exp ablation: no paired true/false trainings") if df is not None else None

    def draw(ax, s, corpus):
        s = s.reset_index(drop=True)
        for i, r in s.iterrows():
            c = colour(r.model)
            ax.plot([i - 0.12, i + 0.12], [r.true_mean, r.false_mean], color=c, linewidth=1, alpha=0.5)
            for off, which, marker in ((-0.12, "true", "o"), (0.12, "false", "s")):
                ax.errorbar([i + off], [r[f"{which}_mean"]], yerr=[r[f"{which}_std"]], marker=marker, ms=7, capsize=3,
                            color=c, mfc="white" if which == "false" else c,
                            label=f"lambda_imag_exp={which}" if i == 0 else None)
            top = max(r.true_mean + r.true_std, r.false_mean + r.false_std)
            ax.annotate(f"Δ {r.delta_mean:+.3f} ± {r.delta_std:.3f}", (i, top), xytext=(0, 6),
                        textcoords="offset points", ha="center", fontsize=8)
        ax.set_xticks(s.index, [f"{m} N={n}" if n else m for m, n in zip(s.model, s.kernel_N)])
        ax.set_xlim(-0.6, len(s) - 0.4)
        ax.margins(y=0.25)
        ax.set_ylabel("bits/byte at the training length (lower is better)")
        _finish(ax, f"lambda_imag_exp ablation, {corpus}\n(paired by seed; Δ = true − false, mean ± std)")
    return _per_corpus(deltas, out_path, draw, what="lambda_imag_exp ablation")


def plot_curves(source, out_path):
    """Training loss vs step per model, mean over seeds with a ± std band."""
    df = _data(source, "train_curve.csv", "training curves")
    if df is None:
        return None

    def draw(ax, s, corpus):
        _lines(ax, s, x="step", band=True)
        ax.set_xlabel("training step")
        ax.set_ylabel("training loss (nats/byte)")
        ax.grid(True, alpha=0.3)
        _finish(ax, f"Training loss, {corpus} (mean over seeds, band ± std)", loc="upper right")
    return _per_corpus(analysis.curve_stats(df), out_path, draw, what="training curves")


def plot_length_generalisation(source, out_path):
    """bits/byte vs eval length / train length per model."""
    df = _data(source, "perplexity.csv", "length generalisation")
    if df is None:
        return None
    floors = analysis.bpb_table(df).groupby("corpus")["floor"].first()

    def draw(ax, s, corpus):
        _lines(ax, s, x="ratio")
        _floor(ax, s.assign(floor=s.corpus.map(floors)))
        _log2_axis(ax, s.ratio, label="evaluation length / training length", fmt=lambda v: f"{v:g}×")
        ax.set_ylabel("bits/byte (mean ± std over seeds)")
        ax.grid(True, alpha=0.3)
        _finish(ax, f"Length generalisation, {corpus}")
    return _per_corpus(analysis.length_generalisation(df), out_path, draw, what="length generalisation")


def plot_recall(source, out_path):
    """Associative-recall accuracy vs seq_len per model, with chance level."""
    df = _data(source, "recall.csv", "recall")
    if df is None:
        return None
    stats = analysis.recall_stats(df)
    fig, (ax,) = _axes()
    _lines(ax, stats, x="seq_len")
    if "vocab" in df and ok(df).vocab.notna().any():
        ax.axhline(1 / ok(df).vocab.max(), color="gray", linestyle=":", label="chance (1/vocab)")
    _log2_axis(ax, stats.seq_len, label="sequence length (tokens)")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("accuracy (mean ± std over seeds)")
    ax.grid(True, alpha=0.3)
    _finish(ax, "Associative recall", loc="lower left")
    return _save(fig, out_path)


def plot_ops(source, out_path):
    """Op breakdown: a stacked bar of category shares per (model, mode, seq_len), total time on top."""
    df = _data(source, "op_breakdown.csv", "op breakdown")
    if df is None:
        return None
    shares = analysis.op_shares(df)
    bars = shares[["model", "mode", "seq_len"]].drop_duplicates()
    order = {m: i for i, m in enumerate(ordered_models(bars.model))}
    bars = bars.sort_values(["mode", "seq_len"]).sort_values("model", key=lambda s: s.map(order), kind="stable")
    categories = [c for c in CATEGORY_COLOURS if c in set(shares.category)]
    categories += sorted(set(shares.category) - set(categories))
    fig, (ax,) = _axes(width=max(6.0, 0.55 * len(bars) + 2.5))
    bottom = [0.0] * len(bars)
    for category in categories:
        part = shares[shares.category == category].set_index(["model", "mode", "seq_len"]).share
        heights = [part.get(tuple(b), 0.0) for b in bars.itertuples(index=False)]
        ax.bar(range(len(bars)), heights, bottom=bottom, color=CATEGORY_COLOURS.get(category, colour(category)),
               label=category, edgecolor="white", linewidth=0.5)
        bottom = [b + h for b, h in zip(bottom, heights)]
    if "time_ms" in shares:
        totals = shares.groupby(["model", "mode", "seq_len"]).time_ms.sum()
        for i, b in enumerate(bars.itertuples(index=False)):
            ax.annotate(f"{totals[tuple(b)]:,.0f} ms", (i, 1.0), xytext=(0, 2), textcoords="offset points",
                        ha="center", fontsize=7)
    ax.set_xticks(range(len(bars)), [f"{m}\n{mo} {_tokens(L)}" for m, mo, L in bars.itertuples(index=False)],
                  fontsize=8)
    for tick, model in zip(ax.get_xticklabels(), bars.model):
        tick.set_color(colour(model))
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("share of step time (total above each bar)")
    handles, labels = ax.get_legend_handles_labels()  # reversed: top of the legend = top of the stack
    ax.legend(handles[::-1], labels[::-1], loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, title="category")
    ax.set_title("Where the time goes (profiler categories)")
    return _save(fig, out_path)


def plot_decode(source, out_path):
    """Decoding: time per token and memory vs prompt length per model/method, and the speed-up of stepping."""
    df = _data(source, "decode.csv", "decode")
    if df is None:
        return None
    rows = ok(df)
    fig, axes = _axes(2, rows=2, width=5.8, height=4.0)
    panels = (("time_per_token_ms", "time per new token (ms)"), ("state_mb", "decoding state (MiB)"),
              ("peak_mem_mb", "peak memory (MiB)"))
    multi = rows.dtype.nunique() > 1 if "dtype" in rows else False
    for ax, (value, ylabel) in zip([axes[0], axes[2], axes[3]], panels):
        lines = rows.dropna(subset=[value]) if value in rows else rows.iloc[:0]
        for (model, method, dtype), g in lines.groupby(["model", "method", "dtype"], sort=False):
            g = g.groupby("prompt_len")[value].median()
            ax.plot(g.index, g.values, linestyle=METHOD_STYLES.get(method, "-."),
                    label=f"{model} {method}" + (f" {dtype}" if multi else ""), **look(model))
        if not ax.lines:
            ax.set_axis_off()
            continue
        _log2_axis(ax, rows.prompt_len, label="prompt length (tokens)")
        _log_y(ax, ylabel)
        _finish(ax, ylabel[0].upper() + ylabel[1:].split(" (")[0], loc="upper left")
    speed = analysis.decode_speedup(df)
    ax = axes[1]
    for (model, method), g in (speed.groupby(["model", "method"], sort=False) if not speed.empty else []):
        g = g.groupby("prompt_len").speedup.median()
        ax.plot(g.index, g.values, linestyle=METHOD_STYLES[method], label=f"{model} {method}", **look(model))
    if ax.lines:
        ax.axhline(1.0, color="gray", linewidth=1)
        _log2_axis(ax, speed.prompt_len, label="prompt length (tokens)")
        _log_y(ax, "reforward time / stepping time (×)")
        _finish(ax, "Speed-up per token over re-running the prefix", loc="upper left")
    else:
        ax.set_axis_off()
    return _save(fig, out_path)


def plot_numerics(source, out_path):
    """Relative error of low-precision output (and gradient) vs seq_len, a row per dtype, a line per model."""
    df = _data(source, "numerics.csv", "numerics")
    if df is None:
        return None
    rows = ok(df)
    dtypes = list(dict.fromkeys(rows.dtype))
    errors = [c for c in ("out_rel_err", "grad_rel_err") if c in rows and rows[c].notna().any()]
    if not errors:
        return note("skipped numerics: no relative errors in numerics.csv")
    fig, axes = _axes(len(errors), rows=len(dtypes), width=5.4, height=3.8)
    for ax, (dtype, error) in zip(axes, [(d, e) for d in dtypes for e in errors]):
        part = rows[(rows.dtype == dtype)].dropna(subset=[error])
        for model in ordered_models(part.model):
            g = part[part.model == model].groupby("seq_len")[error].max()
            ax.plot(g.index, g.values, label=model, **look(model))
        _log2_axis(ax, rows.seq_len, label="sequence length (tokens)")
        ax.set_yscale("log")
        ax.set_ylabel("relative error vs reference")
        ax.grid(True, alpha=0.3)
        _finish(ax, f"{dtype}: {'output' if error == 'out_rel_err' else 'gradient'} relative error", loc="upper left")
    return _save(fig, out_path)


def render_all(run_dir, out_dir):
    """Every figure the run's CSVs allow; returns the PNGs written."""
    out_dir, written = Path(out_dir), []
    scaling = analysis.load_scaling(run_dir)
    if scaling is None or ok(scaling).empty:
        note(f"skipped scaling figures: scaling.csv {'absent' if scaling is None else 'has no ok rows'}")
    else:
        pairs = analysis.modes_dtypes(scaling)
        written += [plot_time(scaling, out_dir / f"time_{m}_{d}.png", mode=m, dtype=d) for m, d in pairs]
        for mode in dict.fromkeys(m for m, _ in pairs):
            written += [plot_memory(scaling, out_dir / f"memory_{mode}.png", mode=mode),
                        plot_flops(scaling, out_dir / f"flops_{mode}.png", mode=mode)]
        written += [plot_kernel_n(scaling, out_dir / "ablation_kernel_N.png"),
                    plot_conv_kernel(scaling, out_dir / "ablation_conv_kernel.png")]
    for name, plot in FIGURES.items():
        written.append(plot(run_dir, out_dir / name))
    return [p for p in written if p is not None]


FIGURES = {"lm_bits_per_byte.png": plot_bpb, "lm_lambda_imag_exp.png": plot_lambda, "lm_train_curves.png": plot_curves,
           "lm_length_generalisation.png": plot_length_generalisation, "recall.png": plot_recall,
           "op_breakdown.png": plot_ops, "decode.png": plot_decode, "numerics.png": plot_numerics}


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not usage + message
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2)


def main(argv=None):
    p = _Parser(prog="python -m bench.plots", description="Figures and REPORT.md of a run, from its CSVs.")
    p.add_argument("run_dir")
    p.add_argument("--out", help="figure directory (default: plots/<run_id>/, mirroring results/)")
    args = p.parse_args(argv)
    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        p.error(f"{run_dir}: no such run directory")
    out_dir = Path(args.out) if args.out else report.default_plots_dir(run_dir)
    try:
        written = render_all(run_dir, out_dir)
        for path in written:
            print(path)
        print(report.write_report(run_dir, plots_dir=out_dir))
    except (ResultsError, OSError) as error:
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
