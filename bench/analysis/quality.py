"""The quality findings of a run with 95% intervals over seeds, in findings.csv's columns (pandas, no torch):

- bits_per_byte: per model (and option set), test bits/byte at the training length at its selected rate, the mean
  over seeds;
- bits_per_byte_diff: for every two models of a corpus, model minus other, paired by seed (at one seed every
  model trains on the same batches, so the seed's share of the noise cancels in the difference);
- recall_accuracy: per model and recall cell (seq_len, num_kv_pairs, dim, vocab), test accuracy at the selected
  rate, the mean over seeds.

The interval (seed_interval) is Student's t on the seeds' values, or on the paired differences: mean ± t(0.975,
n - 1) * sd / sqrt(n), n the seeds; accuracy is clipped to [0, 1]. One seed gives no interval (ci_low, ci_high
empty). It says how far the mean over these seeds could move with other seeds, not how far the number would move
with another budget or machine.

The training rows' labels (a model plus the options that vary among its rows) and the rows every reported number
uses (ok test rows of the selected rate) are defined here and shared with bench.analysis.summaries.
"""

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from bench.analysis import finding_row, ok, ordered_models
from bench.analysis.load import load_csv
from bench.schema import OPTIONS, TABLES

LEVEL = 0.95
COLUMNS = (*TABLES["findings.csv"].columns, "options", "span")
METHOD = "Student's t over seeds"
SHORT = {"kernel_N": "N={}", "kernel_H": "H={}", "lambda_imag_exp": "λexp={}", "conv_kernel": "taps={}"}


def t_two_sided(t, df):
    """P(|T| < t) for Student's T with integer df degrees of freedom, in closed form (Abramowitz and Stegun 26.7.3
    and 26.7.4): a finite sum over powers of cos(theta), theta = atan(t / sqrt(df))."""
    theta = math.atan(t / math.sqrt(df))
    c2, term, total = math.cos(theta) ** 2, 1.0, 1.0
    if df % 2:  # odd: (2 / pi) (theta + sin cos (1 + 2/3 cos^2 + 2*4/(3*5) cos^4 + ...)), df - 3 powers of 2
        for k in range(1, (df - 1) // 2):
            term *= c2 * (2 * k) / (2 * k + 1)
            total += term
        sum_part = math.sin(theta) * math.cos(theta) * total if df > 1 else 0.0
        return 2 / math.pi * (theta + sum_part)
    for k in range(1, df // 2):  # even: sin (1 + 1/2 cos^2 + 1*3/(2*4) cos^4 + ...)
        term *= c2 * (2 * k - 1) / (2 * k)
        total += term
    return math.sin(theta) * total


def t_quantile(df, level=LEVEL):
    """The t with P(|T| < t) = level for df degrees of freedom (bisection on t_two_sided)."""
    low, high = 0.0, 1.0
    while t_two_sided(high, df) < level:
        high *= 2
    for _ in range(200):
        mid = (low + high) / 2
        low, high = (mid, high) if t_two_sided(mid, df) < level else (low, mid)
    return (low + high) / 2


def seed_interval(values, *, bounds=(-math.inf, math.inf)):
    """(mean, ci_low, ci_high, n) of per-seed values (or paired differences): Student's t on n - 1 degrees of
    freedom, clipped to `bounds`; NaN bounds with fewer than two values."""
    values = np.asarray([v for v in values if pd.notna(v)], dtype=float)
    n = len(values)
    if n == 0:
        return math.nan, math.nan, math.nan, 0
    mean = float(values.mean())
    if n < 2:
        return mean, math.nan, math.nan, n
    half = t_quantile(n - 1) * float(values.std(ddof=1)) / math.sqrt(n)
    return mean, max(bounds[0], mean - half), min(bounds[1], mean + half), n


def paired(a, b):
    """seed_interval of a - b over the seeds both have (Series indexed by seed): a paired difference."""
    return seed_interval((a - b).dropna().to_numpy())


def excludes_zero(stats):
    """Whether a difference's interval (seed_interval's) lies on one side of 0."""
    return separated(stats[1:3], (0.0, 0.0))


def separated(a, b):
    """Whether two intervals (low, high) are apart: neither holds a point of the other. Missing bounds: no."""
    if any(pd.isna(v) for v in (*a, *b)):
        return False
    return a[1] < b[0] or b[1] < a[0]


def with_labels(df):
    """Adds corpus ("" when absent) and label: the model plus the options that vary among its rows."""
    df = df.assign(corpus=df["corpus"] if "corpus" in df.columns else "")
    labels = df.model.astype(str)
    for _, rows in df.groupby(["corpus", "model"], sort=False):
        varying = [c for c in OPTIONS if c in rows.columns and rows[c].nunique() > 1]
        for c in varying:
            labels[rows.index] = labels[rows.index] + " " + rows[c].map(SHORT[c].format)
    return df.assign(label=labels)


def reported(ppl):
    """The rows every bits/byte finding uses: ok test rows of the selected rate (never a validation row)."""
    rows = ok(with_labels(ppl))
    return rows[(rows.split == "test") & (rows.lr_selected == "true")]


def _rates(values):
    return ", ".join(f"{v:g}" for v in sorted(set(values.dropna())))


def _row(finding, model, other, stats, *, mode, dtype, unit, options, span, extra=()):
    mean, low, high, n = stats
    how = f"{METHOD}, {n - 1} df" if n > 1 else "1 seed: no interval"
    detail = "; ".join(p for p in (options, span, *extra, f"{n} seed{'s' if n != 1 else ''}", how) if p)
    return finding_row(
        finding,
        model,
        other,
        mean,
        low,
        high,
        unit=unit,
        detail=detail,
        options=options,
        span=span,
        mode=mode,
        dtype=dtype,
    )


def _options(label, model):
    return label[len(model) :].strip()


@dataclass
class LmGroup:
    """The trainings compared with each other: one corpus, training length and dtype. labels: (label, model) in
    the models' order; by_seed: label -> test bits/byte at the training length per seed; rates: label -> the
    selected rate(s) as text."""

    corpus: str
    seq_len: int
    dtype: str
    labels: list
    by_seed: dict
    rates: dict

    @property
    def span(self):
        return f"{self.corpus}, seq_len {self.seq_len}" if self.corpus else f"seq_len {self.seq_len}"


def lm_groups(ppl):
    """The LmGroups of a perplexity frame (its reported rows at the training length)."""
    rows = reported(ppl)
    rows = rows[rows.eval_seq_len == rows.train_seq_len]
    for (corpus, length, dtype), g in rows.groupby(["corpus", "train_seq_len", "dtype"], sort=False):
        order = {m: i for i, m in enumerate(ordered_models(g.model))}
        labels = sorted(g.groupby("label", sort=False).model.first().items(), key=lambda lm: (order[lm[1]], lm[0]))
        by_label = {label: g[g.label == label] for label, _ in labels}
        yield LmGroup(
            corpus,
            int(length),
            dtype,
            labels,
            {label: r.groupby("seed").bits_per_byte.mean() for label, r in by_label.items()},
            {label: _rates(r.lr) for label, r in by_label.items()},
        )


def lm_rows(ppl):
    """bits_per_byte per label and bits_per_byte_diff per two labels of one LmGroup."""
    out = []
    for g in lm_groups(ppl):
        shared = dict(mode="lm", dtype=g.dtype, unit="bits/byte", span=g.span)
        for label, model in g.labels:
            stats = seed_interval(g.by_seed[label].to_numpy())
            out.append(
                _row(
                    "bits_per_byte",
                    model,
                    "",
                    stats,
                    options=_options(label, model),
                    extra=(f"lr {g.rates[label]}",),
                    **shared,
                )
            )
        for i, (label, model) in enumerate(g.labels):
            for other_label, other in g.labels[i + 1 :]:
                against = f"vs {other_label}" if other_label != other else ""
                options = " ".join(p for p in (_options(label, model), against) if p)
                stats = paired(g.by_seed[label], g.by_seed[other_label])
                out.append(
                    _row(
                        "bits_per_byte_diff", model, other, stats, options=options, extra=("paired by seed",), **shared
                    )
                )
    return out


RECALL_CELL = ("seq_len", "num_kv_pairs", "dim", "vocab")  # what tells recall cells apart (besides options)


def recall_rows(recall):
    """recall_accuracy per label, recall cell (RECALL_CELL) and dtype."""
    rows = ok(with_labels(recall))
    rows = rows[rows.lr_selected == "true"]
    cell = [c for c in RECALL_CELL if c in rows.columns]
    out = []
    for key, g in rows.groupby([*cell, "dtype", "model", "label"], sort=False):
        values = dict(zip([*cell, "dtype", "model", "label"], key, strict=True))
        stats = seed_interval(g.groupby("seed").accuracy.mean().to_numpy(), bounds=(0.0, 1.0))
        out.append(
            _row(
                "recall_accuracy",
                values["model"],
                "",
                stats,
                mode="recall",
                dtype=values["dtype"],
                unit="accuracy",
                options=_options(values["label"], values["model"]),
                span=", ".join(f"{c} {int(values[c])}" for c in cell),
                extra=(f"lr {_rates(g.lr)}",),
            )
        )
    return out


def compute(run_dir):
    """The quality findings of a run directory (its perplexity.csv and recall.csv; either may be absent): the
    findings.csv columns, then `options` and `span`, as bench.analysis.findings.compute returns them."""
    out = []
    ppl = load_csv(Path(run_dir), "perplexity.csv")
    if ppl is not None and "split" in ppl.columns:
        out += lm_rows(ppl)
    recall = load_csv(Path(run_dir), "recall.csv")
    if recall is not None:
        out += recall_rows(recall)
    return pd.DataFrame(out, columns=list(COLUMNS))
