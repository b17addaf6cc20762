"""Which crossovers of a scaling run are known too loosely, and which cells to re-measure (torch-free).

A crossover (the length above which one model stays faster than another) is interpolated between the two
lengths that bracket it, from the time ratios of the two models there. Where the two curves run nearly
parallel, a ratio known to +-3% moves the crossover by +-30%. After its sweep, the scaling suite asks
`wide(rows, pairs, ci)` for the crossovers whose 95% interval is not within +-ci of the value and re-measures
the two groups around each (every cell at its two bracketing lengths, repeats interleaved), adding repeats until
`within` holds for the crossover or its time budget is spent; the fresh rows replace theirs in the CSV. The
interval is the one findings.csv reports: the same bootstrap (bench.stats), the same seeds (a cell's `label`).
"""

from dataclasses import dataclass

import numpy as np

from bench.results import format_value
from bench.schema import TABLES
from bench.stats import crossover, median_draws, percentile_interval, repeat_times

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
        return (self.missing <= 0.025 and self.low is not None and self.low >= self.value * (1 - ci)
                and self.high <= self.value * (1 + ci))

    def sweeps(self):
        """Which two sweeps cross: model, shared settings and options of the fast one and of the slow one."""
        return tuple((r["model"], *(format_value(r[c]) for c in (*COMPARED, *OPTIONS))) for r in self.bracket[:2])

    def describe(self):
        a = self.bracket[0]
        return (f"{a['mode']} {a['dtype']}: {self.fast} faster than {self.slow} above {self.value:,.0f} tokens "
                f"(95% interval {format_interval(self.low, self.high)})")


def format_interval(low, high):
    return "none" if low is None else f"{low:,.0f}..{high:,.0f}"


def sweeps(rows):
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
    found, series = [], sweeps(rows)
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
    f, s = (np.array([float(sweep[L]["time_ms"]) for L in common]) for sweep in (fast, slow))
    ratio = np.log(f / s)
    value = crossover(common, ratio)[0]
    if np.isnan(value):
        return None
    draws = [np.stack([median_draws(repeat_times(sweep[L]["times_ms"]), label(sweep[L])) for L in common], axis=1)
             for sweep in (fast, slow)]
    low, high, missing = percentile_interval(crossover(common, np.log(draws[0] / draws[1])))
    last = max(i for i, r in enumerate(ratio) if r >= 0)
    bracket = tuple(sweep[L] for L in common[last:last + 2] for sweep in (fast, slow))
    return Crossover(fast_model, slow_model, float(value), low, high, missing, bracket)


def wide(rows, pairs, ci):
    """The crossovers of `pairs` whose interval is not within +-ci."""
    return [c for c in crossovers(rows, pairs) if not c.within(ci)]
