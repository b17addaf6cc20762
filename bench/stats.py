"""The order statistics of a cell's repeats, shared by the timing loop and the read side (torch-free): the
distribution-free interval of a median, and the repeat times a row records (`times_ms`)."""

import functools
import math


@functools.cache
def median_interval(n, level=0.95):
    """(j, tail): the 0-based ranks j and n - 1 - j of n sorted repeats bound a distribution-free interval of their
    median that misses it with probability tail on each side, tail = P(Binomial(n, 1/2) <= j), j the largest with
    tail <= (1 - level) / 2. None when no rank gives the level (n < 6 at 95%)."""
    found, cumulative = None, 0.0
    for k in range(n // 2 + 1):
        cumulative += math.comb(n, k) / 2 ** n
        if cumulative > (1 - level) / 2:
            break
        found = (k, cumulative)
    return found


def repeat_times(value):
    """A times_ms cell's repeats, in order ([] when empty: runs from before the column); ValueError naming the first
    entry that is not a positive finite number."""
    times = []
    for entry in str(value).split():
        try:
            t = float(entry)
        except ValueError:
            raise ValueError(entry) from None
        if not 0 < t < math.inf:
            raise ValueError(entry)
        times.append(t)
    return times
