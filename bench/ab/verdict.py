"""A cell's verdict from its paired rounds (torch-free): the median of the per-round ratios head / base, its 95%
interval by bootstrap over the rounds (resampled as pairs, as findings.csv resamples a length's interleaved
rounds: bench.stats.median_draws, seeded by the cell), and the words ab.csv and the printed table use."""

import statistics

import numpy as np

from bench.results import format_value
from bench.stats import format_times, median_draws, percentile_interval

# The slow-down a regression must exceed, in percent, besides an interval wholly above 1: the smallest that the
# measured power curve (python -m bench.ab.power; docs/regression-gate.md) shows free of false alarms. The
# interval alone is not enough: on identical code some cells' intervals lie just above 1.
THRESHOLD_PCT = 3.0
VERDICTS = ("regression", "improvement", "same", "one-sided", "error")
# what ab.csv holds of each side
SIDE_COLUMNS = ("params", "flops", "peak_mem_mb", "time_ms", "min_bytes")  # min_bytes: empty where a side has none


def paired_ratio(base_ms, head_ms, label):
    """(median ratio, 2.5th and 97.5th percentiles of its bootstrap draws) of the rounds' ratios head / base."""
    ratios = np.asarray(head_ms, dtype=float) / np.asarray(base_ms, dtype=float)
    low, high, _ = percentile_interval(median_draws(ratios, f"ab {label}"))
    return float(np.median(ratios)), float(low), float(high)


def verdict(ratio, low, high, threshold_pct=THRESHOLD_PCT):
    """regression: the interval wholly above 1 and the ratio above 1 + threshold; improvement: wholly below 1 and
    the ratio below 1 - threshold; otherwise same."""
    if low > 1 and ratio > 1 + threshold_pct / 100:
        return "regression"
    if high < 1 and ratio < 1 - threshold_pct / 100:
        return "improvement"
    return "same"


def label(key_row):
    """A cell's key as text: the seed of its bootstrap, and its name in messages."""
    return " ".join(f"{c}={text}" for c, v in key_row.items() if (text := format_value(v)) != "")


def compared(key_row, base_ms, head_ms, threshold_pct):
    """The measured columns of a cell both sides ran."""
    ratio, low, high = paired_ratio(base_ms, head_ms, label(key_row))
    return dict(
        ratio=ratio,
        ci_low=low,
        ci_high=high,
        rounds=len(base_ms),
        verdict=verdict(ratio, low, high, threshold_pct),
        time_ms_base=statistics.median(base_ms),
        time_ms_head=statistics.median(head_ms),
        ratios=format_times(h / b for b, h in zip(base_ms, head_ms, strict=True)),
    )


def worst_first(rows):
    """Rows by ratio, highest first; cells without one (one-sided, error) last, in their order."""
    return sorted(rows, key=lambda r: (r.get("ratio") in (None, ""), -float(r.get("ratio") or 0)))


TABLE_COLUMNS = ("model", "mode", "dtype", "seq_len", "options", "ratio", "95% interval", "rounds", "verdict")
OPTION_NAMES = ("kernel_N", "kernel_H", "lambda_imag_exp", "conv_kernel", "compiled")


def table(rows):
    """The printed view of ab.csv's rows, worst first, in the verdict words."""
    lines = [TABLE_COLUMNS]
    for r in worst_first(rows):
        options = " ".join(f"{o}={v}" for o in OPTION_NAMES if (v := format_value(r.get(o))) not in ("", "false"))
        measured = r.get("ratio") not in (None, "")
        lines.append(
            (
                *(format_value(r[c]) for c in ("model", "mode", "dtype", "seq_len")),
                options or "-",
                f"{float(r['ratio']):.3f}" if measured else "-",
                f"{float(r['ci_low']):.3f}..{float(r['ci_high']):.3f}" if measured else "-",
                format_value(r.get("rounds")) or "-",
                r["verdict"],
            )
        )
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(TABLE_COLUMNS))]
    return "\n".join("  ".join(str(v).ljust(w) for v, w in zip(line, widths, strict=True)).rstrip() for line in lines)
