"""Figures of perplexity.csv, train_curve.csv and recall.csv."""

import pandas as pd

from bench import analysis
from bench.analysis import ordered_models, summaries
from bench.plots.style import STYLES, _axes, _data, _finish, _log2_axis, _save, _summary, colour, look, note, shade


def _lines(ax, stats, *, x, band=False, interval=False):
    """A line per label of a seed-stats frame (mean, std), in its model's colour; a model's variants in shades. Bars
    of ± std, or with `interval` the 95% interval over seeds (ci_low..ci_high; none for one seed)."""
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
        elif interval:
            bars = [(g["mean"] - g.ci_low).fillna(0).clip(lower=0), (g.ci_high - g["mean"]).fillna(0).clip(lower=0)]
            ax.errorbar(g[x], g["mean"], yerr=bars, capsize=2, **kw)
        else:
            ax.errorbar(g[x], g["mean"], yerr=g["std"], capsize=2, **kw)


def _per_corpus(stats, out_path, draw, *, what, width=6.0):
    """One panel per corpus; None (with a note) when nothing is left to draw."""
    if stats.empty:
        return note(f"skipped {what}: no ok rows to compare")
    corpora = list(dict.fromkeys(stats.corpus))
    fig, axes = _axes(len(corpora), width=width)
    for ax, corpus in zip(axes, corpora, strict=True):
        draw(ax, stats[stats.corpus == corpus], f"corpus {corpus}" if corpus else "")
    return _save(fig, out_path)


def _floors(ax, stats):
    """The entropy floor (the source's infinite-context rate) and, where recorded, the window floor (the least
    these windows allow a predictor that knows the source's phase; a line over x when it varies with x)."""
    floor = stats["floor"].dropna() if "floor" in stats else []
    if len(floor):
        ax.axhline(
            floor.iloc[0],
            color="black",
            linestyle="--",
            linewidth=1,
            label=f"entropy floor {floor.iloc[0]:.3f} (infinite context)",
        )
    window = stats.dropna(subset=["window_floor"]) if "window_floor" in stats else []
    if len(window) and "ratio" in window:
        w = window.groupby("ratio").window_floor.max()
        ax.plot(
            w.index,
            w.values,
            color="black",
            linestyle=":",
            marker="_",
            ms=14,
            linewidth=1.2,
            label="window floor (the optimum knowing the phase)",
        )
    elif len(window):
        ax.axhline(
            window.window_floor.iloc[0],
            color="black",
            linestyle=":",
            linewidth=1.2,
            label=f"window floor {window.window_floor.iloc[0]:.3f} (the optimum knowing the phase)",
        )


def plot_bpb(source, out_path):
    """Test bits/byte at the training length per model at its selected rate (bar: mean and 95% interval over seeds,
    quality.seed_interval), with the corpus's entropy floor, the window floor and each bar's gap to the window
    floor."""
    df = _data(source, "perplexity.csv", "bits/byte")
    if df is None:
        return None

    def draw(ax, s, corpus):
        s = s.reset_index(drop=True)
        variant = s.groupby("model").cumcount()
        colours = [shade(m, i, (s.model == m).sum()) for m, i in zip(s.model, variant, strict=True)]
        low, high = (s["mean"] - s.ci_low).fillna(0), (s.ci_high - s["mean"]).fillna(0)
        ax.bar(s.index, s["mean"], yerr=[low, high], capsize=3, color=colours)
        for i, r in s.iterrows():
            gap = f"\n{r.window_gap:+.3f} to\nwindow floor" if pd.notna(r.window_gap) else ""
            spread = f"\n{r.ci_low:.3f}..{r.ci_high:.3f}" if pd.notna(r.ci_low) else ""
            ax.annotate(
                f"{r['mean']:.3f}{spread}{gap}",
                (i, r["mean"] + high[i]),
                xytext=(0, 2),
                textcoords="offset points",
                ha="center",
                fontsize=7,
            )
        ax.set_xticks(
            s.index,
            [f"{lb}\nlr {lr}" for lb, lr in zip(s.label, s.lr, strict=True)],
            rotation=25 if len(s) > 3 else 0,
            ha="right" if len(s) > 3 else "center",
        )
        _floors(ax, s)
        ax.set_ylim(0, 1.3 * (s["mean"] + high).max())
        ax.set_ylabel("test bits/byte (lower is better)")
        seeds = f"{s.n.iloc[0]} seeds" if s.n.nunique() == 1 else "seeds"
        _finish(
            ax,
            f"Test bits/byte, {corpus}\n(training length, selected rates, mean and 95% interval over {seeds})",
            loc="lower right",
        )

    return _per_corpus(summaries.bpb_table(df), out_path, draw, what="bits/byte", width=5.2)


def plot_lr_selection(source, out_path):
    """Validation bits/byte against the learning rate (log x), a line per model and option set, the selected rate
    ringed: does the grid bracket each optimum?"""
    curves = _summary(
        source,
        "perplexity.csv",
        "learning-rate selection",
        summaries.val_curves,
        "skipped learning-rate selection: perplexity.csv has no validation rows (one rate per model)",
    )
    if curves is None:
        return None

    def draw(ax, s, corpus):
        _lines(ax, s, x="lr")
        chosen = s[s.selected]
        ax.scatter(
            chosen.lr,
            chosen["mean"],
            s=180,
            facecolors="none",
            edgecolors="black",
            linewidths=1.5,
            zorder=5,
            label="selected rate",
        )
        _log2_axis(ax, s.lr, label="peak learning rate", fmt=lambda v: f"{v:g}", base=10)
        ax.set_ylabel("validation bits/byte (first seed, training length)")
        ax.grid(True, alpha=0.3)
        _finish(
            ax,
            f"Learning-rate selection, {corpus}\n(a selected rate at the edge: the grid may not bracket the optimum)",
            loc="outside",
        )

    return _per_corpus(curves, out_path, draw, what="learning-rate selection", width=7.5)


def plot_lambda(source, out_path):
    """Paired lambda_imag_exp true vs false bits/byte per (model, kernel_N), mean ± std over seeds, with the delta."""
    df = _data(source, "perplexity.csv", "lambda_imag_exp ablation")
    deltas = summaries.lambda_deltas(df) if df is not None else None
    if deltas is None or deltas.empty:
        return note("skipped lambda_imag_exp ablation: no paired true/false trainings") if df is not None else None

    def draw(ax, s, corpus):
        s = s.reset_index(drop=True)
        for i, r in s.iterrows():
            c = colour(r.model)
            ax.plot([i - 0.12, i + 0.12], [r.true_mean, r.false_mean], color=c, linewidth=1, alpha=0.5)
            for off, which, marker in ((-0.12, "true", "o"), (0.12, "false", "s")):
                ax.errorbar(
                    [i + off],
                    [r[f"{which}_mean"]],
                    yerr=[r[f"{which}_std"]],
                    marker=marker,
                    ms=7,
                    capsize=3,
                    color=c,
                    mfc="white" if which == "false" else c,
                    label=f"lambda_imag_exp={which}" if i == 0 else None,
                )
            top = max(r.true_mean + r.true_std, r.false_mean + r.false_std)
            ax.annotate(
                f"Δ {r.delta_mean:+.3f} ± {r.delta_std:.3f}",
                (i, top),
                xytext=(0, 6),
                textcoords="offset points",
                ha="center",
                fontsize=8,
            )
        ax.set_xticks(s.index, [f"{m} N={n}" if n else m for m, n in zip(s.model, s.kernel_N, strict=True)])
        ax.set_xlim(-0.6, len(s) - 0.4)
        ax.margins(y=0.25)
        ax.set_ylabel("bits/byte at the training length (lower is better)")
        _finish(ax, f"lambda_imag_exp ablation, {corpus}\n(paired by seed; Δ = true − false, mean ± std)")

    return _per_corpus(deltas, out_path, draw, what="lambda_imag_exp ablation")


def plot_curves(source, out_path, *, ppl=None):
    """Training loss vs step per model at its selected rate (perplexity.csv, read from the run directory when
    `source` is one, tells which; without it every curve), mean over seeds with a ± std band."""
    df = _data(source, "train_curve.csv", "training curves")
    if df is None:
        return None
    if ppl is None and not isinstance(source, pd.DataFrame):
        ppl = analysis.load_csv(source, "perplexity.csv")

    def draw(ax, s, corpus):
        _lines(ax, s, x="step", band=True)
        ax.set_xlabel("training step")
        ax.set_ylabel("training loss (nats/byte)")
        ax.grid(True, alpha=0.3)
        rates = "selected rates, " if ppl is not None and "lr" in df else ""
        _finish(ax, f"Training loss, {corpus}\n({rates}mean over seeds, band ± std)", loc="upper right")

    return _per_corpus(summaries.curve_stats(df, ppl), out_path, draw, what="training curves")


def plot_length_generalisation(source, out_path):
    """Test bits/byte vs eval length / train length per model (the same target bytes at every length), with the
    entropy floor and the window floor at each length."""
    df = _data(source, "perplexity.csv", "length generalisation")
    if df is None:
        return None
    floors = summaries.bpb_table(df).groupby("corpus")["floor"].first()

    def draw(ax, s, corpus):
        _lines(ax, s, x="ratio")
        _floors(ax, s.assign(floor=s.corpus.map(floors)))
        _log2_axis(ax, s.ratio, label="evaluation length / training length", fmt=lambda v: f"{v:g}×")
        ax.set_ylabel("test bits/byte (mean ± std over seeds)")
        ax.grid(True, alpha=0.3)
        _finish(ax, f"Length generalisation, {corpus}\n(the same target bytes at every length)", loc="outside")

    return _per_corpus(summaries.length_generalisation(df), out_path, draw, what="length generalisation", width=8.5)


RECALL_SETTINGS = ("num_kv_pairs", "dim", "vocab")  # a panel per setting, when a run has several
KEY_BLIND_LINES = (
    ("ceiling", "--", "key-blind ceiling (the best pair-rank rule)"),
    ("floor", ":", "floor (a random value token)"),
)


def plot_recall(source, out_path):
    """Associative-recall test accuracy vs seq_len per model at its selected rates (mean and 95% interval over
    seeds), one panel per setting of pairs, width and vocabulary, with what key-blind answers score at each length:
    the floor (a random value token) and the ceiling (the best rule answering by pair rank, simulated)."""
    stats = _summary(
        source, "recall.csv", "recall", summaries.recall_stats, "skipped recall: no ok training at a selected rate"
    )
    if stats is None:
        return None
    settings = [c for c in RECALL_SETTINGS if c in stats.columns and stats[c].notna().all()]
    if "num_kv_pairs" in settings:  # pairs that grow with the length stay on one line; several at a length split
        others = ["label", "seq_len", *(c for c in settings if c != "num_kv_pairs")]
        if stats.groupby(others).num_kv_pairs.nunique().max() == 1:
            settings.remove("num_kv_pairs")
    panels = list(stats.groupby(settings, sort=False)) if settings else [((), stats)]
    columns = min(3, len(panels))
    fig, axes = _axes(columns, rows=-(-len(panels) // columns))
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    for ax, (key, s) in zip(axes, panels, strict=False):
        _lines(ax, s, x="seq_len", interval=True)
        for column, style, label in KEY_BLIND_LINES:
            points = s.dropna(subset=[column]).drop_duplicates(["seq_len", column]).sort_values("seq_len")
            if len(points):  # one per length in a grid; any others as markers alone
                line = style if points.seq_len.is_unique else "none"
                ax.plot(
                    points.seq_len, points[column], color="gray", linestyle=line, marker="_", ms=16, mew=2, label=label
                )
        _log2_axis(ax, s.seq_len, label="sequence length (tokens)")
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("test accuracy (mean, 95% interval over seeds)")
        ax.grid(True, alpha=0.3)
        setting = ", ".join(f"{c} {int(v):,}" for c, v in zip(settings, key if isinstance(key, tuple) else (key,)))
        _finish(
            ax, "Multi-query associative recall (MQAR), selected learning rates" + (f"\n{setting}" if setting else "")
        )
    return _save(fig, out_path)
