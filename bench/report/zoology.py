"""REPORT.md's section on Zoology's figure 2 (pandas, no matplotlib, no torch): MQAR accuracy by model and width, a
table per (seq_len, num_kv_pairs) with the rate selected at each point, and at which widths each model solves each
panel (the points and the solved bar: bench.analysis.zoology)."""

import pandas as pd

from bench import analysis
from bench.analysis import zoology
from bench.report.markdown import table

BOUNDS = {"floor": "floor", "ceiling": "key-blind ceiling"}  # a panel's recorded bounds, in its title

INTRO = (
    "Zoology's figure 2 (Arora et al., 2023): multi-query associative recall accuracy against model width, per "
    "(seq_len, num_kv_pairs). Each point is the test draw's accuracy at the rate with the best validation "
    "accuracy ({seeds}), the rate beside it; a rate marked smallest or largest tried is not bracketed (the grid "
    "may not hold the optimum). A model solves a panel at a width where its accuracy is at least {solved:g}. The "
    "floor answers each query with a random value token (floor_accuracy); the ceiling is the best rule that "
    "ignores the keys (ceiling_accuracy): accuracy above it needs recall."
)


def rate_mark(r):
    """How a point's selected rate sits in the rates tried: "" when bracketed."""
    if r.bracketed:
        return ""
    if len(r.rates) < 2:
        return ", one rate"
    return ", smallest tried" if r.lr == r.rates[0] else ", largest tried"


def cell(r):
    """A point as a table cell: "0.972 (lr 0.003)", "0.250 (lr 0.006, largest tried)"."""
    return f"{r.accuracy:.3f} (lr {r.lr:g}{rate_mark(r)})"


def solved_phrase(r):
    """Where a model line of zoology.solved solves its panel, in words."""
    if not r.solved_at:
        return f"{r.label} at no width up to {r.widths[-1]}"
    return f"{r.label} at width {', '.join(map(str, r.solved_at))}"


def panel_lines(panel, lines_solved):
    """The table of one panel: a row per model line, a column per width, then where it is solved."""
    widths = sorted(int(w) for w in panel.dim.unique())
    by = {(r.label, int(r.dim)): cell(r) for r in panel.itertuples()}
    rows = [
        (
            s.label,
            *(by.get((s.label, w), "") for w in widths),
            ", ".join(map(str, s.solved_at)) or f"none up to {s.widths[-1]}",
        )
        for s in lines_solved.itertuples()
    ]
    first = panel.iloc[0]
    bounds = ", ".join(f"{words} {first[c]:.3g}" for c, words in BOUNDS.items() if pd.notna(first[c]))
    title = zoology.panel_name(first.seq_len, first.num_kv_pairs) + (f" ({bounds})" if bounds else "")
    return [f"{title}:", "", *table(["model", *(f"width {w}" for w in widths), "solved at width"], rows)]


def zoology_section(run_dir, figs, found):
    df = analysis.load_csv(run_dir, "recall.csv")
    points = zoology.points(df)
    if points.empty:
        return [], []
    lines_solved = zoology.solved(points)
    fewest, most = points.seeds.min(), points.seeds.max()
    seeds = (
        "one seed" if most == 1 else f"mean over {most} seeds" if fewest == most else f"mean over {fewest}-{most} seeds"
    )
    lines = ["## Zoology's MQAR: accuracy against model width", ""]
    lines += [INTRO.format(seeds=seeds, solved=zoology.SOLVED_ACCURACY), ""]
    findings = []
    for (length, pairs), panel in points.groupby(zoology.PANEL, sort=False):
        here = lines_solved[(lines_solved.seq_len == length) & (lines_solved.num_kv_pairs == pairs)]
        lines += panel_lines(panel, here)
        findings.append(
            f"MQAR at {zoology.panel_name(length, pairs)}: solved (accuracy ≥ {zoology.SOLVED_ACCURACY:g}) by "
            + "; ".join(solved_phrase(r) for r in here.itertuples())
        )
    return lines + figs(zoology.FIGURE), findings
