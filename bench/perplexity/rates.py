"""The learning-rate selection both tasks share (language modelling and recall): train the selection seed at every
rate of the grid, and while the best rate is the smallest or largest tried, one more rate a step of the grid's
ratio beyond it, at most `extensions` a side. A chosen rate then has a tried neighbour on both sides, or the report
names the edge it stopped at (bench/report/quality.py).

Extension rates are ordinary trainings: rows like the grid's, one of them possibly the selected. Rates given on
the command line (--lr) are trained as given: their cells carry extensions=0.
"""

from dataclasses import dataclass

EXTENSIONS = 2  # a preset grid's extensions a side


def step(low, high):
    """The geometric ratio of two neighbouring rates, rounded to 12 significant digits (0.012 / 0.006 is 2)."""
    return float(f"{high / low:.12g}")


def beyond(rate, ratio, direction):
    """The rate one step of `ratio` beyond `rate`, below (direction -1) or above (+1), at 12 significant digits so
    that rows hold 0.003, not 0.0030000000000000001."""
    return float(f"{rate * ratio**direction:.12g}")


@dataclass
class Tried:
    """One training of a selection: its rate, its score (higher is better), its rows and what the caller keeps of
    the best (a trained model, for the test split)."""

    rate: float
    score: float
    rows: list
    kept: object = None


def best_of(tried):
    """The best of the tried trainings; a tie keeps the smaller rate (a NaN score never wins)."""
    best = None
    for t in sorted(tried, key=lambda t: t.rate):
        if best is None or t.score > best.score or (best.score != best.score and t.score == t.score):
            best = t
    return best


def select(rates, fit, *, extensions=EXTENSIONS):
    """(every Tried in ascending rate, the best): fit(rate) -> Tried for each of `rates` (ascending, at least two),
    then beyond the smallest or largest while it is the best, `extensions` times a side at most. Only the best
    keeps its `kept`, so that a selection holds one trained model at a time besides the one training."""
    rates = sorted(set(rates))
    if len(rates) < 2:
        raise ValueError(f"a selection needs at least two rates, got {rates}")
    ratios = {-1: step(rates[0], rates[1]), 1: step(rates[-2], rates[-1])}
    tried, best, extended = [], None, {-1: 0, 1: 0}

    def add(rate):
        nonlocal best
        tried.append(fit(rate))
        new = best_of([t for t in (best, tried[-1]) if t is not None])
        if best is not None and new is not best:
            best.kept = None
        if new is not tried[-1]:
            tried[-1].kept = None
        best = new

    for rate in rates:
        add(rate)
    while True:
        ends = {-1: min(t.rate for t in tried), 1: max(t.rate for t in tried)}
        side = next((d for d in (-1, 1) if best.rate == ends[d] and extended[d] < extensions), None)
        if side is None:
            break
        extended[side] += 1
        add(beyond(ends[side], ratios[side], side))
    return sorted(tried, key=lambda t: t.rate), best
