"""The regression gate's inputs: a run's CSVs read back and checked (key and value columns present, one row per
cell, numeric values in ok rows, repeat times that parse), its device class and CPU model, and the standard error
of a cell's median time. Torch-free (pandas)."""

import json
import math
from pathlib import Path
from statistics import NormalDist, median

import pandas as pd

from bench.results import ENV_FILE, ResultsError, read_rows
from bench.schema import KEY_COLUMNS, TABLES
from bench.stats import median_interval, repeat_times
from bench.usage import UsageError


class CompareError(UsageError):
    """The runs cannot be compared: exit 2."""


# The gated CSVs and the measured columns each must carry, numeric and positive in every ok row.
VALUE_COLUMNS = {name: table.values for name, table in TABLES.items() if table.values}
MAY_BE_ZERO = {"time_iqr_ms", "accuracy", "peak_mem_mb"}
# Older CSVs, read as such: from before learning-rate selection (issue 12) they hold the test rows of one rate;
# scaling.csv from before times_ms (issue 13) has no repeat times (its noise term comes from the IQR).
OLDER = {
    "perplexity.csv": dict(split="test", lr_selected="true"),
    "recall.csv": dict(lr_selected="true"),
    "scaling.csv": dict(times_ms=""),
}


def load(run_dir, name):
    """The CSV's complete rows as strings (a torn last line, from a killed run, is left out), checked:
    key and value columns present, one row per cell, ok rows with numeric values."""
    path = Path(run_dir) / name
    if not path.exists():
        return None
    try:
        rows = read_rows(path)
    except ResultsError as error:
        raise CompareError(f"malformed CSV: {error}") from None
    key, values = KEY_COLUMNS[name], VALUE_COLUMNS[name]
    header = list(rows[0]) if rows else path.read_text(encoding="utf-8", errors="replace").partition("\n")[0].split(",")
    older = {c: v for c, v in OLDER.get(name, {}).items() if c not in header}
    header, rows = header + list(older), [{**r, **older} for r in rows]
    missing = [c for c in (*key, "status", *values) if c not in header]
    if missing:
        raise CompareError(f"{path}: malformed, missing columns {', '.join(missing)}")
    df = pd.DataFrame(rows, columns=header, dtype=str)
    if len(twice := df[df.duplicated(list(key), keep=False)]):
        raise CompareError(f"{path}: malformed, cell measured twice ({describe(twice.iloc[0], key)})")
    for _, row in df[df.status == "ok"].iterrows():
        for column in values:
            value = number(row[column])
            if not (value > 0 or (value == 0 and column in MAY_BE_ZERO)):
                raise CompareError(f"{path}: malformed, {column}={row[column]!r} in an ok cell ({describe(row, key)})")
        if "times_ms" in row:
            check_repeat_times(path, row, key)
    return df


def check_repeat_times(path, row, key):
    """An ok cell's times_ms, when not empty: positive finite numbers, as many as its repeats."""
    try:
        count = len(repeat_times(row["times_ms"]))
    except ValueError as error:
        raise CompareError(
            f"{path}: malformed, times_ms entry {error.args[0]!r} in an ok cell ({describe(row, key)})"
        ) from None
    if count and count != number(row["repeats"]):
        raise CompareError(
            f"{path}: malformed, times_ms holds {count} times and repeats={row['repeats']} in an ok "
            f"cell ({describe(row, key)})"
        )


def standard_error_ms(row, suffix=""):
    """Standard error of a cell's median time (from the row's times_ms, time_iqr_ms and repeats, each name + suffix).
    With times_ms, from the repeats themselves, distribution-free: half the width of the order-statistic interval
    of the median (median_interval: 95% or more) divided by the normal quantile of its exact coverage,
    z = Phi^-1(1 - tail); one repeat gives 0. Without (runs from before times_ms), from the IQR and repeats by a
    normal approximation: sigma = IQR / 1.349, se(median) = 1.2533 sigma / sqrt(n)."""
    if times := repeat_times(row.get("times_ms" + suffix, "")):
        return _median_se(sorted(times))
    iqr, n = number(row["time_iqr_ms" + suffix]), max(1.0, number(row["repeats" + suffix]) or 1.0)
    return 1.2533 * (iqr / 1.349) / math.sqrt(n) if iqr == iqr else 0.0


def _median_se(times):
    if len(times) == 1:
        return 0.0
    j, tail = median_interval(len(times)) or (0, 0.5 ** len(times))  # under 6 repeats: smallest and largest
    return (times[-1 - j] - times[j]) / (2 * NormalDist().inv_cdf(1 - tail))


def time_beside(ref, rounds):
    """(median ms, its standard error) of a reference cell over the rounds another cell of its length ran beside
    it: its first `rounds` repeats. The cells of a length run their repeats in interleaved rounds, and a
    crossover's refinement adds rounds to the four cells around it afterwards, when this machine may run at
    another speed: a ratio of a cell to a refined reference over all the reference's rounds moved by up to 57%
    between identical quick runs on the development CPU. The whole row without repeat times or extra rounds."""
    times = repeat_times(ref.get("times_ms", ""))
    if not 0 < rounds < len(times):
        return number(ref["time_ms"]), standard_error_ms(ref)
    kept = sorted(times[: int(rounds)])
    return median(kept), _median_se(kept)


def runs_class(tables):
    """The device class both runs' scaling.csv ran on (tables: name -> (baseline, current)); cpu without one;
    CompareError when they differ."""
    if "scaling.csv" not in tables or tables["scaling.csv"][0] is None:
        return "cpu"
    cls_b, cls = (device_class(df) for df in tables["scaling.csv"])
    if cls_b != cls:
        raise CompareError(f"the baseline ran on {cls_b} and the current run on {cls}: not comparable")
    return cls


def device_class(df):
    classes = {d.split(":")[0] for d in df["device"] if d}
    if len(classes) != 1:
        raise CompareError(f"cannot tell the device class from device values {sorted(set(df['device']))}")
    return classes.pop()


def number(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def cpu_model(run_dir):
    """The CPU model env.json names (None when it names none or cannot be read)."""
    try:
        return json.loads((Path(run_dir) / ENV_FILE).read_text()).get("cpu_model")
    except (OSError, ValueError, AttributeError):
        return None


def describe(row, key):
    return " ".join(f"{k}={row[k]}" for k in key if row[k] != "")
