"""The scaling findings of a run with 95% intervals, one row each in findings.csv (numpy + pandas, no torch).

    python -m bench.analysis RUN [RUN ...]    # writes, prints each RUN/findings.csv; several runs: pooled too

Per (mode, dtype), on the length sweeps of bench.analysis.model_sweeps (a sweep's options go in detail):
slope, least squares of log(time) on log(seq_len) over the longest max(3, ceil(n/2)) of its n ok lengths (none
when n < 3); crossover, the length above which `model` stays faster than `other`, for each two models that
cross; speedup, the reference model's time (bench.schema.REFERENCE_MODEL) / the model's at their longest common
length, and at every common length dss's time / gss's (the GSS paper's claim) and gss's / gss-fast's (the same
function, implemented faster).

A slope is fitted to the cells' recorded medians (time_ms); its interval bootstraps each cell's repeats
(times_ms) on its own: RESAMPLES resamples with replacement, their medians, the slope of each (several cells at
a length: the median of theirs). A crossover and a speed-up compare two models at one length, whose cells were
timed as one interleaved group (round i of each back to back): they take, at each length, the median over the
rounds of the two cells' time ratio, and their interval resamples those rounds in pairs (refine.log_ratios), so
that a drift of the machine, which falls on both cells of a round, cancels instead of widening the interval.
Without repeats (older runs) they take the ratio of time_ms and have no interval. ci_low, ci_high are the 2.5th
and 97.5th percentiles; draws are seeded by the cells' keys: an interval does not depend on the run's other
cells. A resample without the crossover (the order never changes, or changes back) is left out: the interval
is over the resamples where it exists, detail gives the share where it does not. Noise between runs is not in
the intervals: several runs given together show it, as each finding's range.
"""

import csv
import io
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from bench import analysis, usage
from bench.analysis import refine
from bench.results import ResultsError, atomic_write_text, format_value
from bench.schema import REFERENCE_MODEL, TABLES
from bench.stats import RESAMPLES, crossover, median_draws, percentile_interval, repeat_times
from bench.usage import Parser, UsageError, fail

NAME = "findings.csv"
COLUMNS = TABLES[NAME].columns
EVERY_LENGTH = (("gss", "dss"), ("gss-fast", "gss"))  # (model, over): speed-ups at every common length
POOL_KEY = ["finding", "mode", "dtype", "model", "other", "options", "unit"]
DIGITS = {"exponent": ".3f", "tokens": ",.0f", "x": ".2f"}
HEADER = ("finding", "mode", "dtype", "model", "other", "value", "95% interval", "unit", "detail")
POOLED = ("finding", "mode", "dtype", "model", "other", "median", "range", "unit", "runs", "detail")


class Draws:
    """Each ok cell's medians of resampled repeats, (resamples,), drawn once and seeded by the cell's key."""

    def __init__(self, source, resamples=RESAMPLES):
        self.source, self.resamples, self.cells = source, resamples, {}

    def cell(self, row):
        """An ok cell's draws; None when it has no times_ms, ResultsError naming it when they do not parse."""
        key, text = refine.label(row), row.get("times_ms", "")
        if (key, text) not in self.cells:
            times = None
            if isinstance(text, str) and text.strip():
                try:
                    times = repeat_times(text)
                except ValueError:
                    raise ResultsError(f"{self.source}: malformed times_ms {text!r} in the ok cell {key}") from None
                times = median_draws(times, key, self.resamples)
            self.cells[key, text] = times
        return self.cells[key, text]

    def at_length(self, rows):  # the draws of one length of a sweep; None when a cell of it has no times_ms
        cells = [self.cell(r) for _, r in rows.iterrows()]
        return None if any(c is None for c in cells) else np.median(np.stack(cells), axis=0)


@dataclass
class LengthSeries:
    """A model's length sweep in one (mode, dtype), as the findings use it."""

    label: str  # as bench.analysis labels it: "gss", "gss kernel_N=64"
    model: str
    options: str  # the label's options: "", "kernel_N=64"
    point: pd.Series  # seq_len -> median recorded time_ms
    draws: dict  # seq_len -> (resamples,) medians, or None
    cells: dict  # seq_len -> its one ok row (analysis.single_cells: no entry where several cells share it)

    def ratio(self, other, lengths, resamples):
        """log(time of this series / other's) at lengths, (points, draws or None): paired over the rounds of each
        length's interleaved group (refine.log_ratios) when each has one cell there, else from the medians."""
        if all(L in s.cells for s in (self, other) for L in lengths):
            return refine.log_ratios(self.cells, other.cells, lengths, resamples)
        a, b = self.stack(lengths), other.stack(lengths)
        points = np.log(self.point[lengths].to_numpy() / other.point[lengths].to_numpy())
        return points, None if a is None or b is None else np.log(a / b)

    def options_against(self, other):
        """This series' options, and which of the other model's series it is compared with when that has options."""
        return " ".join(p for p in (self.options, f"vs {other.label}" if other.options else "") if p)

    def stack(self, lengths):  # (resamples, len(lengths)); None when a cell at one of them has no times_ms
        columns = [self.draws[length] for length in lengths]
        return None if any(c is None for c in columns) else np.stack(columns, axis=1)


def all_series(df, draws, *, mode, dtype):
    """Every model's LengthSeries in (mode, dtype), with ok, timed cells (bench.analysis.model_sweeps)."""
    out = []
    for model in analysis.ordered_models(df.model):
        for label, rows in analysis.model_sweeps(df, model, mode=mode, dtype=dtype).items():
            rows = analysis.ok(rows).dropna(subset=["time_ms"])
            if len(rows):
                point = rows.groupby("seq_len").time_ms.median().sort_index()
                out.append(
                    LengthSeries(
                        label,
                        model,
                        label[len(model) :].strip(),
                        point,
                        {L: draws.at_length(g) for L, g in rows.groupby("seq_len")},
                        analysis.single_cells(rows),
                    )
                )
    return out


def slope(lengths, times):
    """Least-squares slope of log(times) on log(lengths) along the last axis; times (..., k)."""
    x = np.log(lengths) - np.log(lengths).mean()
    y = np.log(times)
    return (y - y.mean(axis=-1, keepdims=True)) @ x / (x @ x)


def row(finding, model, other, value, draws, *, unit, options="", span="", missing=None):
    """One finding of a (mode, dtype), which compute adds; draws (resamples,) with NaN where it does not exist, or
    None (no interval)."""
    low = high = note = None
    if draws is not None:
        low, high, share = percentile_interval(draws)
        note = f"no {missing} in {share:.1%} of resamples" if missing and share > 0 else None
    detail = "; ".join(p for p in (options, span, note) if p)
    return dict(
        finding=finding,
        model=model,
        other=other,
        value=float(value),
        ci_low=low,
        ci_high=high,
        unit=unit,
        detail=detail,
        options=options,
        span=span,
    )


def slope_rows(found):
    out = []
    for s in found:
        lengths = analysis.fitted_lengths(s.point.index)
        if lengths:
            draws = s.stack(lengths)
            out.append(
                row(
                    "slope",
                    s.model,
                    "",
                    slope(lengths, s.point[lengths].to_numpy()),
                    None if draws is None else slope(lengths, draws),
                    unit="exponent",
                    options=s.options,
                    span=f"seq_len {lengths[0]}..{lengths[-1]}",
                )
            )
    return out


def crossover_rows(found, resamples=RESAMPLES):
    """Every pair of two models' series that cross, the one faster at the long lengths first."""
    out = []
    for i, a in enumerate(found):
        for b in found[i + 1 :]:
            common = sorted(set(a.point.index) & set(b.point.index))
            if a.model == b.model or len(common) < 2:
                continue
            for fast, slow in ((a, b), (b, a)):
                ratio, draws = fast.ratio(slow, common, resamples)
                value = crossover(common, ratio)[0]
                if np.isnan(value):
                    continue
                last = max(j for j, r in enumerate(ratio) if r >= 0)
                draws = None if draws is None else crossover(common, draws)
                out.append(
                    row(
                        "crossover",
                        fast.model,
                        slow.model,
                        value,
                        draws,
                        unit="tokens",
                        options=fast.options_against(slow),
                        span=f"between seq_len {common[last]} and {common[last + 1]}",
                        missing="crossover",
                    )
                )
    return out


def speedup_rows(found, resamples=RESAMPLES):
    """Each model's speed-up over the reference model at their longest common length; at every common length, those of
    EVERY_LENGTH: gss's over dss (the GSS paper's claim, "2-3x faster than DSS") and gss-fast's over gss."""
    out = []
    for model, reference, every in ((None, REFERENCE_MODEL, False), *((m, o, True) for m, o in EVERY_LENGTH)):
        for ref in (s for s in found if s.model == reference):
            for s in (s for s in found if s.model != reference and model in (None, s.model)):
                common = sorted(set(s.point.index) & set(ref.point.index))
                for length in common if every else common[-1:]:
                    (ratio,), draws = ref.ratio(s, [length], resamples)
                    out.append(
                        row(
                            "speedup",
                            s.model,
                            reference,
                            np.exp(ratio),
                            None if draws is None else np.exp(draws[:, 0]),
                            unit="x",
                            options=s.options_against(ref),
                            span=f"at seq_len {length}",
                        )
                    )
    return out


def compute(df, *, source="scaling.csv", resamples=RESAMPLES):
    """The findings of a scaling frame: the findings.csv columns, then `options` and `span` (the parts of detail
    that say which sweep and which lengths; the pooling of runs joins on them). ResultsError for a times_ms
    that does not parse, naming the cell."""
    out = []
    if df is not None and "status" in df.columns and not analysis.ok(df).empty:
        draws = Draws(source, resamples)
        for mode, dtype in analysis.modes_dtypes(df):
            found = all_series(df, draws, mode=mode, dtype=dtype)
            rows = slope_rows(found) + crossover_rows(found, resamples) + speedup_rows(found, resamples)
            out += [dict(r, mode=mode, dtype=dtype) for r in rows]
    return pd.DataFrame(out, columns=[*COLUMNS, "options", "span"])


def speedups(found, model, over):
    """The speedup rows of `model` over `over` in the findings (None: no findings, no rows)."""
    if found is None:
        return pd.DataFrame(columns=[*COLUMNS, "options", "span"])
    return found[(found.finding == "speedup") & (found.model == model) & (found.other == over)]


def of_run(run_dir):
    """compute() of the run's scaling.csv; None when it has none."""
    df = analysis.load_scaling(run_dir)
    return None if df is None else compute(df, source=Path(run_dir) / "scaling.csv")


def write(run_dir, *, out_dir=None, found=None):
    """Writes findings.csv (atomically) into out_dir, default the run directory, and returns the findings
    (`found`, when given, else of_run(run_dir)); without a scaling.csv, None and nothing is written."""
    if (found := of_run(run_dir) if found is None else found) is None:
        return None
    out_dir = Path(run_dir if out_dir is None else out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows(
        [COLUMNS, *([format_value(v) for v in r] for r in found[list(COLUMNS)].itertuples(index=False))]
    )
    atomic_write_text(out_dir / NAME, text.getvalue())
    return found


def format_number(value, unit):
    return "" if value is None or pd.isna(value) else f"{value:{DIGITS.get(unit, '.4g')}}"


def interval(low, high, unit):
    return f"{format_number(low, unit)}..{format_number(high, unit)}" if pd.notna(low) and pd.notna(high) else ""


def display(found, runs=None):
    """The findings as rows of strings under HEADER (REPORT.md's table, the command's printout); with `runs`, the
    pooled findings of that many runs (pool) under POOLED, each with in how many it was found."""
    rows = []
    for r in found.itertuples():
        if runs is None:
            value, low, high, found_in = r.value, r.ci_low, r.ci_high, ()
        else:
            value, low, high, found_in = r.median, r.low, r.high, (f"{r.runs}/{runs}",)
        shown = (format_number(value, r.unit), interval(low, high, r.unit), r.unit, *found_in)
        rows.append((r.finding, r.mode, r.dtype, r.model, r.other, *shown, r.detail))
    return rows


def check_poolable(scaling):
    """{run: scaling frame}: UsageError naming the first mismatch when the runs ran on other devices, or
    measured other grids (not the same cells, whatever their status)."""
    (first, a), *others = scaling.items()
    for run, b in others:
        if (da := sorted(set(a.device))) != (db := sorted(set(b.device))):
            raise UsageError(f"cannot pool {first} and {run}: different devices ({', '.join(da)} vs {', '.join(db)})")
        ka, kb = ({refine.label(r) for _, r in df.iterrows()} for df in (a, b))
        if only := sorted(ka ^ kb):
            raise UsageError(
                f"cannot pool {first} and {run}: different grids ({len(ka - kb)} cells only in {first}, "
                f"{len(kb - ka)} only in {run}; e.g. {only[0]})"
            )


def pool(found):
    """{run: findings}: per finding (joined on POOL_KEY), the median and range of the runs' values and in how
    many runs it was found (a crossover may exist in some only)."""
    rows = pd.concat(list(found.values()), ignore_index=True)
    # a speed-up is a finding per length (gss over dss at each); a crossover's bracket may differ between runs
    rows["length"] = rows.span.where(rows.finding == "speedup", "")
    out = []
    for (*key, _), g in rows.groupby([*POOL_KEY, "length"], sort=False):
        span = " / ".join(dict.fromkeys(g["span"]))  # the same lengths in every run, unless their statuses differ
        out.append(
            dict(
                zip(POOL_KEY, key, strict=True),
                median=g.value.median(),
                low=g.value.min(),
                high=g.value.max(),
                runs=len(g),
                detail="; ".join(p for p in (key[5], span) if p),
            )
        )
    return pd.DataFrame(out, columns=[*POOL_KEY, "median", "low", "high", "runs", "detail"])


def aligned(header, rows):
    widths = [max(len(str(v)) for v in column) for column in zip(header, *rows, strict=True)]
    return ["  ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in (header, *rows)]


def make_parser():
    p = Parser(prog="python -m bench.analysis", description="Scaling findings with 95% intervals, pooled over runs.")
    p.add_argument("run_dirs", nargs="+", metavar="RUN", help="a run directory (results/<run_id>)")
    return p


def main(argv=None):
    try:
        runs = list(dict.fromkeys(usage.run_dir(r) for r in make_parser().parse_args(argv).run_dirs))
        scaling = {run: analysis.load_scaling(run) for run in runs}
        if missing := [str(run) for run, df in scaling.items() if df is None]:
            raise UsageError(f"{missing[0]}: no scaling.csv (or no rows in it)")
        check_poolable(scaling)  # before anything is written
        found = {run: compute(df, source=run / "scaling.csv") for run, df in scaling.items()}
        for run, frame in found.items():
            write(run, found=frame)
    except (UsageError, ResultsError, OSError) as error:
        return fail(error)
    for run, frame in found.items():
        print(
            f"{run / NAME}: {len(frame)} findings, 95% intervals by bootstrap over each cell's repeats "
            f"({RESAMPLES} resamples; empty where the cells have no times_ms)"
        )
        print("\n".join(aligned(HEADER, display(frame))) + "\n")
    if len(found) > 1:
        print(f"across {len(found)} runs: each finding's median and range (min..max) of the runs' values")
        print("\n".join(aligned(POOLED, display(pool(found), runs=len(found)))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
