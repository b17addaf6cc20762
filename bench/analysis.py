"""Findings computed from the CSVs alone (pandas, no torch): fitted log-log slopes and crossover lengths.

Used by the report and the plots, and to print the headline numbers of a scaling run:

    python -m bench.analysis results/<run_id>
"""

import math
import sys
from pathlib import Path

import pandas as pd


NUMERIC = ("batch", "seq_len", "dim", "params", "flops", "tflops_per_s", "tokens_per_s", "time_ms", "time_iqr_ms",
           "repeats", "peak_mem_mb")


def load_scaling(run_dir):
    """scaling.csv with option columns kept as the strings written ("" where an option does not apply)."""
    df = pd.read_csv(Path(run_dir) / "scaling.csv", dtype=str, keep_default_na=False)
    for column in NUMERIC:
        df[column] = pd.to_numeric(df[column], errors="coerce")
    return df


def length_series(df, model, *, mode, dtype="float32", options=None):
    """seq_len -> median time (ms) of one model's ok cells at default options (the length sweep)."""
    rows = df[(df.model == model) & (df["mode"] == mode) & (df.dtype == dtype) & (df.status == "ok")]
    for column, value in (options or {}).items():
        rows = rows[rows[column] == value]
    if not len(rows):
        return pd.Series(dtype=float)
    # the length sweep is the series with the most lengths (ablations hold one length each)
    grouped = rows.assign(_series=_series_key(rows)).groupby("_series")
    best = max(grouped, key=lambda item: item[1].seq_len.nunique())[1]
    return best.groupby("seq_len").time_ms.median().sort_index()


def _series_key(rows):
    """Cells of one sweep share every option; for gss-direct, full taps means conv_kernel == seq_len."""
    taps = rows.conv_kernel.where(rows.conv_kernel != rows.seq_len.astype(str), "full")
    return rows.kernel_N + "|" + rows.kernel_H + "|" + rows.lambda_imag_exp + "|" + taps


def fitted_slope(series, *, upper_half=True):
    """Least-squares slope of log(time) against log(seq_len), over the upper half of the lengths."""
    series = series.dropna()
    if upper_half:
        series = series.iloc[len(series) // 2:]
    if len(series) < 2:
        return None
    x = [math.log(v) for v in series.index]
    y = [math.log(v) for v in series.values]
    mx, my = sum(x) / len(x), sum(y) / len(y)
    return sum((a - mx) * (b - my) for a, b in zip(x, y)) / sum((a - mx) ** 2 for a in x)


def crossover(fast_at_long, slow_at_long):
    """The length above which the first series stays faster than the second, interpolated on log-log
    axes between the two measured lengths around it; None when it never does or always did."""
    common = fast_at_long.index.intersection(slow_at_long.index).sort_values()
    if len(common) < 2:
        return None
    ratio = [math.log(fast_at_long[L] / slow_at_long[L]) for L in common]  # < 0: faster
    if ratio[-1] >= 0 or ratio[0] < 0:
        return None
    last_slower = max(i for i, r in enumerate(ratio) if r >= 0)
    (l0, r0), (l1, r1) = (common[last_slower], ratio[last_slower]), (common[last_slower + 1], ratio[last_slower + 1])
    t = r0 / (r0 - r1)
    return math.exp(math.log(l0) + t * (math.log(l1) - math.log(l0)))


def headline(run_dir, *, a="gss", b="attention", dtype="float32"):
    """Crossover of a over b per mode, and every model's fitted slope per mode."""
    df = load_scaling(run_dir)
    lines = []
    for mode in ("fwd", "fwdbwd"):
        sa, sb = length_series(df, a, mode=mode, dtype=dtype), length_series(df, b, mode=mode, dtype=dtype)
        if sa.empty or sb.empty:
            continue
        cross = crossover(sa, sb)
        lines.append(f"{mode} {dtype}: {a} faster than {b} above seq_len "
                     + (f"{cross:.0f}" if cross else "(no crossover in the measured range)"))
        for model in sorted(df.model.unique()):
            slope = fitted_slope(length_series(df, model, mode=mode, dtype=dtype))
            if slope is not None:
                lines.append(f"  {model}: time ~ seq_len^{slope:.2f}")
    return lines


if __name__ == "__main__":
    print("\n".join(headline(sys.argv[1])))
