"""The scaling findings of a run with 95% intervals, one row each in findings.csv (numpy + pandas, no torch).

    python -m bench.analysis RUN [RUN ...]    # writes, prints each RUN/findings.csv; several runs: pooled too

Per (mode, dtype), on the length sweeps of bench.analysis.model_sweeps (a sweep's options go in detail):
- slope: the exponent k of time ~ seq_len^k, least squares over the longest max(3, ceil(n/2)) of its n ok lengths
  (none when n < 3; detail says "secant" where that is the line through the end points: three lengths equally
  spaced on the log axis), fitted to each length's time relative to the drift gauge of its group (series.py), whose
  interval so carries a drift of the machine between lengths; without gauge times (older runs), fitted to the
  recorded medians with each cell's repeats bootstrapped on its own, and detail says the interval does not carry
  that drift;
- slope_diff: each sweep's exponent minus the reference model's (bench.schema.REFERENCE_MODEL) over the fitted
  lengths of the lengths they share, fitted to the paired round ratios at each length (no gauge needed: a drift
  shared by a round cancels); detail gives the common range and each one's own exponent over it;
- crossover: the length above which `model` stays faster than `other`, for each two models that cross, from the
  paired round ratios; its interval is unconditional (refine.locate: a resample without a crossover counts at the
  grid's edge, the interval then reaching past it, and is withheld where it reaches past both);
- speedup: the reference model's time / the model's at their longest common length, and at every common length
  dss's / gss's (the GSS paper's claim) and gss's / gss-fast's (the same function, implemented faster), each the
  median over the paired rounds of the two cells' time ratio, its interval the distribution-free one of that
  median (the ratios' order statistics, stats.median_order_interval: a percentile bootstrap of a median of 10-17
  rounds covers about 93%).

A comparison at one length pairs the two cells' rounds (refine.log_ratios): round i of every cell of a group ran
back to back, so the median of the per-round ratios and a bootstrap of the rounds in pairs let the machine's
drift cancel. Without repeats (older runs) a finding takes the ratio of time_ms and has no interval. ci_low,
ci_high are the 2.5th and 97.5th percentiles over RESAMPLES resamples (a speed-up's: order statistics); draws are
seeded by the cells' keys: an interval does not depend on the run's other cells. Noise between runs is not in the
intervals: several runs given together show it, as each finding's range.

On CUDA, where every timed cell of a (mode, dtype) has its graph-replayed gpu_ms and replays (bench.analysis.on_clock),
its findings read those instead of the eager times, which launching kernels bounds on short steps. The replays of
two cells ran one cell after the other, not in paired rounds: a comparison takes the ratio of the two medians, its
interval a bootstrap of each cell's replays on its own, and a slope has no drift gauge; detail names the clock
(bench.analysis.REPLAYED, or how many cells lack gpu_ms where only some have it).
"""

import csv
import io
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from bench import analysis, usage
from bench.analysis import quality, refine, roofline, zoology
from bench.analysis.series import NO_GAUGE, Draws, all_series, fit_span, slope
from bench.results import ResultsError, atomic_write_text, format_value
from bench.schema import REFERENCE_MODEL, TABLES
from bench.stats import (  # noqa: F401  (crossover: the tests' door)
    RESAMPLES,
    crossover,
    median_order_interval,
    percentile_interval,
)
from bench.usage import Parser, UsageError, fail

NAME = "findings.csv"
TIMING = ("slope", "slope_diff", "crossover", "speedup")  # the findings of this module; of_run adds the trainings'

COLUMNS = TABLES[NAME].columns
EVERY_LENGTH = (("gss", "dss"), ("gss-fast", "gss"))  # (model, over): speed-ups at every common length
POOL_KEY = ["finding", "mode", "dtype", "model", "other", "options", "unit"]
DIGITS = {
    "fraction": ".3f",
    "exponent": ".3f",
    "tokens": ",.0f",
    "x": ".2f",
    "bits/byte": ".3f",
    "accuracy": ".3f",
    "width": ".0f",
}
HEADER = ("finding", "mode", "dtype", "model", "other", "value", "95% interval", "unit", "detail")
POOLED = ("finding", "mode", "dtype", "model", "other", "median", "range", "unit", "runs", "detail")


def row(finding, model, other, value, draws, *, unit, options="", span="", notes=(), interval=None):
    """One finding of a (mode, dtype), which compute adds; draws (resamples,), or None (no interval); `interval`
    (low, high) instead, where the finding takes its own (crossovers)."""
    low = high = None
    if interval is not None:
        low, high = interval
    elif draws is not None:
        low, high, _ = percentile_interval(draws)
    detail = "; ".join(p for p in (options, span, *notes) if p)
    return analysis.finding_row(
        finding, model, other, float(value), low, high, unit=unit, detail=detail, options=options, span=span
    )


def slope_rows(found):
    out = []
    for s in found:
        lengths = analysis.fitted_lengths(s.point.index)
        if lengths:
            points, draws, gauged = s.levels(lengths)
            out.append(
                row(
                    "slope",
                    s.model,
                    "",
                    slope(lengths, points),
                    None if draws is None else slope(lengths, draws),
                    unit="exponent",
                    options=s.options,
                    span=fit_span(lengths),
                    notes=() if gauged or draws is None else (NO_GAUGE,),
                )
            )
    return out


def slope_diff_rows(found, resamples=RESAMPLES):
    """Each sweep's exponent minus the reference model's over the fitted lengths of their common lengths, from the
    paired round ratios at each length."""
    out = []
    for ref in (s for s in found if s.model == REFERENCE_MODEL):
        for s in (s for s in found if s.model != REFERENCE_MODEL):
            lengths = analysis.fitted_lengths(set(s.point.index) & set(ref.point.index))
            if lengths:
                ratio, draws = s.ratio(ref, lengths, resamples)
                own = f"{s.label} {s.exponent(lengths):.3f}, {ref.label} {ref.exponent(lengths):.3f}"
                out.append(
                    row(
                        "slope_diff",
                        s.model,
                        REFERENCE_MODEL,
                        slope(lengths, ratio),
                        None if draws is None else slope(lengths, draws),
                        unit="exponent",
                        options=s.options_against(ref),
                        span=fit_span(lengths),
                        notes=(own,),
                    )
                )
    return out


def crossover_rows(found, resamples=RESAMPLES, *, conditional=False):
    """Every pair of two models' series that cross (refine.locate), the one faster at the long lengths first."""
    out = []
    for i, a in enumerate(found):
        for b in found[i + 1 :]:
            common = sorted(set(a.point.index) & set(b.point.index))
            if a.model == b.model or len(common) < 2:
                continue
            for fast, slow in ((a, b), (b, a)):
                at = refine.locate(common, *fast.ratio(slow, common, resamples), conditional=conditional)
                if at is not None:
                    out.append(
                        row(
                            "crossover",
                            fast.model,
                            slow.model,
                            at.value,
                            None,
                            unit="tokens",
                            options=fast.options_against(slow),
                            span=at.span(common),
                            notes=at.notes(common),
                            interval=(at.low, at.high),
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
                    # paired rounds: their median and its order-statistic interval; else the medians' ratio and
                    # (several cells at a length) a bootstrap of their repeats
                    if (logs := ref.paired(s, length)) is not None:
                        ratio, draws, interval = np.median(logs), None, tuple(np.exp(median_order_interval(logs)))
                    else:
                        (ratio,), draws = ref.ratio(s, [length], resamples)
                        interval = None
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
                            interval=interval,
                        )
                    )
    return out


def compute(df, *, source="scaling.csv", resamples=RESAMPLES, conditional=False):
    """The findings of a scaling frame: the findings.csv columns, then `options` and `span` (the parts of detail
    that say which sweep and which lengths; the pooling of runs joins on them). ResultsError for repeat times that
    do not parse, naming the cell. conditional: crossover intervals by the rule before issue 28 (refine.locate)."""
    out = []
    if df is not None and "status" in df.columns and not analysis.ok(df).empty:
        draws = Draws(source, resamples)
        for mode, dtype in analysis.modes_dtypes(df):
            group, clock = analysis.on_clock(df[(df["mode"] == mode) & (df.dtype == dtype)])
            found = all_series(group, draws, mode=mode, dtype=dtype, paired=clock == analysis.EAGER)
            rows = [
                *slope_rows(found),
                *slope_diff_rows(found, resamples),
                *crossover_rows(found, resamples, conditional=conditional),
                *speedup_rows(found, resamples),
            ]
            note = analysis.clock_note(group)
            out += [
                dict(r, mode=mode, dtype=dtype, detail="; ".join(p for p in (r["detail"], note) if p)) for r in rows
            ]
    return pd.DataFrame(out, columns=[*COLUMNS, "options", "span"])


def speedups(found, model, over):
    """The speedup rows of `model` over `over` in the findings (None: no findings, no rows)."""
    if found is None:
        return pd.DataFrame(columns=[*COLUMNS, "options", "span"])
    return found[(found.finding == "speedup") & (found.model == model) & (found.other == over)]


def of_run(run_dir):
    """The run's findings: compute() of its scaling.csv and its roofline fractions (bench.analysis.roofline, against
    env.json's limits), then those over seeds of its trainings (bench.analysis.quality) and of its Zoology grid
    (bench.analysis.zoology); None when it has none of them."""
    df = analysis.load_scaling(run_dir)
    parts = [] if df is None else [compute(df, source=Path(run_dir) / "scaling.csv")]
    if fractions := roofline.compute(df, roofline.limits_of(run_dir)):
        parts.append(pd.DataFrame(fractions, columns=[*COLUMNS, "options", "span"]))
    parts += [f for f in (quality.compute(run_dir), zoology.compute(run_dir)) if not f.empty]
    return pd.concat(parts, ignore_index=True) if parts else None


def write(run_dir, *, out_dir=None, found=None):
    """Writes findings.csv (atomically) into out_dir, default the run directory, and returns the findings
    (`found`, when given, else of_run(run_dir)); without any, None and nothing is written."""
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
    p = Parser(prog="python -m bench.analysis", description="Findings with 95% intervals, pooled over runs.")
    p.add_argument("run_dirs", nargs="+", metavar="RUN", help="a run directory (results/<run_id>)")
    return p


def main(argv=None):
    try:
        runs = list(dict.fromkeys(usage.run_dir(r) for r in make_parser().parse_args(argv).run_dirs))
        scaling = {run: analysis.load_scaling(run) for run in runs}
        if missing := [str(run) for run, df in scaling.items() if df is None]:
            raise UsageError(f"{missing[0]}: no scaling.csv (or no rows in it)")
        check_poolable(scaling)  # before anything is written
        found = {run: of_run(run) for run in scaling}
        for run, frame in found.items():
            write(run, found=frame)
    except (UsageError, ResultsError, OSError) as error:
        return fail(error)
    for run, frame in found.items():
        print(
            f"{run / NAME}: {len(frame)} findings, 95% intervals: timings by bootstrap over the cells' rounds "
            f"({RESAMPLES} resamples; empty where the cells have no times_ms), trainings over seeds (Student's t)"
        )
        print("\n".join(aligned(HEADER, display(frame))) + "\n")
    if len(found) > 1:
        print(f"across {len(found)} runs: each finding's median and range (min..max) of the runs' values")
        print("\n".join(aligned(POOLED, display(pool(found), runs=len(found)))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
