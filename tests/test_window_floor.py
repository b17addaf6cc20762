"""synthetic.window_floor_bpb (bench.perplexity), the floor a k*T evaluation window allows on the synthetic
source, against brute-force enumeration of every block sequence of tiny sources, and its properties on the
default source."""

import itertools

import numpy as np
import pytest

from bench.perplexity.synthetic import (
    MARKER,
    MARKOV_ALPHABET,
    Synthetic,
    stationary_distribution,
    synthetic_entropy_rate,
    window_floor_bpb,
)

SPARSE = np.array([[0.0, 1.0, 0.0], [0.5, 0.0, 0.5], [0.3, 0.3, 0.4]])  # zeros: 0 log 0 and gaps that mix slowly
TINY = {  # name: (source, its transition or None to draw one, [(seq_len, multiple), ...]); <= ~65k sequences a phase
    "a2-m3-c1": (
        Synthetic(alphabet=2, markov_len=3, copy_len=1, concentration=0.5),
        None,
        [(1, 1), (3, 1), (7, 1), (11, 1), (1, 4), (2, 3), (3, 2), (6, 2)],
    ),
    "a3-m3-c2": (
        Synthetic(alphabet=3, markov_len=3, copy_len=2, concentration=0.5),
        None,
        [(3, 1), (4, 1), (7, 1), (1, 2), (1, 3), (2, 2), (3, 3)],
    ),
    "a3-m3-c2-sparse": (Synthetic(alphabet=3, markov_len=3, copy_len=2), SPARSE, [(2, 1), (5, 1), (1, 2), (3, 2)]),
    "a2-m4-c2": (
        Synthetic(alphabet=2, markov_len=4, copy_len=2, concentration=0.5),
        None,
        [(6, 1), (9, 1), (1, 2), (1, 5), (3, 3), (8, 2)],
    ),
    "a2-m3-c3": (
        Synthetic(alphabet=2, markov_len=3, copy_len=3, concentration=0.5),
        None,
        [(2, 1), (5, 1), (8, 1), (1, 3), (2, 2), (2, 4), (4, 3)],
    ),
    "a3-m4-c1": (Synthetic(alphabet=3, markov_len=4, copy_len=1, concentration=0.5), None, [(3, 1), (5, 1), (2, 2)]),
}
CASES = [
    pytest.param(name, seq_len, multiple, id=f"{name}-T{seq_len}-k{multiple}")
    for name, (_, _, cells) in TINY.items()
    for seq_len, multiple in cells
]


def tiny(name, seed=0):
    config, transition, _ = TINY[name]
    return config, (config.transition(np.random.default_rng(seed)) if transition is None else transition)


def every_block(config, transition):
    """Every block the source can emit, as symbols (Markov symbol i -> i, the marker -> alphabet), with its
    probability: the first Markov symbol from pi, each next one from the transition row of the one before."""
    m, c = config.markov_len, config.copy_len
    chains = np.array(list(itertools.product(range(config.alphabet), repeat=m)))
    prob = stationary_distribution(transition)[chains[:, 0]] * np.prod(
        transition[chains[:, :-1], chains[:, 1:]], axis=1
    )
    blocks = np.concatenate([chains, np.full((len(chains), 1), config.alphabet), chains[:, m - c :]], axis=1)
    return blocks, prob


def window_law(blocks, prob, *, phase, length):
    """The windows of `length` symbols from `phase` of a block-aligned stream, with their probabilities, from every
    sequence of the blocks the window touches: (window codes as base-(alphabet+1) integers, probabilities)."""
    n_blocks = -(-(phase + length) // blocks.shape[1])
    sequences = np.indices((len(blocks),) * n_blocks).reshape(n_blocks, -1).T
    stream = blocks[sequences].reshape(len(sequences), -1)[:, phase : phase + length]
    digits = (blocks.max() + 1) ** np.arange(length, dtype=np.int64)
    return stream @ digits, np.prod(prob[sequences], axis=1)


def entropy_bits(codes, prob):
    _, inverse = np.unique(codes, return_inverse=True)
    p = np.bincount(inverse.reshape(-1), weights=prob)
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


def brute_force_floors(config, transition, *, seq_len, multiple):
    """(floor knowing the phase, floor without it), bits per scored byte, from the windows' exact laws."""
    blocks, prob = every_block(config, transition)
    total, context = multiple * seq_len + 1, (multiple - 1) * seq_len + 1
    laws = [window_law(blocks, prob, phase=p, length=total) for p in range(config.block_len)]
    base = (blocks.max() + 1) ** context  # the code of the first `context` symbols is the code mod base
    knowing = np.mean([entropy_bits(codes, p) - entropy_bits(codes % base, p) for codes, p in laws])
    codes, p = (np.concatenate(x) for x in zip(*laws))
    p = p / config.block_len  # the phase is uniform: the mixture of the phases' laws
    return knowing / seq_len, (entropy_bits(codes, p) - entropy_bits(codes % base, p)) / seq_len


def test_every_block_is_what_the_sampler_emits():
    for name in TINY:
        config, transition = tiny(name)
        blocks, prob = every_block(config, transition)
        assert prob.sum() == pytest.approx(1.0, abs=1e-12)
        symbol = {byte: i for i, byte in enumerate(MARKOV_ALPHABET)} | {MARKER: config.alphabet}
        sampled = config.sample(transition, blocks=20_000, rng=np.random.default_rng(1))
        sampled = np.vectorize(symbol.__getitem__)(sampled)
        rows, counts = np.unique(sampled, axis=0, return_counts=True)
        index = {tuple(b): i for i, b in enumerate(blocks)}
        assert all(tuple(r) in index for r in rows)  # layout: chain, marker, copy of the chain's tail
        frequency = np.zeros(len(blocks))
        frequency[[index[tuple(r)] for r in rows]] = counts / counts.sum()
        assert np.abs(frequency - prob).max() < 0.02  # and the probabilities


@pytest.mark.parametrize("name, seq_len, multiple", CASES)
def test_window_floor_matches_brute_force(name, seq_len, multiple):
    config, transition = tiny(name)
    floor = window_floor_bpb(transition, config, seq_len=seq_len, multiple=multiple)
    knowing, blind = brute_force_floors(config, transition, seq_len=seq_len, multiple=multiple)
    bound = np.log2(config.block_len) / seq_len
    print(
        f"{name} T={seq_len} k={multiple}: floor {floor:.12f}, brute force {knowing:.12f} "
        f"(|diff| {abs(floor - knowing):.1e}); without the phase {blind:.6f}, bound {floor + bound:.6f}"
    )
    assert floor == pytest.approx(knowing, abs=1e-9)
    assert floor - 1e-9 <= blind <= floor + bound + 1e-9  # knowing the phase is worth at most log2(block_len)/T
    rate = synthetic_entropy_rate(transition, markov_len=config.markov_len, copy_len=config.copy_len)
    assert (floor > rate + 1e-6) == ((multiple - 1) * seq_len < config.copy_len)  # the context misses a copy source


@pytest.mark.parametrize("name", list(TINY))
def test_window_floor_properties_on_tiny_sources(name):
    config, transition = tiny(name, seed=3)
    rate = synthetic_entropy_rate(transition, markov_len=config.markov_len, copy_len=config.copy_len)
    for seq_len in (1, 2, 3, config.block_len, 2 * config.block_len + 1):
        floors = [window_floor_bpb(transition, config, seq_len=seq_len, multiple=k) for k in range(1, 8)]
        assert all(f >= rate - 1e-12 for f in floors)
        assert all(b <= a + 1e-12 for a, b in zip(floors, floors[1:]))  # more context never hurts
        for k, f in enumerate(floors, start=1):
            if (k - 1) * seq_len >= config.copy_len:  # every copy's source and predecessor inside the window
                assert f == pytest.approx(rate, abs=1e-12)


def test_window_floor_on_the_default_source():
    config = Synthetic()
    transition = config.transition(np.random.default_rng(0))  # bench.perplexity.data.synthetic(seed=0)'s source
    rate = synthetic_entropy_rate(transition, markov_len=config.markov_len, copy_len=config.copy_len)
    for seq_len in (16, 64, 129, 256, 1000, 4096):
        floors = [window_floor_bpb(transition, config, seq_len=seq_len, multiple=k) for k in (1, 2, 4, 8)]
        assert all(f >= rate - 1e-12 for f in floors)
        assert all(b <= a + 1e-12 for a, b in zip(floors, floors[1:]))
    firsts = [window_floor_bpb(transition, config, seq_len=t, multiple=1) for t in (256, 512, 1024, 4096)]
    assert all(b < a for a, b in zip(firsts, firsts[1:])) and firsts[0] > rate + 0.05  # copies cut off at 1x
    # the first window of T bytes misses the sources of copies within copy_len + 1 bytes of its start
    assert window_floor_bpb(transition, config, seq_len=256, multiple=2) == pytest.approx(rate, abs=1e-12)


def test_window_floor_rejects_bad_arguments():
    config, transition = tiny("a2-m3-c1")
    for bad in (0, -1, 2.0, True, None):
        with pytest.raises(ValueError, match="seq_len must be a positive integer"):
            window_floor_bpb(transition, config, seq_len=bad, multiple=1)
        with pytest.raises(ValueError, match="multiple must be a positive integer"):
            window_floor_bpb(transition, config, seq_len=4, multiple=bad)
    with pytest.raises(ValueError, match="alphabet 3"):
        window_floor_bpb(transition, Synthetic(alphabet=3, markov_len=3, copy_len=1), seq_len=4, multiple=1)
