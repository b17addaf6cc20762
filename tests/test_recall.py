"""The MQAR generator against Zoology's `multiquery_ar`: the layout of pairs, queries and filler, the power law of
the query gaps, determinism, impossible settings, and what chance accuracy, the floor, the key-blind ceiling and
the key collision rate mean."""

import pytest
import torch

from bench.perplexity.recall import (
    IGNORE,
    ceiling_accuracy,
    chance_accuracy,
    check,
    floor_accuracy,
    gap_probabilities,
    key_collision_rate,
    recall_accuracy,
    recall_batch,
    simulated,
)

SHAPE = dict(seq_len=64, num_kv_pairs=8, vocab=128)


def draw(batch=64, seed=0, **shape):
    return recall_batch(batch=batch, generator=torch.Generator().manual_seed(seed), **{**SHAPE, **shape})


def test_keys_and_values_are_distinct_from_their_halves_and_open_the_sequence_in_pairs():
    inputs, labels = draw()
    n, half = SHAPE["num_kv_pairs"], SHAPE["vocab"] // 2
    keys, values = inputs[:, 0 : 2 * n : 2], inputs[:, 1 : 2 * n : 2]  # (B, P)
    assert inputs.shape == labels.shape == (64, 64) and inputs.dtype == labels.dtype == torch.long
    assert bool(((keys >= 1) & (keys < half)).all()) and bool(((values >= half) & (values < 2 * half)).all())
    assert all(len(set(row.tolist())) == n for row in keys) and all(len(set(row.tolist())) == n for row in values)
    assert bool((labels[:, : 2 * n] == IGNORE).all())  # the pairs themselves are never scored


def test_every_key_is_queried_once_after_the_pairs_on_an_even_slot_and_labelled_with_its_value():
    inputs, labels = draw()
    n = SHAPE["num_kv_pairs"]
    for x, y in zip(inputs, labels):
        pairs = dict(zip(x[0 : 2 * n : 2].tolist(), x[1 : 2 * n : 2].tolist()))
        scored = (y != IGNORE).nonzero().flatten().tolist()
        assert len(scored) == n and all(t >= 2 * n and t % 2 == 0 for t in scored)
        assert sorted(x[scored].tolist()) == sorted(pairs)  # each key exactly once
        assert y[scored].tolist() == [pairs[k] for k in x[scored].tolist()]
        assert set(y.tolist()) - set(pairs.values()) == {IGNORE}


def test_the_smallest_sequence_is_fully_determined_but_its_value():
    # vocab 5: the only key is 1, values come from {2, 3, 4}; one gap slot, so the query sits at position 2
    inputs, labels = recall_batch(batch=32, seq_len=4, num_kv_pairs=1, vocab=5, generator=torch.Generator())
    v = inputs[:, 1]
    assert inputs[:, 0].tolist() == [1] * 32 and inputs[:, 2].tolist() == [1] * 32
    assert set(v.tolist()) == {2, 3, 4}
    assert labels[:, 2].tolist() == v.tolist() and bool((labels[:, [0, 1, 3]] == IGNORE).all())


def test_positions_after_the_pairs_that_are_not_queries_hold_uniform_random_tokens():
    inputs, labels = draw(batch=256)
    filler = inputs[:, 2 * SHAPE["num_kv_pairs"] :][labels[:, 2 * SHAPE["num_kv_pairs"] :] == IGNORE]
    counts = torch.bincount(filler, minlength=SHAPE["vocab"]).double()
    print(f"filler: {len(filler)} tokens, {int((counts > 0).sum())} distinct, zeros {int(counts[0])}")
    assert (counts > 0).all()  # every token of the vocabulary, 0 included, appears as filler
    expected = len(filler) / SHAPE["vocab"]
    assert float((counts - expected).abs().max()) < 6 * expected**0.5


def test_the_same_generator_seed_gives_the_same_batch_and_another_seed_another():
    a, b, c = draw(seed=3), draw(seed=3), draw(seed=4)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_with_one_pair_the_query_gap_follows_zoologys_power_law_exactly():
    n, seq_len, power_a = 1, 20, 0.01
    _, labels = recall_batch(
        batch=20_000, seq_len=seq_len, num_kv_pairs=n, vocab=21, generator=torch.Generator(), power_a=power_a
    )
    gaps = ((labels != IGNORE).nonzero()[:, 1] - 2 * n) // 2
    p = gap_probabilities(seq_len=seq_len, num_kv_pairs=n, power_a=power_a)
    # Zoology: p[g] = a * (g + 1) ** (a - 1), normalised, over (seq_len - 2n) // 2 = 9 gaps
    assert len(p) == 9 and p[0] / p[1] == pytest.approx(2**0.99)
    freq = torch.bincount(gaps, minlength=len(p)).double() / len(gaps)
    sigma = (p * (1 - p) / len(gaps)).sqrt()
    print(f"max |freq - p| / sigma = {float(((freq - p).abs() / sigma).max()):.2f}")
    assert bool(((freq - p).abs() < 5 * sigma).all())


def test_small_power_a_puts_more_queries_near_the_pairs_and_power_a_one_spreads_them_evenly():
    def gap_counts(power_a):
        _, labels = draw(batch=512, seq_len=256, num_kv_pairs=8, vocab=512, power_a=power_a)
        gaps = ((labels != IGNORE).nonzero()[:, 1] - 16) // 2
        return torch.bincount(gaps, minlength=120)

    skewed, uniform = gap_counts(0.01), gap_counts(1.0)
    print(
        f"power_a 0.01: first/last quarter {int(skewed[:30].sum())}/{int(skewed[-30:].sum())}; "
        f"power_a 1: {int(uniform[:30].sum())}/{int(uniform[-30:].sum())}"
    )
    assert skewed[:30].sum() > 2 * skewed[-30:].sum() and skewed[0] > skewed[60:].max()
    assert abs(int(uniform[:30].sum()) - int(uniform[-30:].sum())) < 0.15 * int(uniform[:30].sum())


@pytest.mark.parametrize(
    "shape,message",
    [
        (
            dict(seq_len=64, num_kv_pairs=8, vocab=64),
            "recall needs vocab > seq_len (as Zoology's MQAR), got vocab 64 and seq_len 64",
        ),
        (dict(seq_len=32, num_kv_pairs=4, vocab=16), "got vocab 16 and seq_len 32"),
        (dict(seq_len=8, num_kv_pairs=4, vocab=16), "recall needs seq_len >= 4 * num_kv_pairs, got 8 and 4 pairs"),
        (dict(seq_len=16, num_kv_pairs=0, vocab=32), "recall needs num_kv_pairs >= 1, got 0"),
    ],
)
def test_impossible_settings_raise_one_line_naming_the_values(shape, message):
    for call in (lambda: check(**shape), lambda: recall_batch(batch=1, generator=torch.Generator(), **shape)):
        with pytest.raises(ValueError) as info:
            call()
        assert message in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ValueError, match="positive finite power_a, got 0"):
        recall_batch(batch=1, generator=torch.Generator(), power_a=0, **SHAPE)


class Answers(torch.nn.Module):
    """A stand-in model that answers every position with a value of its sequence: the right one, or a random one."""

    def __init__(self, labels, *, oracle):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(()))
        self.labels, self.oracle = labels, oracle
        self.seen = 0

    def forward(self, x):  # (B, L) -> (B, L, V)
        n = SHAPE["num_kv_pairs"]
        y = self.labels[self.seen : self.seen + len(x)]
        self.seen += len(x)
        pick = torch.randint(n, x.shape, generator=torch.Generator().manual_seed(self.seen))
        guess = x[:, 1 : 2 * n : 2].gather(1, pick)  # (B, L): a random value of the sequence
        answer = torch.where(y != IGNORE, y, 0) if self.oracle else guess
        return torch.nn.functional.one_hot(answer, SHAPE["vocab"]).float()


def test_chance_accuracy_is_what_a_random_value_of_the_sequence_scores():
    inputs, labels = draw(batch=4096)
    assert recall_accuracy(Answers(labels, oracle=True), inputs, labels, batch=1024) == 1.0
    random = recall_accuracy(Answers(labels, oracle=False), inputs, labels, batch=1024)
    print(f"random value of the sequence: {random:.4f}, chance_accuracy {chance_accuracy(8):.4f}")
    assert chance_accuracy(8) == 0.125 and random == pytest.approx(0.125, abs=0.01)  # 32768 queries, sigma 0.0018


def test_the_floor_is_a_random_value_token_and_the_ceiling_and_collisions_are_stable_simulations():
    assert floor_accuracy(128) == 1 / 64 and floor_accuracy(33) == 1 / 17  # values are [vocab // 2, vocab)
    _, labels = draw(batch=4096)
    scored = labels[labels != IGNORE]
    guesses = torch.randint(SHAPE["vocab"] // 2, SHAPE["vocab"], scored.shape, generator=torch.Generator())
    random = float((guesses == scored).double().mean())
    print(f"a random value token: {random:.4f}, floor_accuracy {floor_accuracy(SHAPE['vocab']):.4f}")
    assert random == pytest.approx(floor_accuracy(SHAPE["vocab"]), abs=0.004)  # 32768 queries, sigma 0.0007
    quick = dict(seq_len=32, num_kv_pairs=4, vocab=128)
    (c0, k0), (c1, k1) = simulated(**quick), simulated(**quick, seed=1)
    print(f"ceiling {c0:.4f} / {c1:.4f}, collision rate {k0:.4f} / {k1:.4f} (two simulation seeds)")
    assert abs(c0 - c1) < 0.005 and abs(k0 - k1) < 0.005
    assert (ceiling_accuracy(**quick), key_collision_rate(**quick)) == (c0, k0)
    assert chance_accuracy(4) < c0 < 0.35  # the power law favours the first pairs' queries coming first


def test_ceiling_and_collision_rate_agree_with_enumeration_on_two_pairs():
    # seq_len 12, 2 pairs: context 4, gaps 0..3 at positions 4, 6, 8, 10; the i-th key's gap drawn in turn without
    # replacement, P(g0, g1) = p[g0] p[g1] / (1 - p[g0])
    seq_len, vocab = 12, 13
    p = gap_probabilities(seq_len=seq_len, num_kv_pairs=2, power_a=0.01).tolist()
    first, collided = 0.0, 0.0
    for g0, p0 in enumerate(p):
        for g1, p1 in enumerate(p):
            if g0 != g1:
                weight = p0 * p1 / (1 - p0)
                first += weight * (g0 < g1)
                a, b = 4 + 2 * g0, 4 + 2 * g1
                fillers = [(q - 4) - (other < q) for q, other in ((a, b), (b, a))]  # tokens after the pairs, before it
                collided += weight * sum(1 - (1 - 1 / vocab) ** f for f in fillers) / 2
    ceiling, collision = simulated(seq_len=seq_len, num_kv_pairs=2, vocab=vocab, sequences=65536)  # sigma 0.002
    print(f"ceiling {ceiling:.4f} vs {max(first, 1 - first):.4f}; collisions {collision:.4f} vs {collided:.4f}")
    assert ceiling == pytest.approx(max(first, 1 - first), abs=0.008)
    assert collision == pytest.approx(collided, abs=0.008)
