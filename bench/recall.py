"""Multi-query associative recall (MQAR, as in Zoology, Arora et al. 2023).

A sequence opens with `num_kv_pairs` key-value pairs (k1 v1 k2 v2 ...); later, each key appears again
at a random position, and the model must emit that key's value as the next token. Keys come from the
lower half of the vocabulary and values from the upper half; the other positions hold the filler 0.
Only the positions that hold a query key are scored (label = its value, elsewhere IGNORE).
"""

import torch

IGNORE = -100


def check(*, seq_len, num_kv_pairs, vocab):
    if vocab < 4 or num_kv_pairs >= vocab // 2:
        raise ValueError(f"recall needs num_kv_pairs < vocab / 2 distinct keys, got {num_kv_pairs} and vocab {vocab}")
    if seq_len < 4 * num_kv_pairs:
        raise ValueError(f"recall needs seq_len >= 4 * num_kv_pairs, got {seq_len} and {num_kv_pairs} pairs")


def recall_batch(*, batch, seq_len, num_kv_pairs, vocab, generator):
    """(inputs, labels), both (batch, seq_len) long, drawn from `generator` (a CPU torch.Generator)."""
    check(seq_len=seq_len, num_kv_pairs=num_kv_pairs, vocab=vocab)
    half = vocab // 2
    keys = torch.stack([torch.randperm(half - 1, generator=generator)[:num_kv_pairs] + 1 for _ in range(batch)])
    values = torch.randint(half, vocab, (batch, num_kv_pairs), generator=generator)
    inputs = torch.zeros(batch, seq_len, dtype=torch.long)
    labels = torch.full((batch, seq_len), IGNORE, dtype=torch.long)
    inputs[:, 0:2 * num_kv_pairs:2], inputs[:, 1:2 * num_kv_pairs:2] = keys, values
    # queries at distinct random positions after the context, each key once, in random order
    start = 2 * num_kv_pairs
    for b in range(batch):
        slots = torch.randperm(seq_len - start, generator=generator)[:num_kv_pairs] + start
        inputs[b, slots] = keys[b]
        labels[b, slots] = values[b]
    return inputs, labels


def recall_loss(model, inputs, labels):
    logits = model(inputs)  # (B, L, V)
    return torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, ignore_index=IGNORE)


@torch.inference_mode()
def recall_accuracy(model, inputs, labels, *, batch=16):
    """Share of query positions whose most likely next token is the right value."""
    model.eval()
    correct, total = 0, 0
    for i in range(0, len(inputs), batch):
        x, y = inputs[i:i + batch], labels[i:i + batch]
        scored = y != IGNORE
        predicted = model(x.to(next(model.parameters()).device)).argmax(-1).cpu()
        correct += (predicted[scored] == y[scored]).sum().item()
        total += scored.sum().item()
    model.train()
    return correct / total
