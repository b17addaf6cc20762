"""Zoology's figure 2 from recall.csv: MQAR test accuracy against model width, a line per model, a panel per
(seq_len, num_kv_pairs) (the points: bench.analysis.zoology)."""

import pandas as pd

from bench.analysis import zoology
from bench.plots.style import _axes, _data, _finish, _log2_axis, _save, look, note

LEGEND_WIDTH = 3.4  # inches beside the panels for the one legend
# The dashed lines of each panel: the recorded column, its look and its legend's words
BOUNDS = (
    ("floor", "gray", "floor: a random value token (floor_accuracy)"),
    ("ceiling", "black", "ceiling of key-blind rules (ceiling_accuracy)"),
)


def _panel(ax, panel, widths):
    for label, g in panel.groupby("label", sort=False):
        g = g.sort_values("dim")
        ax.plot(g.dim, g.accuracy, label=label, **look(g.model.iloc[0]))
    for column, color, words in BOUNDS:
        if pd.notna(value := panel[column].max()):
            ax.axhline(value, color=color, linestyle="--", linewidth=1, label=words)
    solved = f"solved: accuracy >= {zoology.SOLVED_ACCURACY:g}"
    ax.axhline(zoology.SOLVED_ACCURACY, color="black", linestyle=":", linewidth=0.8, alpha=0.6, label=solved)
    _log2_axis(ax, widths, label="model width (dim)")
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("test accuracy")
    ax.grid(True, alpha=0.3)


def plot_zoology(source, out_path):
    """Zoology's figure 2: accuracy at each point's selected rate (y, 0..1) against model width (x, log2, ticked at
    the widths) per model in its house colour, one panel per (seq_len, num_kv_pairs) (rows: num_kv_pairs, columns:
    seq_len), the floor and the key-blind ceiling dashed where recorded, the solved bar dotted. None (with a note)
    when the run has no grid of widths."""
    df = _data(source, "recall.csv", "Zoology MQAR figure")
    if df is None:
        return None
    pts = zoology.points(df)
    if pts.empty:
        return note(
            "skipped Zoology MQAR figure: recall.csv has no grid of widths (two or more at one seq_len, num_kv_pairs)"
        )
    lengths, pairs = sorted(pts.seq_len.unique()), sorted(pts.num_kv_pairs.unique())
    shape = (len(pairs), len(lengths)) if len(lengths) > 1 else (1, len(pairs))  # one length: its panels in a row
    fig, axes = _axes(shape[1], width=4.2, height=3.6, rows=shape[0])
    fig.set_size_inches(fig.get_size_inches() + (LEGEND_WIDTH, 0))
    widths = sorted(pts.dim.unique())
    panels = dict(iter(pts.groupby(zoology.PANEL, sort=False)))
    for ax, (k, L) in zip(axes, ((k, L) for k in pairs for L in lengths), strict=True):
        if (L, k) not in panels:
            ax.set_axis_off()  # this length was not run with this many pairs
            continue
        _panel(ax, panels[L, k], widths)
        _finish(ax, zoology.panel_name(L, k), loc=None)
    legend = {}  # one legend for every panel: each model, bound and bar once, in drawing order
    for ax in axes:
        legend |= {label: line for line, label in zip(*ax.get_legend_handles_labels(), strict=True)}
    fig.legend(list(legend.values()), list(legend), loc="outside right upper", fontsize=8)
    fig.suptitle(
        "Multi-query associative recall (MQAR) against model width\n(each point at its selected learning rate)"
    )
    return _save(fig, out_path)
