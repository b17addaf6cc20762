"""The one read path of a run's CSVs (pandas, no torch): the analysis, findings, summaries, report, figures and the
regression gate all read a CSV through here, with the same numeric columns (bench.columns.NUMERIC) and the same
defaults for CSVs written before a column existed. A run's env.json has its one reader too:
bench.results.read_env."""

from pathlib import Path

import pandas as pd

from bench.columns import NUMERIC
from bench.results import ResultsError, read_table
from bench.schema import TABLES

# Older CSVs, read as what today's suites write. Before learning-rate selection (issue 12) a training ran at one
# rate and was evaluated on the test text only: test rows with lr_selected true; its window floor and the recall
# generator's chance (which was not 1 / num_kv_pairs) were not recorded: empty. scaling.csv from before times_ms
# (issue 13) has no repeat times: its readers fall back on time_ms and time_iqr_ms; from before the drift gauge
# (issue 28), no gauge times: its slopes fall back on each cell's own repeats.
OLDER = {
    "perplexity.csv": dict(split="test", lr_selected="true", window_floor_bpb=""),
    "recall.csv": dict(lr_selected="true", chance_accuracy="", val_accuracy=""),
    "scaling.csv": dict(
        times_ms="",
        gauge_times_ms="",
        min_bytes="",
        floor_ms="",
        roofline_frac="",
        gpu_ms="",
        gpu_times_ms="",
        gpu_note="",
    ),
    "op_breakdown.csv": dict(flops="", tflops_per_s="", peak_frac="", min_bytes="", bandwidth_frac=""),
}


def read_text(run_dir, name):
    """One CSV of a run as a frame of the strings written, its older columns filled in (OLDER; attrs["older"] says
    whether any was), a torn last line (a run still in flight, or killed) left out; None when the file is absent,
    an empty frame of its columns when it holds no rows. ResultsError when it is malformed."""
    path = Path(run_dir) / name
    if not path.exists():
        return None
    header, rows = read_table(path)
    filled = {c: v for c, v in OLDER.get(name, {}).items() if c not in header}
    df = pd.DataFrame(rows, columns=header).assign(**filled)
    df.attrs["older"] = bool(filled)
    return df


def with_numbers(df):
    """The frame with its numeric columns parsed (a value that is not a number, or empty, is NaN); every other
    column keeps the strings written ("" where an option does not apply)."""
    return df.assign(**{c: pd.to_numeric(df[c], errors="coerce") for c in NUMERIC.intersection(df.columns)})


def missing(df, columns):
    """The columns of `columns` the frame lacks, in order."""
    return [c for c in columns if c not in df.columns]


def load_csv(run_dir, name):
    """One CSV of a run as a frame (read_text, numbers parsed), or None when the file is absent or holds no rows;
    ResultsError when it is malformed or lacks a column the findings and figures read (TABLES[name].read)."""
    df = read_text(run_dir, name)
    if df is None or df.empty:
        return None
    if lacking := missing(df, TABLES[name].read if name in TABLES else ()):
        raise ResultsError(f"{Path(run_dir) / name}: malformed, missing columns {', '.join(lacking)}")
    return with_numbers(df)


def load_scaling(run_dir):
    """scaling.csv with option columns kept as the strings written ("" where an option does not apply)."""
    return load_csv(run_dir, "scaling.csv")
