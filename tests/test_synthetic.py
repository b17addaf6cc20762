"""The synthetic source (perplexity/synthetic.py): the entropy of Markov chains by hand, and a sampled corpus
whose copies copy and whose empirical entropy matches the exact rate. (Its window floor: tests/test_window_floor.py.)"""

import math

import numpy as np
import pytest
import torch

from bench.perplexity import synthetic as S
from bench.perplexity.synthetic import Synthetic


def h2(p):
    return -(p * math.log2(p) + (1 - p) * math.log2(1 - p))


def test_markov_entropy_rate_of_a_hand_computed_chain():
    t = [[0.9, 0.1], [0.5, 0.5]]
    np.testing.assert_allclose(S.stationary_distribution(t), [5 / 6, 1 / 6], rtol=0, atol=1e-12)
    rate = 5 / 6 * h2(0.1) + 1 / 6 * 1.0
    assert S.markov_entropy_rate(t) == pytest.approx(rate, abs=1e-12)
    assert S.markov_entropy_rate(torch.tensor(t, dtype=torch.float64)) == pytest.approx(rate, abs=1e-12)
    # blocks of 4 Markov symbols (the first drawn from pi), a marker and a 2-byte copy
    expected = (h2(1 / 6) + 3 * rate) / 7
    assert S.synthetic_entropy_rate(t, markov_len=4, copy_len=2) == pytest.approx(expected, abs=1e-12)


def test_markov_entropy_rate_edge_cases():
    assert S.markov_entropy_rate([[0.5, 0.5], [0.5, 0.5]]) == pytest.approx(1.0)
    assert S.markov_entropy_rate([[0, 1], [1, 0]]) == pytest.approx(0.0)  # periodic, deterministic
    for bad in ([[0.5, 0.6], [0.5, 0.5]], [[1.0, 0.0]], [[-0.1, 1.1], [0.5, 0.5]]):
        with pytest.raises(ValueError):
            S.markov_entropy_rate(bad)
    with pytest.raises(ValueError, match="stationary"):
        S.markov_entropy_rate([[1, 0], [0, 1]])


def test_unigram_entropy():
    assert S.unigram_entropy_bpb(torch.tensor(list(b"aabb"), dtype=torch.uint8)) == pytest.approx(1.0)
    assert S.unigram_entropy_bpb(torch.arange(256).repeat(3)) == pytest.approx(8.0)
    assert S.unigram_entropy_bpb(torch.zeros(10, dtype=torch.uint8)) == 0.0


def test_synthetic_copy_segments_copy(synth):
    cfg = Synthetic()
    blocks = torch.cat([synth.train, synth.valid, synth.test]).view(-1, cfg.block_len)
    markov, marker, copy = (blocks[:, : cfg.markov_len], blocks[:, cfg.markov_len], blocks[:, cfg.markov_len + 1 :])
    assert (marker == S.MARKER).all()
    assert torch.equal(copy, markov[:, -cfg.copy_len :])
    assert set(markov.unique().tolist()) <= set(S.MARKOV_ALPHABET)
    assert S.MARKER not in S.MARKOV_ALPHABET


def test_synthetic_empirical_entropy_matches_floor(synth):
    cfg = Synthetic()
    lut = torch.full((256,), -1, dtype=torch.long)
    lut[torch.tensor(list(S.MARKOV_ALPHABET))] = torch.arange(len(S.MARKOV_ALPHABET))
    blocks = torch.cat([synth.train, synth.valid, synth.test]).view(-1, cfg.block_len)
    symbols = lut[blocks[:, : cfg.markov_len].long()]
    first = torch.bincount(symbols[:, 0], minlength=cfg.alphabet).double()
    pairs = symbols[:, :-1] * cfg.alphabet + symbols[:, 1:]  # bigrams within each block
    joint = torch.bincount(pairs.reshape(-1), minlength=cfg.alphabet**2).double().view(cfg.alphabet, -1)
    h_first = S.unigram_entropy_bpb(symbols[:, 0])
    h_cond = float(-(joint * torch.log2((joint / joint.sum(1, keepdim=True)).clamp_min(1e-300))).sum() / joint.sum())
    empirical = (h_first + (cfg.markov_len - 1) * h_cond) / cfg.block_len
    assert first.sum() == len(blocks)
    assert empirical == pytest.approx(synth.entropy_floor_bpb, rel=0.005)
    assert 1.0 < synth.entropy_floor_bpb < 3.0
    # markers and copies cost nothing, so the floor is well below the unigram entropy
    assert S.unigram_entropy_bpb(synth.train) > synth.entropy_floor_bpb + 2
