"""Figures of perplexity.csv, train_curve.csv and recall.csv."""

from bench import summaries
from bench.analysis import ok, ordered_models
from bench.plots.style import STYLES, _axes, _data, _finish, _log2_axis, _save, colour, look, note, shade


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
    for ax, corpus in zip(axes, corpora, strict=True):
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
        colours = [shade(m, i, (s.model == m).sum()) for m, i in zip(s.model, variant, strict=True)]
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
    return _per_corpus(summaries.bpb_table(df), out_path, draw, what="bits/byte", width=5.2)


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
                ax.errorbar([i + off], [r[f"{which}_mean"]], yerr=[r[f"{which}_std"]], marker=marker, ms=7, capsize=3,
                            color=c, mfc="white" if which == "false" else c,
                            label=f"lambda_imag_exp={which}" if i == 0 else None)
            top = max(r.true_mean + r.true_std, r.false_mean + r.false_std)
            ax.annotate(f"Δ {r.delta_mean:+.3f} ± {r.delta_std:.3f}", (i, top), xytext=(0, 6),
                        textcoords="offset points", ha="center", fontsize=8)
        ax.set_xticks(s.index, [f"{m} N={n}" if n else m for m, n in zip(s.model, s.kernel_N, strict=True)])
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
    return _per_corpus(summaries.curve_stats(df), out_path, draw, what="training curves")


def plot_length_generalisation(source, out_path):
    """bits/byte vs eval length / train length per model."""
    df = _data(source, "perplexity.csv", "length generalisation")
    if df is None:
        return None
    floors = summaries.bpb_table(df).groupby("corpus")["floor"].first()

    def draw(ax, s, corpus):
        _lines(ax, s, x="ratio")
        _floor(ax, s.assign(floor=s.corpus.map(floors)))
        _log2_axis(ax, s.ratio, label="evaluation length / training length", fmt=lambda v: f"{v:g}×")
        ax.set_ylabel("bits/byte (mean ± std over seeds)")
        ax.grid(True, alpha=0.3)
        _finish(ax, f"Length generalisation, {corpus}")
    return _per_corpus(summaries.length_generalisation(df), out_path, draw, what="length generalisation")


def plot_recall(source, out_path):
    """Associative-recall accuracy vs seq_len per model, with chance level."""
    df = _data(source, "recall.csv", "recall")
    if df is None:
        return None
    stats = summaries.recall_stats(df)
    fig, (ax,) = _axes()
    _lines(ax, stats, x="seq_len")
    if "vocab" in df and ok(df).vocab.notna().any():
        ax.axhline(1 / ok(df).vocab.max(), color="gray", linestyle=":", label="chance (1/vocab)")
    _log2_axis(ax, stats.seq_len, label="sequence length (tokens)")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("accuracy (mean ± std over seeds)")
    ax.grid(True, alpha=0.3)
    _finish(ax, "Multi-query associative recall (MQAR)", loc="upper right")
    return _save(fig, out_path)
