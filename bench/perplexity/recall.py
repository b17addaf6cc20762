"""Multi-query associative recall (MQAR) as Zoology generates it (Arora et al. 2023, "Zoology", Section 3;
`multiquery_ar` in HazyResearch/zoology, zoology/data/multiquery_ar.py), so numbers sit beside Zoology's.

A sequence of length L over a vocabulary V > L opens with C = 2 * num_kv_pairs tokens k1 v1 k2 v2 ...: keys
drawn without replacement from [1, V/2), values without replacement from [V/2, V). After the pairs, each key
is queried exactly once, at position C + 2 * gap (an even slot, since C is even), where the gaps are drawn
without replacement from [0, (L - C) // 2) with probability proportional to (gap + 1) ** (power_a - 1): a
power law, so most queries come soon after the pairs (power_a = 1 is uniform). Every other position after
the pairs holds a token drawn uniformly from [0, V) (Zoology's `random_non_queries`), so a filler can repeat a
key without being scored. labels[t] is the token to predict after reading inputs[t]: the queried key's value
at a query position, IGNORE elsewhere, which is where Zoology's labels sit after its one-token shift.

Zoology also asserts an even L; here an odd L is allowed, its last position is simply never a query slot.
"""

import functools
import math

import torch

from bench.perplexity.data import IGNORE


def check(*, seq_len, num_kv_pairs, vocab):
    """Raise ValueError with one line when no MQAR sequence of this shape exists."""
    if num_kv_pairs < 1:
        raise ValueError(f"recall needs num_kv_pairs >= 1, got {num_kv_pairs}")
    if vocab <= seq_len:
        raise ValueError(f"recall needs vocab > seq_len (as Zoology's MQAR), got vocab {vocab} and seq_len {seq_len}")
    if num_kv_pairs > vocab // 2 - 1 or num_kv_pairs > vocab - vocab // 2:
        raise ValueError(
            f"recall needs num_kv_pairs distinct keys in [1, vocab/2) and values in [vocab/2, vocab), "
            f"got {num_kv_pairs} pairs and vocab {vocab}"
        )
    if seq_len < 4 * num_kv_pairs:  # one even query slot per key after the 2 * num_kv_pairs context tokens
        raise ValueError(f"recall needs seq_len >= 4 * num_kv_pairs, got {seq_len} and {num_kv_pairs} pairs")


def gap_probabilities(*, seq_len, num_kv_pairs, power_a):
    """(space,) float64: Zoology's power law over query gaps, p[g] ∝ power_a * (g + 1) ** (power_a - 1)."""
    space = (seq_len - 2 * num_kv_pairs) // 2
    p = power_a * torch.arange(1, space + 1, dtype=torch.float64) ** (power_a - 1)
    return p / p.sum()


def recall_batch(*, batch, seq_len, num_kv_pairs, vocab, generator, power_a=0.01):
    """(inputs, labels), both (batch, seq_len) long, drawn from `generator` (a CPU torch.Generator)."""
    check(seq_len=seq_len, num_kv_pairs=num_kv_pairs, vocab=vocab)
    if not (math.isfinite(power_a) and power_a > 0):
        raise ValueError(f"recall needs a positive finite power_a, got {power_a}")
    half, context = vocab // 2, 2 * num_kv_pairs
    # multinomial without replacement draws one at a time and renormalises, as numpy's choice(replace=False) does
    keys = torch.multinomial(torch.ones(batch, half - 1), num_kv_pairs, generator=generator) + 1  # (B, P)
    values = torch.multinomial(torch.ones(batch, vocab - half), num_kv_pairs, generator=generator) + half  # (B, P)
    p = gap_probabilities(seq_len=seq_len, num_kv_pairs=num_kv_pairs, power_a=power_a)
    gaps = torch.multinomial(p.expand(batch, -1), num_kv_pairs, generator=generator)  # (B, P), i-th key's gap
    positions = context + 2 * gaps  # (B, P)
    # filler first, drawn for every position as Zoology does, then the pairs and the queries written over it
    inputs = torch.randint(vocab, (batch, seq_len), generator=generator)
    inputs[:, 0:context:2], inputs[:, 1:context:2] = keys, values
    inputs.scatter_(1, positions, keys)
    labels = torch.full((batch, seq_len), IGNORE, dtype=torch.long).scatter_(1, positions, values)
    return inputs, labels


def chance_accuracy(num_kv_pairs):
    """Accuracy of answering each query with a random one of the sequence's num_kv_pairs values: 1 / num_kv_pairs.

    Kept for older readers; it is neither a floor (a model that answers value tokens at random scores
    floor_accuracy, below it) nor a ceiling of key-blind answers (ceiling_accuracy is above it: the power law puts
    the queries of the first pairs first).
    """
    return 1 / num_kv_pairs


def floor_accuracy(vocab):
    """Accuracy of answering each query with a random value token, 1 / (vocab - vocab // 2): what a model scores
    that has learned only that answers are values."""
    return 1 / (vocab - vocab // 2)


# The simulation behind ceiling_accuracy and key_collision_rate: its own generator seed, and enough sequences that
# a second seed moves neither by more than about 0.005 (tests/test_recall.py draws it twice).
SIMULATED_SEQUENCES, SIMULATION_SEED = 16384, 0


@functools.cache
def simulated(*, seq_len, num_kv_pairs, vocab, power_a=0.01, sequences=SIMULATED_SEQUENCES, seed=SIMULATION_SEED):
    """(ceiling, collision rate) of the generator at this shape, from `sequences` sequences of recall_batch:

    - ceiling: the accuracy of the best key-blind rule, one that answers the j-th query (in position order) with
      the value of the pair of one fixed rank i(j). The best i(j) is the rank most often queried j-th, and the rule
      scores the mean over j of that frequency: above chance_accuracy, because the power law makes the first pairs'
      queries come first more often than not.
    - collision rate: the share of queries whose key also appears as a filler token before the query, where a model
      that binds the latest occurrence of a key is misled.
    """
    generator, counts = torch.Generator().manual_seed(seed), torch.zeros(num_kv_pairs, num_kv_pairs)
    collisions, chunk = 0, max(1, (1 << 22) // (seq_len * num_kv_pairs))
    context, position = 2 * num_kv_pairs, torch.arange(seq_len)
    for start in range(0, sequences, chunk):
        n = min(chunk, sequences - start)
        inputs, labels = recall_batch(
            batch=n, seq_len=seq_len, num_kv_pairs=num_kv_pairs, vocab=vocab, generator=generator, power_a=power_a
        )
        queried = labels != IGNORE  # (B, L): num_kv_pairs per row, in position order below
        at = queried.nonzero()[:, 1].view(n, num_kv_pairs)  # (B, P) the j-th query's position
        rank = (labels.gather(1, at)[:, :, None] == inputs[:, None, 1:context:2]).float().argmax(-1)  # (B, P)
        counts += torch.nn.functional.one_hot(rank, num_kv_pairs).sum(0).float()  # [j, i]
        filler = ~queried & (position >= context)  # (B, L)
        before = position[None, None, :] < at[:, :, None]  # (B, P, L)
        keys = inputs.gather(1, at)  # (B, P)
        collisions += ((inputs[:, None, :] == keys[:, :, None]) & filler[:, None, :] & before).any(-1).sum().item()
    ceiling = (counts.max(1).values / sequences).mean().item()
    return ceiling, collisions / (sequences * num_kv_pairs)


def ceiling_accuracy(*, seq_len, num_kv_pairs, vocab, power_a=0.01):
    """The best key-blind rule's accuracy, by simulating the generator (simulated)."""
    return simulated(seq_len=seq_len, num_kv_pairs=num_kv_pairs, vocab=vocab, power_a=power_a)[0]


def key_collision_rate(*, seq_len, num_kv_pairs, vocab, power_a=0.01):
    """The share of queries whose key appears as filler before the query, by simulating the generator (simulated)."""
    return simulated(seq_len=seq_len, num_kv_pairs=num_kv_pairs, vocab=vocab, power_a=power_a)[1]


def recall_loss(model, inputs, labels):
    logits = model(inputs)  # (B, L, V)
    return torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, ignore_index=IGNORE)


@torch.inference_mode()
def recall_accuracy(model, inputs, labels, *, batch=16):
    """Share of query positions whose most likely next token is the right value."""
    model.eval()
    correct, total = 0, 0
    for i in range(0, len(inputs), batch):
        x, y = inputs[i : i + batch], labels[i : i + batch]
        scored = y != IGNORE
        predicted = model(x.to(next(model.parameters()).device)).argmax(-1).cpu()
        correct += (predicted[scored] == y[scored]).sum().item()
        total += scored.sum().item()
    model.train()
    return correct / total
