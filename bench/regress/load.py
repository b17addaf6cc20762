"""The regression gate's inputs: a run's gated CSVs, read through the one read path (bench.analysis.load) and
checked (key and value columns present, one row per cell, numeric values in ok rows, repeat times that parse, and
so do a CUDA cell's graph-replayed times where it has them); the device class and CPU model the runs ran on; and a
cell's name as the gate prints it. Torch-free (pandas)."""

import math
from pathlib import Path

from bench.analysis.load import missing, read_text, with_numbers
from bench.results import ResultsError, read_env
from bench.schema import KEY_COLUMNS, TABLES
from bench.stats import repeat_times
from bench.usage import UsageError


class CompareError(UsageError):
    """The runs cannot be compared: exit 2."""


# The gated CSVs and the measured columns each must carry, numeric and positive in every ok row.
VALUE_COLUMNS = {name: table.values for name, table in TABLES.items() if table.values}
MAY_BE_ZERO = {"time_iqr_ms", "accuracy", "peak_mem_mb"}


def load(run_dir, name):
    """The CSV's complete rows, numbers parsed but the key's as written (results.cell_key's convention: a torn
    last line, from a killed run, is left out), checked: key and value columns present, one row per cell, ok rows
    with numeric values; None when the file is absent. A malformed CSV's error names the value as written."""
    path = Path(run_dir) / name
    try:
        text = read_text(run_dir, name)
    except ResultsError as error:
        raise CompareError(f"malformed CSV: {error}") from None
    if text is None:
        return None
    key, values = KEY_COLUMNS[name], VALUE_COLUMNS[name]
    if lacking := missing(text, (*key, "status", *values)):
        raise CompareError(f"{path}: malformed, missing columns {', '.join(lacking)}")
    if len(twice := text[text.duplicated(list(key), keep=False)]):
        raise CompareError(f"{path}: malformed, cell measured twice ({describe(twice.iloc[0], key)})")
    df = with_numbers(text)
    for i in df.index[df.status == "ok"]:
        row = text.loc[i]
        for column in values:
            value = df.at[i, column]
            if not (value > 0 or (value == 0 and column in MAY_BE_ZERO)):
                raise CompareError(f"{path}: malformed, {column}={row[column]!r} in an ok cell ({describe(row, key)})")
        if "times_ms" in row:
            check_repeat_times(path, row, key)
        if "gpu_ms" in row:
            check_graph_times(path, row, key)
    return df.assign(**{c: text[c] for c in key})  # cells are matched and named by their key as written


def check_repeat_times(path, row, key):
    """An ok cell's times_ms, when not empty: positive finite numbers, as many as its repeats."""
    try:
        count = len(repeat_times(row["times_ms"]))
    except ValueError as error:
        raise CompareError(
            f"{path}: malformed, times_ms entry {error.args[0]!r} in an ok cell ({describe(row, key)})"
        ) from None
    if count and count != float(row["repeats"]):
        raise CompareError(
            f"{path}: malformed, times_ms holds {count} times and repeats={row['repeats']} in an ok "
            f"cell ({describe(row, key)})"
        )


def check_graph_times(path, row, key):
    """An ok cell's graph-replayed time (gpu_ms, on CUDA), when not empty: a positive number, with its replays'
    times (gpu_times_ms) positive finite numbers; either both or neither."""
    try:
        if replayed(row) is None and row.get("gpu_times_ms", ""):
            raise ValueError(f"gpu_times_ms={row['gpu_times_ms']!r} without gpu_ms")
    except ValueError as error:
        raise CompareError(f"{path}: malformed, {error.args[0]} in an ok cell ({describe(row, key)})") from None


def replayed(row, suffix=""):
    """A cell's graph-replayed median and the times of its replays (gpu_ms, gpu_times_ms; each name + suffix), or
    None where it has none (a CPU cell, a step that could not be captured, a run from before the columns).
    ValueError naming the value as written where one is malformed."""
    ms, times = row.get("gpu_ms" + suffix, ""), row.get("gpu_times_ms" + suffix, "")
    if ms in ("", None) or ms != ms:  # empty: written empty, or parsed as NaN
        return None
    try:
        value = float(ms)
    except (TypeError, ValueError):
        value = math.nan
    if not 0 < value < math.inf:
        raise ValueError(f"gpu_ms={ms!r}")
    try:
        parsed = repeat_times("" if times != times else times)
    except ValueError as error:
        raise ValueError(f"gpu_times_ms entry {error.args[0]!r}") from None
    if not parsed:
        raise ValueError(f"gpu_ms={ms!r} without gpu_times_ms")
    return value, parsed


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


def cpu_model(run_dir):
    """The CPU model env.json names (None when it names none or cannot be read)."""
    return (read_env(run_dir) or {}).get("cpu_model")


def describe(row, key):
    """A cell by its key as written: "model=gss mode=fwd ... seq_len=1024" (empty values left out)."""
    return " ".join(f"{k}={row[k]}" for k in key if row[k] != "")
