"""Which crossovers of a scaling run are known too loosely, and which cells to re-measure (torch-free).

A crossover (the length above which one model stays faster than another) is interpolated between the two
lengths that bracket it, from the time ratios of the two models there. Where the two curves run nearly
parallel, a small error in the ratio moves the crossover by many times as much. After its sweep, the scaling
suite asks `wide(rows, pairs, ci)` for the crossovers whose 95% interval is not within +-ci of the value and
re-measures the two groups around each (every cell at its two bracketing lengths, repeats interleaved), adding
repeats until `within` holds for the crossover or its time budget is spent; the rows, the sweep's paired rounds
followed by the refinement's, replace theirs in the CSV. The interval is the one findings.csv reports: the same
paired bootstrap (`log_ratios`), the same seeds (the cells' labels).
"""

from dataclasses import dataclass

import numpy as np

from bench.results import format_value
from bench.schema import TABLES
from bench.stats import RESAMPLES, crossover, percentile_interval, repeat_times, seeded

KEY = TABLES["scaling.csv"].key
CELL = tuple(c for c in KEY if c != "device")  # a cell, wherever it ran
COMPARED = ("mode", "dtype", "device", "batch", "dim", "compiled")  # what two crossing sweeps share
OPTIONS = tuple(c for c in KEY if c not in (*COMPARED, "model", "seq_len"))


def label(row):
    """A cell's key as text (the seed of its bootstrap draws): the same for a CSV row and a frame's row."""
    return " ".join(f"{c}={v}" for c in CELL if c in row and (v := format_value(row[c])) != "")


@dataclass
class Crossover:
    fast: str  # the model faster above the crossover
    slow: str
    value: float  # tokens
    low: float | None  # the 95% interval, over the resamples where the crossover exists
    high: float | None
    missing: float  # share of the resamples without a crossover
    bracket: tuple  # the key rows of fast and slow at the two bracketing lengths

    def within(self, ci):
        """Whether the 95% interval lies within +-ci of the value (and the crossover exists in 97.5% of the
        resamples: more without it, and the interval reaches past the lengths measured)."""
        return (
            self.missing <= 0.025
            and self.low is not None
            and self.low >= self.value * (1 - ci)
            and self.high <= self.value * (1 + ci)
        )

    def pair(self):
        """Which two sweeps cross: model, shared settings and options of the fast one and of the slow one."""
        return tuple((r["model"], *(format_value(r[c]) for c in (*COMPARED, *OPTIONS))) for r in self.bracket[:2])

    def describe(self):
        a = self.bracket[0]
        return (
            f"{a['mode']} {a['dtype']}: {self.fast} faster than {self.slow} above {self.value:,.0f} tokens "
            f"(95% interval {format_interval(self.low, self.high)})"
        )


def format_interval(low, high):
    return "none" if low is None else f"{low:,.0f}..{high:,.0f}"


def cells_by_sweep(rows):
    """{(compared, model): {options: {seq_len: row}}} of the ok rows with repeats."""
    out = {}
    for row in rows:
        if row["status"] == "ok" and str(row.get("times_ms", "")).strip():
            options = tuple(format_value(row[c]) for c in OPTIONS)
            compared = tuple(format_value(row[c]) for c in COMPARED)
            out.setdefault((compared, row["model"]), {}).setdefault(options, {})[int(row["seq_len"])] = row
    return out


def crossovers(rows, pairs):
    """The crossovers, either way round, of every two sweeps of each pair of models in `pairs` that share mode,
    dtype, device, batch, width and compilation (scaling.csv rows, as read or as written)."""
    found, series = [], cells_by_sweep(rows)
    for a_model, b_model in pairs:
        for (compared, model), a_sweeps in series.items():
            for a in a_sweeps.values() if model == a_model else ():
                for b in series.get((compared, b_model), {}).values():
                    found += [c for c in (one(a, b, a_model, b_model), one(b, a, b_model, a_model)) if c]
    return found


def one(fast, slow, fast_model, slow_model):
    """The crossover of sweep `fast` under `slow` ({seq_len: row} each), or None where there is none."""
    common = sorted(set(fast) & set(slow))
    if len(common) < 2:
        return None
    ratio, draws = log_ratios(fast, slow, common)
    value = crossover(common, ratio)[0]
    if np.isnan(value):
        return None
    low, high, missing = percentile_interval(crossover(common, draws))
    last = max(i for i, r in enumerate(ratio) if r >= 0)
    bracket = tuple(sweep[L] for L in common[last : last + 2] for sweep in (fast, slow))
    return Crossover(fast_model, slow_model, float(value), low, high, missing, bracket)


def times_of(row):
    """A row's repeats (bench.stats.repeat_times), or None when it records none (an empty or missing times_ms)."""
    text = row.get("times_ms", "")
    return repeat_times(text) if isinstance(text, str) and text.strip() else None


def log_ratios(a, b, lengths, resamples=RESAMPLES):
    """log(time of a / time of b) at `lengths` ({seq_len: row} each, rows as read or a frame's rows), as
    (points (m,), draws (resamples, m) or None). Two cells at one length were timed as one interleaved group: round
    i of each ran back to back, so a drift of the machine falls on both. A length's point is therefore the median,
    over the rounds both ran, of log(a_i / b_i) (a paired comparison, in which that drift cancels), and its draws
    the medians of those rounds resampled with replacement (a paired bootstrap, seeded by the two cells' labels:
    findings.csv and the refinement draw the same). Without repeats at some length, the points are the log ratios
    of the recorded time_ms and there are no draws (nor with resamples=0)."""
    pairs = [(times_of(a[L]), times_of(b[L])) for L in lengths]
    if any(x is None or y is None for x, y in pairs):
        return np.log([float(a[L]["time_ms"]) / float(b[L]["time_ms"]) for L in lengths]), None
    points, draws = [], []
    for L, (x, y) in zip(lengths, pairs, strict=True):
        n = min(len(x), len(y))
        r = np.log(np.asarray(x[:n]) / np.asarray(y[:n]))
        points.append(np.median(r))
        if resamples:
            rng = seeded(f"{label(a[L])} | {label(b[L])}")
            draws.append(np.median(r[rng.integers(0, n, size=(resamples, n))], axis=1))
    return np.array(points), np.stack(draws, axis=1) if draws else None


def wide(rows, pairs, ci):
    """The crossovers of `pairs` whose interval is not within +-ci."""
    return [c for c in crossovers(rows, pairs) if not c.within(ci)]
