"""Zoology's figure 2 from a run's recall.csv (pandas, no torch): multi-query associative recall (MQAR) accuracy
against model width, a line per model, a panel per (seq_len, num_kv_pairs), and at which widths each model solves
each panel (Arora et al., 2023, "Zoology: measuring and improving recall in efficient language models", figure 2).

A point is (seq_len, num_kv_pairs, model, dim): the test draw's accuracy (`accuracy`) at the rate the suite
selected (`lr_selected`: the best validation accuracy on the selection seed), the mean over seeds where there are
several. The validation draw selects and the test draw reports because the best of several rates' test accuracies
is biased upward (the largest of noisy draws, the draw choosing itself); the validation draw is independent of the
test draw, so the accuracy at the rate it chose estimates that rate's accuracy without that bias. Zoology plots the
best accuracy over its sweep of rates; here the sweep is the same, only the draw that picks is not the one reported.

A panel is a (seq_len, num_kv_pairs) with points at two widths or more: the quick preset's single recall cell, or a
grid of lengths at one width, has none (no figure, no findings). Where one width of a panel ran under several
settings (vocab, steps, depth, batch, dtype; e.g. the quick cell and a Zoology cell), the setting that reaches the
most widths of the panel is kept there (_panel_rows). A model solves a panel at a width where its point's accuracy
is at least SOLVED_ACCURACY.

findings.csv rows (compute): `recall_solved_width`, mode `recall`, one per model and panel, value the smallest
width that solves it, unit `width`, no interval (one selection seed: no spread to resample). A model that solves
the panel at no width keeps its row with an empty value (NaN) and says so in detail, so that findings.csv alone
tells which models never solved which panel; the value column stays numeric, empty as an absent interval is.
"""

import pandas as pd

from bench.analysis import finding_row, ok, ordered_models
from bench.analysis.load import load_csv
from bench.schema import OPTIONS, TABLES

# The accuracy at which a width "solves" a panel: the bar issue 28 sets for attention on the quick recall cell, far
# above what a key-blind rule reaches (ceiling_accuracy) and short of 1.0, which a finite test draw may miss by one
# query
SOLVED_ACCURACY = 0.9
FINDING = "recall_solved_width"
FIGURE = "zoology_mqar.png"  # bench.plots draws it, REPORT.md links it
PANEL = ["seq_len", "num_kv_pairs"]
POINT = [*PANEL, "label", "dim"]
SETTINGS = ("vocab", "steps", "depth", "batch", "dtype")  # a cell's setting besides its width (_panel_rows)
POINTS = [
    *POINT,
    "model",
    "dtype",
    "accuracy",
    "val_accuracy",
    "seeds",
    "lr",
    "rates",
    "bracketed",
    "floor",
    "ceiling",
]
FINDINGS = [*TABLES["findings.csv"].columns, "options", "span"]


def _panel_rows(rows):
    """Per (seq_len, num_kv_pairs), the rows of the panel when it has two widths or more: at each width, those of
    the setting (SETTINGS) that reaches the most widths of the panel (the first in the CSV on a tie), so that a cell
    of another preset at one width (the quick cell) joins no line, while a setting that changes with the width
    (more steps for a wider model) still makes one panel."""
    settings = [c for c in SETTINGS if c in rows.columns]
    parts = []
    for _, panel in rows.groupby(PANEL, sort=False):
        # missing settings as "" (pandas 3's astype(str) keeps them missing, and the join fails on them); through
        # object, since filling a float column with "" is deprecated
        key = (
            panel[settings].astype(object).fillna("").astype(str).agg("|".join, axis=1)
            if settings
            else pd.Series("", index=panel.index)
        )
        reach = key.map(panel.groupby(key, sort=False).dim.nunique())
        chosen = key.loc[reach.groupby(panel.dim).transform("idxmax")].to_numpy()
        panel = panel[key.to_numpy() == chosen]
        if panel.dim.nunique() >= 2:
            parts.append(panel)
    return pd.concat(parts) if parts else rows.iloc[:0]


def _grid(recall):
    """The ok rows of a recall.csv frame (None: none) that belong to a panel (_panel_rows)."""
    if recall is None or not {*PANEL, "dim", "model"} <= set(recall.columns):
        return pd.DataFrame(columns=[*PANEL, "dim", "model"])
    return _panel_rows(ok(recall).dropna(subset=[*PANEL, "dim"]))


def in_panels(recall):
    """Whether each row of a recall.csv frame is an ok row of a panel, as a boolean Series on its index: the rows
    the figure and its findings read. bench.analysis.summaries.recall_stats keeps cells apart by seq_len,
    num_kv_pairs, dim and vocab, not by steps, depth or batch: a reader that must not pool a panel's point with
    another preset's cell of the same shape (the quick cell) tells them apart with this."""
    return pd.Series(recall.index.isin(_grid(recall).index), index=recall.index)


def _labels(panel):
    """Each row's model, plus the options (bench.schema.OPTIONS) that tell its option sets at one width apart; an
    option that changes only with the width (kernel_H at dim / 2) does not split a model's line."""
    labels = panel.model.astype(str)
    for _, rows in panel.groupby("model", sort=False):
        for option in OPTIONS:
            if option in rows.columns and rows.groupby("dim")[option].nunique().max() > 1:
                labels[rows.index] += f" {option}=" + rows[option].astype(str)
    return labels


def _point(rows, selected):
    """One point from its ok rows (every rate and seed) and those of the selected rate."""
    first = selected.sort_values("seed", kind="stable").iloc[0]  # the selection seed: its rate, its validation draw
    rates = sorted(set(rows.lr.dropna()))
    return dict(
        model=first.model,
        dtype=first.get("dtype", ""),
        accuracy=selected.accuracy.mean(),
        val_accuracy=first.get("val_accuracy", float("nan")),
        seeds=selected.seed.nunique(),
        lr=first.lr,
        rates=tuple(rates),
        bracketed=len(rates) > 2 and rates[0] < first.lr < rates[-1],
    )


def points(recall):
    """The Zoology grid's points of a recall.csv frame (load_csv), POINTS columns, ordered by panel, model and
    width: accuracy (test draw, selected rate, mean over seeds), val_accuracy (the selection seed's at that rate),
    seeds, lr (the selected rate), rates (every rate tried at the point), bracketed (the selected rate has a tried
    rate on both sides), floor and ceiling (the panel's floor_accuracy and ceiling_accuracy, NaN where not recorded).
    Empty without a panel (two widths or more at one (seq_len, num_kv_pairs))."""
    out = []
    for _, panel in _grid(recall).groupby(PANEL, sort=False):
        panel = panel.assign(label=_labels(panel))
        bounds = {
            name: panel[column].max() if column in panel.columns else float("nan")
            for name, column in (("floor", "floor_accuracy"), ("ceiling", "ceiling_accuracy"))
        }
        for key, point in panel.groupby(["label", "dim"], sort=False):
            selected = point[point.lr_selected == "true"].dropna(subset=["accuracy"])
            if len(selected):
                where = dict(zip(POINT, (*point[PANEL].iloc[0], *key), strict=True))
                out.append(dict(where, **_point(point, selected), **bounds))
    df = pd.DataFrame(out, columns=POINTS)
    order = {m: i for i, m in enumerate(ordered_models(df.model))}
    df = df.assign(_order=df.model.map(order)).sort_values([*PANEL, "_order", "label", "dim"], kind="stable")
    return df.drop(columns="_order").reset_index(drop=True)


def solved(points_frame):
    """Per panel and model line (seq_len, num_kv_pairs, label, model, dtype): widths and accuracies (tuples, by
    width), solved_at (the widths whose accuracy is at least SOLVED_ACCURACY) and smallest (the least of those, NaN
    when none)."""
    out = []
    for (length, pairs, label), g in points_frame.groupby(["seq_len", "num_kv_pairs", "label"], sort=False):
        g = g.sort_values("dim")
        at = tuple(int(w) for w, a in zip(g.dim, g.accuracy, strict=True) if a >= SOLVED_ACCURACY)
        out.append(
            dict(
                seq_len=length,
                num_kv_pairs=pairs,
                label=label,
                model=g.model.iloc[0],
                dtype=g.dtype.iloc[0],
                widths=tuple(int(w) for w in g.dim),
                accuracies=tuple(g.accuracy),
                solved_at=at,
                smallest=float(at[0]) if at else float("nan"),
            )
        )
    columns = ["seq_len", "num_kv_pairs", "label", "model", "dtype", "widths", "accuracies", "solved_at", "smallest"]
    return pd.DataFrame(out, columns=columns)


def panel_name(seq_len, num_kv_pairs):
    """ "seq_len 64, 4 pairs": a panel as the findings, the report and the figure name it."""
    return f"seq_len {int(seq_len)}, {int(num_kv_pairs)} pair{'s' if num_kv_pairs != 1 else ''}"


def accuracy_span(r):
    """ "accuracy 0.31/0.97/1.00 at width 64/128/256" of a solved() row, after "not solved at any width up to W: "
    when no width solves it."""
    accuracies = "/".join(f"{a:.2f}" for a in r.accuracies)
    span = f"accuracy {accuracies} at width {'/'.join(map(str, r.widths))}"
    return span if r.solved_at else f"not solved at any width up to {r.widths[-1]}: {span}"


def finding_rows(points_frame):
    """findings.csv's rows of the points (FINDINGS columns: those of findings.csv, then options and span as
    bench.analysis.findings.compute returns them); options names the panel, and the model's option set where it has
    several, so that pooled runs join each panel's row with its own."""
    out = []
    for r in solved(points_frame).itertuples():
        variant = r.label[len(r.model) :].strip()
        options = panel_name(r.seq_len, r.num_kv_pairs) + (f", {variant}" if variant else "")
        span = accuracy_span(r)
        dtype = r.dtype if isinstance(r.dtype, str) else ""
        out.append(
            finding_row(
                FINDING,
                r.model,
                "",
                r.smallest,
                None,
                None,
                unit="width",
                detail=f"{options}; {span}",
                options=options,
                span=span,
                mode="recall",
                dtype=dtype,
            )
        )
    return pd.DataFrame(out, columns=FINDINGS)


def compute(run_dir):
    """The run's recall_solved_width findings (finding_rows of its recall.csv's points); an empty frame of the
    FINDINGS columns without recall.csv or without a panel."""
    return finding_rows(points(load_csv(run_dir, "recall.csv")))
