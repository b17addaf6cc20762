"""The synthetic source of the perplexity suite: blocks of first-order Markov text, each followed by an announced
copy of its tail, sampled exactly, with the source's exact entropy rate (the floor no model can beat with unbounded
context) and the floor a finite evaluation window allows (window_floor_bpb).
"""

from dataclasses import dataclass

import numpy as np
import torch

from bench.schema import SYNTHETIC_COPY_LEN, SYNTHETIC_MARKOV_LEN
from bench.usage import UsageError

MARKOV_ALPHABET = b"abcdefghijklmnopqrstuvwxyz .,;'-"
MARKER = ord("|")


class CorpusError(UsageError):
    """A corpus that cannot be loaded or cannot serve the requested windows."""


def _entropy_bits(p):
    p = np.asarray(p, dtype=np.float64)
    return -np.sum(np.where(p > 0, p * np.log2(np.where(p > 0, p, 1.0)), 0.0), axis=-1)


def stationary_distribution(transition_matrix):
    """pi with pi T = pi, sum(pi) = 1, solved in float64; the chain must have exactly one."""
    t = np.asarray(transition_matrix, dtype=np.float64)
    if t.ndim != 2 or t.shape[0] != t.shape[1] or t.shape[0] == 0:
        raise ValueError(f"transition matrix must be square, got shape {t.shape}")
    if (t < 0).any() or not np.allclose(t.sum(axis=1), 1.0, rtol=0, atol=1e-9):
        raise ValueError("transition matrix rows must be probability distributions (non-negative, sum 1)")
    n = len(t)
    system = np.vstack([t.T - np.eye(n), np.ones((1, n))])
    if np.linalg.matrix_rank(system) < n:
        raise ValueError("the chain has more than one stationary distribution (it is reducible)")
    return np.linalg.lstsq(system, np.r_[np.zeros(n), 1.0], rcond=None)[0]


def markov_entropy_rate(transition_matrix):
    """Entropy rate of a stationary first-order Markov chain in bits per symbol:
    H = -sum_i pi_i sum_j T_ij log2 T_ij, with pi the stationary distribution."""
    pi = stationary_distribution(transition_matrix)
    return float(pi @ _entropy_bits(transition_matrix))


def synthetic_entropy_rate(transition_matrix, *, markov_len, copy_len):
    """Exact entropy rate, in bits per byte, of the synthetic source (see Synthetic):
    (H(pi) + (markov_len - 1) * H_markov) / (markov_len + 1 + copy_len)."""
    h_first = float(_entropy_bits(stationary_distribution(transition_matrix)))
    return (h_first + (markov_len - 1) * markov_entropy_rate(transition_matrix)) / (markov_len + 1 + copy_len)


def unigram_entropy_bpb(data):
    """Empirical unigram (order-0) entropy of a byte tensor, bits per byte."""
    data = torch.as_tensor(data).reshape(-1)
    if data.numel() == 0:
        raise ValueError("unigram entropy of no bytes")
    counts = torch.bincount(data.long(), minlength=256).double().numpy()
    return float(_entropy_bits(counts / counts.sum()))


@dataclass(frozen=True)
class Synthetic:
    """Blocks of markov_len + 1 + copy_len bytes: markov_len symbols of a first-order Markov chain over
    `alphabet` printable bytes, the marker byte '|', then an exact copy of the block's last copy_len
    Markov bytes (so each copied byte repeats the byte copy_len + 1 positions back).

    Each block's chain starts afresh from the stationary distribution pi, so blocks are independent and
    every block can be sampled at once. Transition rows are Dirichlet(concentration) mixed with
    `smoothing` of the uniform distribution (irreducible, so pi is unique). The marker and the copy are
    determined by the past, hence the exact entropy rate (bits per byte)

        (H(pi) + (markov_len - 1) * H_markov) / (markov_len + 1 + copy_len),
        H_markov = -sum_i pi_i sum_j T_ij log2 T_ij.

    Sampling is inverse-CDF in float64, exact up to float64 rounding of the cumulative sums.
    """

    size: int = 2_250_000  # bytes, rounded up to whole blocks (about 2 MB of training data)
    alphabet: int = 32
    concentration: float = 0.1
    smoothing: float = 0.01
    markov_len: int = SYNTHETIC_MARKOV_LEN  # the defaults' block length is the read side's (bench.schema)
    copy_len: int = SYNTHETIC_COPY_LEN

    def __post_init__(self):
        if not (
            2 <= self.alphabet <= len(MARKOV_ALPHABET)
            and 0 < self.copy_len <= self.markov_len
            and self.concentration > 0
            and 0 < self.smoothing <= 1
            and self.size > 0
        ):
            raise CorpusError(
                f"bad synthetic source {self}: needs 2 <= alphabet <= {len(MARKOV_ALPHABET)}, "
                f"1 <= copy_len <= markov_len, concentration > 0, 0 < smoothing <= 1, size > 0"
            )

    @property
    def block_len(self):
        return self.markov_len + 1 + self.copy_len

    def transition(self, rng):
        rows = rng.dirichlet(np.full(self.alphabet, self.concentration), size=self.alphabet)
        return (1 - self.smoothing) * rows + self.smoothing / self.alphabet

    def sample(self, transition, *, blocks, rng):
        """(blocks, block_len) uint8 bytes."""
        cdf, first = np.cumsum(transition, axis=1), np.cumsum(stationary_distribution(transition))
        cdf[:, -1] = first[-1] = 1.0  # so that every u in [0, 1) falls inside
        u = rng.random((self.markov_len, blocks))
        symbols = np.empty((self.markov_len, blocks), dtype=np.int64)
        symbols[0] = np.searchsorted(first, u[0], side="right")
        for i in range(1, self.markov_len):  # vectorised over blocks; inverse CDF = #{j: cdf_j <= u}
            symbols[i] = (cdf[symbols[i - 1]] <= u[i, :, None]).sum(axis=1)
        out = np.empty((blocks, self.block_len), dtype=np.uint8)
        out[:, : self.markov_len] = np.frombuffer(MARKOV_ALPHABET, dtype=np.uint8)[symbols.T]
        out[:, self.markov_len] = MARKER
        out[:, self.markov_len + 1 :] = out[:, self.markov_len - self.copy_len : self.markov_len]
        return out


def _gap_entropies(transition, pi, max_gap):
    """h[g] = H(X_{t+g} | X_t) = sum_a pi_a H(row a of T^g) for g = 1..max_gap (h[0] unused), in bits."""
    h, power = np.zeros(max_gap + 1), np.eye(len(pi))
    for g in range(1, max_gap + 1):
        power = power @ transition
        h[g] = pi @ _entropy_bits(power)
    return h


def _revealed_bits(lo, hi, *, config, h_first, h):
    """Entropy of bytes lo..hi-1 of one block: that of the Markov bytes they show, directly or through a copy
    (the marker and the copies are functions of Markov bytes). The chain is stationary at every position (each
    block starts from pi), so a sorted set of positions costs H(pi), then h[g] per next position at gap g."""
    m, c = config.markov_len, config.copy_len
    spans = sorted(s for s in [(lo, min(hi, m)), (max(lo, m + 1) - 1 - c, hi - 1 - c)] if s[0] < s[1])
    bits, end = 0.0, None  # copy byte i repeats Markov byte i - 1 - c
    for start, stop in spans:
        if end is None or start >= end:
            bits += (h_first if end is None else h[start - end + 1]) + (stop - start - 1) * h[1]
        elif stop > end:  # overlapping spans: only the new positions, each one step after the last
            bits += (stop - end) * h[1]
        end = stop if end is None else max(end, stop)
    return bits


def window_floor_bpb(transition, config, *, seq_len, multiple):
    """Minimum expected bits per scored byte at evaluation length k*T (T = seq_len, k = multiple): the last T
    predictions of a window w[0..kT] that starts at a uniformly random offset of the source, each predicted from
    the window's earlier bytes by a predictor that also knows the window's phase p (start offset mod block_len):

        floor = (1/T) * mean over p of [H(w[0..kT] | p) - H(w[0..(k-1)T] | p)]

    computed exactly in float64 (blocks are independent; see _revealed_bits). It is >= the entropy rate, does
    not increase with k, and equals the rate once (k-1)T >= copy_len (every copy's source and every byte's
    predecessor then lie in the window). Knowing the phase is worth at most log2(block_len)/T bits per byte:
    the floor without it exceeds this one by I(targets; p | context) / T <= H(p) / T <= log2(block_len) / T.
    """
    for name, value in (("seq_len", seq_len), ("multiple", multiple)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    t = np.asarray(transition, dtype=np.float64)
    if t.shape != (config.alphabet, config.alphabet):
        raise ValueError(f"transition matrix of shape {t.shape} for a source of alphabet {config.alphabet}")
    pi = stationary_distribution(t)
    h, h_first, n = _gap_entropies(t, pi, config.markov_len), float(_entropy_bits(pi)), config.block_len

    def block(lo, hi):
        return _revealed_bits(lo, hi, config=config, h_first=h_first, h=h)

    def segment(phase, length):  # H of `length` bytes from `phase`: a partial block, full blocks, a partial block
        if phase + length <= n:
            return block(phase, phase + length)
        full, rest = divmod(phase + length, n)
        return block(phase, n) + (full - 1) * block(0, n) + block(0, rest)

    total, context = multiple * seq_len + 1, (multiple - 1) * seq_len + 1
    return float(np.mean([segment(p, total) - segment(p, context) for p in range(n)]) / seq_len)
