"""The statistics of a cell's repeats, shared by the timing loop, the scaling suite and the read side (torch-free):
the distribution-free interval of a median and the standard error it gives (the gate's noise model), the repeat
times a row records (`times_ms`), and the bootstrap of the findings built on them (medians of resampled repeats,
the crossover of two sweeps, percentile intervals)."""

import functools
import math
import zlib
from statistics import NormalDist, median

import numpy as np


@functools.cache
def median_interval(n, level=0.95):
    """(j, tail): the 0-based ranks j and n - 1 - j of n sorted repeats bound a distribution-free interval of their
    median that misses it with probability tail on each side, tail = P(Binomial(n, 1/2) <= j), j the largest with
    tail <= (1 - level) / 2. None when no rank gives the level (n < 6 at 95%)."""
    found, cumulative = None, 0.0
    for k in range(n // 2 + 1):
        cumulative += math.comb(n, k) / 2**n
        if cumulative > (1 - level) / 2:
            break
        found = (k, cumulative)
    return found


# The gate's noise model: a time change within this many standard errors of the two medians (of the ratios' four,
# with --relative) is noise, whatever the tolerance.
NOISE_SIGMAS = 3.0


def standard_error_ms(row, suffix=""):
    """Standard error of a cell's median time (from the row's times_ms, time_iqr_ms and repeats, each name + suffix).
    With times_ms, from the repeats themselves, distribution-free: half the width of the order-statistic interval
    of the median (median_interval: 95% or more) divided by the normal quantile of its exact coverage,
    z = Phi^-1(1 - tail); one repeat gives 0. Without (runs from before times_ms), from the IQR and repeats by a
    normal approximation: sigma = IQR / 1.349, se(median) = 1.2533 sigma / sqrt(n)."""
    if times := repeat_times(row.get("times_ms" + suffix, "")):
        return median_standard_error(sorted(times))
    iqr, n = float(row["time_iqr_ms" + suffix]), max(1.0, float(row["repeats" + suffix]) or 1.0)
    return 1.2533 * (iqr / 1.349) / math.sqrt(n) if iqr == iqr else 0.0


def median_standard_error(times):
    """The distribution-free standard error of the median of sorted repeats (standard_error_ms)."""
    if len(times) == 1:
        return 0.0
    j, tail = median_interval(len(times)) or (0, 0.5 ** len(times))  # under 6 repeats: smallest and largest
    return (times[-1 - j] - times[j]) / (2 * NormalDist().inv_cdf(1 - tail))


def median_order_interval(values):
    """The distribution-free 95% interval of the median of `values` (median_interval's order statistics), which
    holds its level at any count, where a percentile bootstrap of a median of 10-17 values covers about 93%; under
    6 values, where no rank gives 95%, their smallest and largest (which cover 1 - 2^(1 - n))."""
    values = np.sort(np.asarray(values, dtype=float))
    j = (median_interval(len(values)) or (0,))[0]
    return float(values[j]), float(values[len(values) - 1 - j])


def time_beside(ref, rounds):
    """(median ms, its standard error) of a reference cell over the rounds another cell of its length ran beside
    it: its first `rounds` repeats. The cells of a length run their repeats in interleaved rounds, and a
    crossover's refinement adds rounds to the four cells around it afterwards, when the machine may run at
    another speed: a cell's ratio to a refined reference over all the reference's rounds moves far more between
    identical runs than over the rounds they shared (docs/regression-gate.md). The whole row without repeat times
    or extra rounds."""
    times = repeat_times(ref.get("times_ms", ""))
    if not 0 < rounds < len(times):
        return float(ref["time_ms"]), standard_error_ms(ref)
    kept = sorted(times[: int(rounds)])
    return median(kept), median_standard_error(kept)


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


def format_times(times):
    """Repeat times as a row records them (times_ms, gauge_times_ms; bench.ab's per-round ratios): 6 significant
    digits, space-separated, read back by repeat_times."""
    return " ".join(format(t, ".6g") for t in times)


# The bootstrap of the scaling findings (bench.analysis.findings) and of the suite's crossover refinement
# (bench.analysis.refine):
# both draw a cell's medians from the same seed, so that they find the same interval from the same repeats.
RESAMPLES = 2000
SEED = 0


def median_draws(times, label, resamples=RESAMPLES):
    """(resamples,) medians of a cell's repeats resampled with replacement, seeded by the cell's label (so that a
    cell's draws do not depend on what else is resampled)."""
    times = np.asarray(times, dtype=float)
    return np.median(times[seeded(label).integers(0, len(times), size=(resamples, len(times)))], axis=1)


def seeded(label):
    """The bootstrap's generator for a label (a cell's key, or a pair's): the same draws wherever they are made."""
    return np.random.default_rng([SEED, zlib.crc32(label.encode())])


def crossover(lengths, log_ratio):
    """Along the last axis of log(time a / time b) at ascending `lengths`, (..., m): the length above which a stays
    faster, interpolated in log-log between the last length where a was slower and the next; NaN where a never
    becomes faster or already was at the first length."""
    log_ratio = np.atleast_2d(log_ratio)
    m, rows = log_ratio.shape[1], np.arange(len(log_ratio))
    exists = (log_ratio[:, -1] < 0) & (log_ratio[:, 0] >= 0)
    last = np.minimum(m - 1 - np.argmax(log_ratio[:, ::-1] >= 0, axis=1), m - 2)  # the last length a was slower
    x = np.log(lengths)
    r0, r1 = log_ratio[rows, last], log_ratio[rows, last + 1]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):  # rows without a crossover are dropped below
        at = np.exp(x[last] + r0 / (r0 - r1) * (x[last + 1] - x[last]))
    return np.where(exists, at, np.nan)


def edge_crossover(lengths, log_ratio):
    """crossover(), with no NaN: where a is already faster at the first length (and at the last), the first length;
    where a is not faster at the last (it never becomes faster, or crosses back), the last length. The crossover's
    unconditional resamples (bench.analysis.refine.locate)."""
    log_ratio = np.atleast_2d(log_ratio)
    at = crossover(lengths, log_ratio)
    edge = np.where(log_ratio[:, -1] < 0, lengths[0], lengths[-1])
    return np.where(np.isnan(at), edge, at)


def percentile_interval(draws):
    """(low, high, missing): the 2.5th and 97.5th percentiles of the finite draws (None, None without any) and the
    share of draws where the finding does not exist (NaN)."""
    finite = draws[np.isfinite(draws)]
    low, high = np.percentile(finite, [2.5, 97.5]) if len(finite) else (None, None)
    return low, high, 1 - len(finite) / len(draws)
