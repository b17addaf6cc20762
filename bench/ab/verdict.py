"""A cell's verdict from its paired rounds (torch-free): the median of the per-round ratios head / base, its 95%
interval from the ratios' order statistics (bench.stats.median_order_interval: distribution-free, at its level
whatever the count of rounds, where a percentile bootstrap of a median of 10-17 values covers about 93%), the
verdict's confirmation by a second measurement, and the words ab.csv and the printed table use."""

import statistics

import numpy as np

from bench.results import format_value
from bench.stats import format_times, median_order_interval

# The slow-down a regression must exceed, in percent, besides an interval wholly above 1 in both measurements. The
# measured power curve (python -m bench.ab.power; docs/regression-gate.md) shows no false alarm from 1% on the
# quiet development machine once flags are measured again; 3% keeps a margin for noisier CI runners (one read
# 1.043 on identical code in a first measurement) and still catches 5% and 10% slow-downs (7/8, 8/8 cells).
THRESHOLD_PCT = 3.0
VERDICTS = ("regression", "improvement", "same", "one-sided", "error")
FLAGGED = VERDICTS[:2]  # what a second measurement must confirm
# A flagged cell is measured again, from layers built afresh, with this many times its budget: its verdict stands
# only where the second measurement gives it too. On identical code a cell whose rounds scatter by 6-9% can place
# its first interval wholly above 1 and its median past the threshold (dss, 1024 tokens, 1.043 (1.029..1.061) in
# one CI run); a slow-down in the code is in both measurements.
CONFIRM_BUDGET = 2.0
CONFIRM_COLUMNS = ("confirm_ratio", "confirm_ci_low", "confirm_ci_high", "confirm_rounds", "confirm_ratios")
# what ab.csv holds of each side
SIDE_COLUMNS = ("params", "flops", "peak_mem_mb", "time_ms", "min_bytes")  # min_bytes: empty where a side has none


def paired_ratio(base_ms, head_ms):
    """(median, and its distribution-free 95% interval) of the rounds' ratios head / base."""
    ratios = np.asarray(head_ms, dtype=float) / np.asarray(base_ms, dtype=float)
    low, high = median_order_interval(ratios)
    return float(np.median(ratios)), low, high


def verdict(ratio, low, high, threshold_pct=THRESHOLD_PCT):
    """regression: the interval wholly above 1 and the ratio above 1 + threshold; improvement: wholly below 1 and
    the ratio below 1 - threshold; otherwise same."""
    if low > 1 and ratio > 1 + threshold_pct / 100:
        return "regression"
    if high < 1 and ratio < 1 - threshold_pct / 100:
        return "improvement"
    return "same"


def verdict_of(row, threshold_pct):
    """An ab.csv row's verdict re-made at another threshold: its first measurement's, where flagged confirmed by
    its second (a flag the row has no second measurement of, its run's threshold being higher, is same)."""
    first = verdict(*(float(row[c]) for c in ("ratio", "ci_low", "ci_high")), threshold_pct)
    if first not in FLAGGED or row.get("confirm_ratio") in (None, ""):
        return "same" if first in FLAGGED else first
    again = verdict(*(float(row[c]) for c in CONFIRM_COLUMNS[:3]), threshold_pct)
    return first if again == first else "same"


def confirmed(first, again):
    """A flagged cell's confirm_* columns from its second measurement `again` (compared()'s columns), and its
    verdict: the first measurement's where the second gives it too, else same."""
    columns = {f"confirm_{c}": again[c] for c in ("ratio", "ci_low", "ci_high", "rounds", "ratios")}
    return {**columns, "verdict": first["verdict"] if again["verdict"] == first["verdict"] else "same"}


def label(key_row):
    """A cell's key as text: its name in messages."""
    return " ".join(f"{c}={text}" for c, v in key_row.items() if (text := format_value(v)) != "")


def compared(base_ms, head_ms, threshold_pct):
    """The measured columns of a cell both sides ran."""
    ratio, low, high = paired_ratio(base_ms, head_ms)
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


TABLE_COLUMNS = ("model", "mode", "dtype", "seq_len", "options", "ratio", "95% interval", "rounds", "again", "verdict")
OPTION_NAMES = ("kernel_N", "kernel_H", "lambda_imag_exp", "conv_kernel", "compiled")


def _again(row):
    """The table's view of a flagged cell's second measurement: ratio (interval) over rounds; "-" for none."""
    if row.get("confirm_ratio") in (None, ""):
        return "-"
    ratio, low, high = (float(row[c]) for c in CONFIRM_COLUMNS[:3])
    return f"{ratio:.3f} ({low:.3f}..{high:.3f}) x{format_value(row['confirm_rounds'])}"


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
                _again(r),
                r["verdict"],
            )
        )
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(TABLE_COLUMNS))]
    return "\n".join("  ".join(str(v).ljust(w) for v, w in zip(line, widths, strict=True)).rstrip() for line in lines)
