"""The length sweeps the findings compare, with the bootstrap draws of each length (numpy + pandas, no torch).

A cell's repeats are drawn once, seeded by the cell's key (refine.label), so that a finding's interval does not
depend on the run's other cells: RESAMPLES resamples of its rounds with replacement, the median of each. Two
kinds of draws serve two kinds of comparison:
- within a length (crossovers, speed-ups, slope differences), the paired rounds of two cells of one interleaved
  group (refine.log_ratios), in which a drift of the machine shared by the round cancels;
- across lengths (a sweep's slope), the cell's time relative to the drift gauge timed in the same round, log(t_i /
  g_i): the groups of different lengths run one after another, so a drift that moves a whole group lies outside
  every bootstrap of its own repeats, but not outside the ratio to a gauge whose true time never changes. A run
  without gauge times (older runs) falls back on the cell's own repeats (`time draws`), whose slope interval does
  not carry a drift between lengths.
"""

from dataclasses import dataclass

import numpy as np
import pandas as pd

from bench import analysis
from bench.analysis import refine
from bench.results import ResultsError
from bench.stats import RESAMPLES, median_draws

NO_GAUGE = "no drift gauge: the interval does not carry drift between lengths"


class Draws:
    """Each ok cell's draws, drawn once: of its repeat times (cell) and of its times relative to the gauge (gauged)."""

    def __init__(self, source, resamples=RESAMPLES):
        self.source, self.resamples, self.cells = source, resamples, {}

    def parsed(self, row, column):
        """An ok cell's repeats in `column`, None when empty; ResultsError naming the cell when they do not parse."""
        try:
            return refine.times_of(row, column)
        except ValueError:
            raise ResultsError(
                f"{self.source}: malformed {column} {row.get(column)!r} in the ok cell {refine.label(row)}"
            ) from None

    def cell(self, row):
        """(resamples,) medians of the cell's resampled repeats; None without times_ms."""
        key = refine.label(row), "times", row.get("times_ms", "")
        if key not in self.cells:
            times = self.parsed(row, "times_ms")
            self.cells[key] = None if times is None else median_draws(times, key[0], self.resamples)
        return self.cells[key]

    def gauged(self, row):
        """(point, draws) of log(time / gauge) over the cell's rounds: the median of the paired logs and the medians
        of its rounds resampled; None without a gauge time beside every repeat."""
        key = refine.label(row), "gauge", row.get("times_ms", ""), row.get("gauge_times_ms", "")
        if key not in self.cells:
            times, gauge = self.parsed(row, "times_ms"), self.parsed(row, "gauge_times_ms")
            found = None
            if times is not None and gauge is not None and len(gauge) == len(times):
                logs = np.log(np.asarray(times) / np.asarray(gauge))
                found = float(np.median(logs)), median_draws(logs, key[0], self.resamples) if self.resamples else None
            self.cells[key] = found
        return self.cells[key]

    def at_length(self, rows):
        """The draws of one length of a sweep (rows: its cells, dicts), the median of its cells'; None when a cell
        of it has no times_ms."""
        cells = [self.cell(r) for r in rows]
        return None if any(c is None for c in cells) else np.median(np.stack(cells), axis=0)

    def gauged_at_length(self, rows):
        """(point, draws) relative to the gauge of one length (the median of its cells'); None when a cell has none."""
        cells = [self.gauged(r) for r in rows]
        if any(c is None for c in cells):
            return None
        draws = None if self.resamples == 0 else np.median(np.stack([d for _, d in cells]), axis=0)
        return float(np.median([p for p, _ in cells])), draws


@dataclass
class LengthSeries:
    """A model's length sweep in one (mode, dtype), as the findings use it."""

    label: str  # as bench.analysis labels it: "gss", "gss kernel_N=64"
    model: str
    options: str  # the label's options: "", "kernel_N=64"
    point: pd.Series  # seq_len -> median recorded time_ms
    draws: dict  # seq_len -> (resamples,) medians of the cell's repeats, or None
    gauged: dict  # seq_len -> (log(time / gauge), its (resamples,) draws), or None
    cells: dict  # seq_len -> its one ok row (analysis.single_cells: none where several share it, or unpaired)

    def ratio(self, other, lengths, resamples):
        """log(time of this series / other's) at lengths, (points, draws or None): paired over the rounds of each
        length's interleaved group (refine.log_ratios) when each has one cell there, else from the medians."""
        if all(L in s.cells for s in (self, other) for L in lengths):
            return refine.log_ratios(self.cells, other.cells, lengths, resamples)
        a, b = self.stack(lengths), other.stack(lengths)
        points = np.log(self.point[lengths].to_numpy() / other.point[lengths].to_numpy())
        return points, None if a is None or b is None else np.log(a / b)

    def paired(self, other, length):
        """log(time of this series / other's) in each round both cells at `length` ran (refine.paired_logs); None
        unless each has one cell there, with its repeats."""
        if length in self.cells and length in other.cells:
            return refine.paired_logs(self.cells[length], other.cells[length])
        return None

    def options_against(self, other):
        """This series' options, and which of the other model's series it is compared with when that has options."""
        return " ".join(p for p in (self.options, f"vs {other.label}" if other.options else "") if p)

    def stack(self, lengths):  # (resamples, len(lengths)); None when a cell at one of them has no times_ms
        columns = [self.draws[length] for length in lengths]
        return None if any(c is None for c in columns) else np.stack(columns, axis=1)

    def levels(self, lengths):
        """log time at `lengths` for a slope, (points (k,), draws (resamples, k) or None, gauged): relative to the
        drift gauge where every cell has its times (gauged True), else the recorded medians and the draws of
        each cell's own repeats."""
        gauged = [self.gauged.get(L) for L in lengths]
        if all(g is not None for g in gauged):
            draws = [d for _, d in gauged]
            return np.array([p for p, _ in gauged]), None if draws[0] is None else np.stack(draws, axis=1), True
        draws = self.stack(lengths)
        return np.log(self.point[lengths].to_numpy()), None if draws is None else np.log(draws), False

    def exponent(self, lengths):
        """The fitted exponent over `lengths` (levels' points)."""
        return float(slope(lengths, self.levels(lengths)[0]))


def all_series(df, draws, *, mode, dtype, paired=True):
    """Every model's LengthSeries in (mode, dtype), with ok, timed cells (bench.analysis.model_sweeps). paired=False
    (graph-replayed times, bench.analysis.on_clock): no cells to pair, so every comparison takes the medians' ratio
    with the cells' own draws, unpaired."""
    out = []
    for model in analysis.ordered_models(df.model):
        for label, rows in analysis.model_sweeps(df, model, mode=mode, dtype=dtype).items():
            rows = analysis.ok(rows).dropna(subset=["time_ms"])
            by_length = {}
            for r in rows.to_dict("records"):  # dicts: a frame's rows are slow to index one by one
                by_length.setdefault(r["seq_len"], []).append(r)
            if by_length:
                out.append(
                    LengthSeries(
                        label,
                        model,
                        label[len(model) :].strip(),
                        rows.groupby("seq_len").time_ms.median().sort_index(),
                        {L: draws.at_length(cells) for L, cells in by_length.items()},
                        {L: draws.gauged_at_length(cells) for L, cells in by_length.items()},
                        {L: c[0] for L, c in by_length.items() if len(c) == 1 and paired},  # analysis.single_cells
                    )
                )
    return out


def slope(lengths, log_times):
    """Least-squares slope of log times on log(lengths) along the last axis; log_times (..., k)."""
    x = np.log(lengths) - np.log(lengths).mean()
    y = np.asarray(log_times)
    return (y - y.mean(axis=-1, keepdims=True)) @ x / (x @ x)


def fit_span(lengths):
    """The lengths of a fit as detail names them: through two lengths, or three equally spaced on the log axis,
    least squares is the secant through the end points, and says so."""
    x = np.log(lengths)
    secant = len(lengths) == 2 or (len(lengths) == 3 and np.isclose(x[1] - x[0], x[2] - x[1]))
    return f"{'secant of ' if secant else ''}seq_len {lengths[0]}..{lengths[-1]}"
