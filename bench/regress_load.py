"""The regression gate's inputs: a run's CSVs read back and checked (key and value columns present, one row per
cell, numeric values in ok rows), its device class and CPU model. Torch-free (pandas)."""

import json
import math
from pathlib import Path

import pandas as pd

from bench.results import ENV_FILE, ResultsError, read_rows
from bench.schema import KEY_COLUMNS, TABLES
from bench.usage import UsageError


class CompareError(UsageError):
    """The runs cannot be compared: exit 2."""


# The gated CSVs and the measured columns each must carry, numeric and positive in every ok row.
VALUE_COLUMNS = {name: table.values for name, table in TABLES.items() if table.values}
MAY_BE_ZERO = {"time_iqr_ms", "accuracy", "peak_mem_mb"}
# Older CSVs, from before learning-rate selection (issue 12), hold the test rows of one rate: read as such.
OLDER = {"perplexity.csv": dict(split="test", lr_selected="true"), "recall.csv": dict(lr_selected="true")}


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
    return df


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
