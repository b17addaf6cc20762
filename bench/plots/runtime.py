"""Figures of op_breakdown.csv, decode.csv and numerics.csv."""

from bench.analysis import ok, ordered_models, summaries
from bench.plots.style import (
    CATEGORY_COLOURS,
    METHOD_STYLES,
    _axes,
    _data,
    _finish,
    _log2_axis,
    _log_y,
    _save,
    _tokens,
    colour,
    look,
    note,
)


def plot_ops(source, out_path):
    """Op breakdown: a stacked bar of category shares per (model, mode, seq_len), total time on top."""
    df = _data(source, "op_breakdown.csv", "op breakdown")
    if df is None:
        return None
    shares = summaries.op_shares(df)
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
        ax.bar(
            range(len(bars)),
            heights,
            bottom=bottom,
            color=CATEGORY_COLOURS.get(category, colour(category)),
            label=category,
            edgecolor="white",
            linewidth=0.5,
        )
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    if "time_ms" in shares:
        totals = shares.groupby(["model", "mode", "seq_len"]).time_ms.sum()
        for i, b in enumerate(bars.itertuples(index=False)):
            ax.annotate(
                f"{totals[tuple(b)]:,.0f} ms",
                (i, 1.0),
                xytext=(0, 2),
                textcoords="offset points",
                ha="center",
                fontsize=7,
            )
    ax.set_xticks(
        range(len(bars)), [f"{m}\n{mo} {_tokens(L)}" for m, mo, L in bars.itertuples(index=False)], fontsize=8
    )
    for tick, model in zip(ax.get_xticklabels(), bars.model, strict=True):
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
    panels = (
        ("time_per_token_ms", "time per new token (ms)", "Time per new token"),
        ("state_mb", "decoding state (MiB)", "State held while decoding"),
        ("peak_mem_mb", "working memory (MiB)", "Extra memory of one new token (beyond state)"),
    )
    multi = rows.dtype.nunique() > 1 if "dtype" in rows else False
    for ax, (value, ylabel, title) in zip([axes[0], axes[2], axes[3]], panels, strict=True):
        lines = rows.dropna(subset=[value]) if value in rows else rows.iloc[:0]
        for (model, method, dtype), g in lines.groupby(["model", "method", "dtype"], sort=False):
            g = g.groupby("prompt_len")[value].median()
            ax.plot(
                g.index,
                g.values,
                linestyle=METHOD_STYLES.get(method, "-."),
                label=f"{model} {method}" + (f" {dtype}" if multi else ""),
                **look(model),
            )
        if not ax.lines:
            ax.set_axis_off()
            continue
        _log2_axis(ax, rows.prompt_len, label="prompt length (tokens)")
        _log_y(ax, ylabel)
        _finish(ax, title, loc=None)  # one legend for the figure, below
    speed = summaries.decode_speedup(df)
    ax = axes[1]
    for (model, method), g in speed.groupby(["model", "method"], sort=False) if not speed.empty else []:
        g = g.groupby("prompt_len").speedup.median()
        ax.plot(g.index, g.values, linestyle=METHOD_STYLES[method], label=f"{model} {method}", **look(model))
    if ax.lines:
        ax.axhline(1.0, color="gray", linewidth=1)
        _log2_axis(ax, speed.prompt_len, label="prompt length (tokens)")
        _log_y(ax, "reforward time / stepping time (×)")
        _finish(ax, "Speed-up per token over re-running the prefix", loc=None)
    else:
        ax.set_axis_off()
    legend = {label: handle for a in axes for handle, label in zip(*a.get_legend_handles_labels(), strict=True)}
    fig.legend(legend.values(), legend.keys(), loc="outside right upper", title="model, method", fontsize=9)
    return _save(fig, out_path)


def plot_numerics(source, out_path):
    """Relative error of low-precision output (and gradient) vs seq_len, a row per dtype, a line per model."""
    df = _data(source, "numerics.csv", "numerics")
    if df is None:
        return None
    rows = ok(df).query("dtype != 'float64'")  # the reference against itself: exactly zero, nothing to draw on log axes
    dtypes = list(dict.fromkeys(rows.dtype))
    errors = [c for c in ("out_rel_err", "grad_rel_err") if c in rows and (rows[c] > 0).any()]
    if not errors:
        return note("skipped numerics: no relative errors in numerics.csv")
    fig, axes = _axes(len(errors), rows=len(dtypes), width=5.4, height=3.8)
    for ax, (dtype, error) in zip(axes, [(d, e) for d in dtypes for e in errors], strict=True):
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
