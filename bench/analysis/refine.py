"""Which crossovers of a scaling run are known too loosely, and which cells to re-measure (torch-free).

A crossover (the length above which one model stays faster than another) is interpolated between the two
lengths that bracket it, from the time ratios of the two models there. Where the two curves run nearly
parallel, a small error in the ratio moves the crossover by many times as much. After its sweep, the scaling
suite asks `wide(rows, pairs, ci)` for the crossovers whose 95% interval is not within +-ci of the value and
re-measures the four cells around each (the two models at the two bracketing lengths, repeats interleaved), adding
rounds until `within` holds for the crossover or its time budget is spent; the rows replace theirs in the CSV, every
cell of the two groups cut to the sweep's rounds that the refined cells all ran (`aligned_rounds`) and the refined
ones followed by the refinement's rounds. The interval is the one findings.csv reports: the same paired bootstrap
(`log_ratios`), the same seeds (the cells' labels), the same unconditional interval (`locate`).
"""

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from bench.results import format_value
from bench.schema import TABLES
from bench.stats import RESAMPLES, crossover, edge_crossover, percentile_interval, repeat_times, seeded

KEY = TABLES["scaling.csv"].key
CELL = tuple(c for c in KEY if c != "device")  # a cell, wherever it ran
COMPARED = ("mode", "dtype", "device", "batch", "dim", "compiled")  # what two crossing sweeps share
OPTIONS = tuple(c for c in KEY if c not in (*COMPARED, "model", "seq_len"))


def label(row):
    """A cell's key as text (the seed of its bootstrap draws): the same for a CSV row and a frame's row."""
    return " ".join(f"{c}={v}" for c in CELL if c in row and (v := format_value(row[c])) != "")


# A share of the resamples at the grid's edge (the crossover below its shortest length, or above its longest) from
# which a 95% interval reaches that edge; an interval that reaches both says nothing of where the crossover is and is
# withheld.
EDGE = 0.025


class Located(NamedTuple):
    """A crossover with its 95% interval (locate)."""

    value: float  # tokens: interpolated, or the shortest length where `fast` is already faster there
    low: float | None  # None: no interval (no repeats), or withheld (it reaches below and above the grid)
    high: float | None
    below: float  # share of the resamples where `fast` is already faster at the shortest length
    above: float  # share where it is not faster at the longest (never becomes faster, or crosses back)
    last: int  # index of the bracket's shorter length
    crosses: bool = True  # whether the points cross inside the grid (else value is the shortest length)
    conditional: bool = False

    def withheld(self):
        return not self.conditional and self.below >= EDGE and self.above >= EDGE

    def notes(self, lengths):
        """What detail says of the interval: where it reaches past the grid, why it is withheld."""
        if self.conditional:
            share = self.below + self.above
            return [f"no crossover in {share:.1%} of resamples"] if share > 0 else []
        below = f"faster already at seq_len {lengths[0]} in {self.below:.1%}"
        above = f"not faster at seq_len {lengths[-1]} in {self.above:.1%}"
        if self.withheld():
            return [f"interval withheld: it reaches below and above the grid ({below}, {above} of resamples)"]
        return [
            f"the interval reaches {where} the grid ({what} of resamples)"
            for where, what, share in (("below", below, self.below), ("above", above, self.above))
            if share >= EDGE
        ]

    def span(self, lengths):
        if not self.crosses:
            return f"at or below seq_len {lengths[0]} (faster at every common length)"
        return f"between seq_len {lengths[self.last]} and {lengths[self.last + 1]}"


def locate(lengths, ratio, draws, *, conditional=False):
    """The crossover of `fast` under `slow` from log(time of fast / slow) at ascending common `lengths`: points (m,)
    and draws (resamples, m) or None; None where there is none to report. Unconditional: a resample without a
    crossover is kept, at the shortest length where fast is already faster there (and at the longest), at the
    longest where it is not faster at the longest (stats.edge_crossover); the interval is the 2.5th..97.5th
    percentiles over all resamples, its end the edge itself where EDGE or more of them lie there, and withheld where
    both ends do. A crossover is reported where fast is faster at the longest length and it crosses inside the grid
    in the points, or in EDGE or more of the resamples with an interval not withheld (the points' value then the
    shortest length). One function for findings.csv and the scaling suite's refinement. conditional=True: the rule
    before issue 28, the interval over the resamples where a crossover exists and none reported where the points
    have none (the coverage simulation's undone variant)."""
    lengths = np.asarray(lengths, dtype=float)
    if ratio[-1] >= 0:
        return None
    value = float(edge_crossover(lengths, ratio)[0])
    inside = value > lengths[0] or ratio[0] >= 0
    last = max((i for i, r in enumerate(ratio) if r >= 0), default=0)
    if draws is None:
        return Located(value, None, None, 0.0, 0.0, last) if inside else None
    if conditional:
        if not inside:
            return None
        low, high, missing = percentile_interval(crossover(lengths, draws))
        return Located(value, low, high, missing, 0.0, last, conditional=True)
    at = edge_crossover(lengths, draws)
    below, above = np.mean(at <= lengths[0]), np.mean(at >= lengths[-1])
    if not inside and 1 - below - above < EDGE:
        return None
    low, high = np.percentile(at, [2.5, 97.5])
    low, high = lengths[0] if below >= EDGE else low, lengths[-1] if above >= EDGE else high
    found = Located(value, float(low), float(high), float(below), float(above), last, crosses=inside)
    if not found.withheld():
        return found
    return found._replace(low=None, high=None) if inside else None  # an edge and no interval: nothing to report


@dataclass
class Crossover:
    fast: str  # the model faster above the crossover
    slow: str
    value: float  # tokens
    low: float | None  # the 95% interval (locate)
    high: float | None
    below: float  # share of the resamples where fast is already faster at the shortest length
    above: float  # share where it is not faster at the longest
    bracket: tuple  # the key rows of fast and slow at the two bracketing lengths

    @property
    def missing(self):
        """Share of the resamples without a crossover inside the lengths measured."""
        return self.below + self.above

    def within(self, ci):
        """Whether the 95% interval lies within +-ci of the value and reaches past neither end of the lengths
        measured."""
        return (
            self.low is not None
            and max(self.below, self.above) < EDGE
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
    """The crossover of sweep `fast` under `slow` ({seq_len: row} each), or None where there is none (locate)."""
    common = sorted(set(fast) & set(slow))
    if len(common) < 2:
        return None
    found = locate(common, *log_ratios(fast, slow, common))
    if found is None:
        return None
    bracket = tuple(sweep[L] for L in common[found.last : found.last + 2] for sweep in (fast, slow))
    return Crossover(fast_model, slow_model, found.value, found.low, found.high, found.below, found.above, bracket)


def times_of(row, column="times_ms"):
    """A row's repeats (bench.stats.repeat_times), or None when it records none (an empty or missing times_ms)."""
    text = row.get(column, "")
    return repeat_times(text) if isinstance(text, str) and text.strip() else None


def gauge_of(row):
    """The drift gauge's time in each round of a row's repeats (gauge_times_ms), or None when it has none beside
    each repeat (runs from before it was recorded)."""
    gauge, times = times_of(row, "gauge_times_ms"), times_of(row)
    return gauge if gauge is not None and times is not None and len(gauge) == len(times) else None


def group_of(row):
    """The interleaved group a cell was timed in (bench.core.config.group_key, from a row): its length and
    everything two compared cells share."""
    return (*(format_value(row[c]) for c in COMPARED), format_value(row["seq_len"]))


def aligned_rounds(rows, refined, *, whole_group=True):
    """The sweep's rounds a refinement keeps before it appends its own to the `refined` cells (labels):
    {label: (times, gauge times or None)} of every ok, timed cell of their groups, each cut to the number of rounds
    that every refined cell of its group ran. Round i of two cells of a group is then one round wherever both have
    it: of the sweep below that count, of the refinement above it, which only refined cells reach (log_ratios pairs
    by position). whole_group=False cuts the refined cells only, the rule before issue 28, under which a refinement
    round of a refined cell was paired with a later sweep round of another (the coverage simulation's undone
    variant)."""
    timed = {label(r): r for r in rows if r["status"] == "ok" and times_of(r) is not None}
    common = {}
    for key in refined:
        group = group_of(timed[key])
        common[group] = min(common.get(group, math.inf), len(times_of(timed[key])))
    out = {}
    for key, row in timed.items():
        if group_of(row) in common and (whole_group or key in refined):
            n, gauge = common[group_of(row)], gauge_of(row)
            out[key] = (times_of(row)[:n], None if gauge is None else gauge[:n])
    return out


def log_ratios(a, b, lengths, resamples=RESAMPLES):
    """log(time of a / time of b) at `lengths` ({seq_len: row} each, rows as read or a frame's rows), as
    (points (m,), draws (resamples, m) or None). Two cells at one length were timed as one interleaved group: round
    i of each ran back to back, so a drift of the machine falls on both. A length's point is therefore the median,
    over the rounds both ran, of log(a_i / b_i) (a paired comparison, in which that drift cancels), and its draws
    the medians of those rounds resampled with replacement (a paired bootstrap, seeded by the two cells' labels:
    findings.csv and the refinement draw the same). Without repeats at some length, the points are the log ratios
    of the recorded time_ms and there are no draws (nor with resamples=0)."""
    pairs = [paired_logs(a[L], b[L]) for L in lengths]
    if any(r is None for r in pairs):
        return np.log([float(a[L]["time_ms"]) / float(b[L]["time_ms"]) for L in lengths]), None
    points, draws = [], []
    for L, r in zip(lengths, pairs, strict=True):
        points.append(np.median(r))
        if resamples:
            rng = seeded(f"{label(a[L])} | {label(b[L])}")
            draws.append(np.median(r[rng.integers(0, len(r), size=(resamples, len(r)))], axis=1))
    return np.array(points), np.stack(draws, axis=1) if draws else None


def paired_logs(a, b):
    """log(a_i / b_i) over the rounds both cells (rows) ran, or None where either records no repeats."""
    x, y = times_of(a), times_of(b)
    if x is None or y is None:
        return None
    n = min(len(x), len(y))
    return np.log(np.asarray(x[:n]) / np.asarray(y[:n]))


def wide(rows, pairs, ci):
    """The crossovers of `pairs` whose interval is not within +-ci."""
    return [c for c in crossovers(rows, pairs) if not c.within(ci)]
