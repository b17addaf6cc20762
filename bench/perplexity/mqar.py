"""Multi-query associative recall trainings (recall.py's MQAR), with the LM protocol: each model and length
trained at every candidate rate on the first seed (and past the grid's edge while the best rate sits there:
bench.perplexity.rates), the rate with the best accuracy on a validation draw serving every seed, and accuracy
reported on a test draw. The draws come from generator seeds used for nothing else."""

import torch

from bench.perplexity import rates
from bench.perplexity.lm import build_lm, training_columns
from bench.perplexity.recall import (
    ceiling_accuracy,
    chance_accuracy,
    floor_accuracy,
    key_collision_rate,
    recall_accuracy,
    recall_batch,
    recall_loss,
)
from bench.perplexity.training import train

EVAL_SEQUENCES = 256
TEST_SEED, VAL_SEED = 10_000, 20_000  # + the training seed: draws no training sees


def base_row(cell):
    """The columns of a recall training's rows known before it runs: its settings, and what key-blind answers score
    (floor, ceiling; chance for older readers) and how often a key repeats as filler, by simulating the generator
    once per shape."""
    shape = dict(seq_len=cell.seq_len, num_kv_pairs=cell.num_kv_pairs, vocab=cell.vocab)
    return dict(
        training_columns(cell),
        seq_len=cell.seq_len,
        num_kv_pairs=cell.num_kv_pairs,
        vocab=cell.vocab,
        chance_accuracy=chance_accuracy(cell.num_kv_pairs),
        floor_accuracy=floor_accuracy(cell.vocab),
        ceiling_accuracy=ceiling_accuracy(**shape),
        key_collision_rate=key_collision_rate(**shape),
    )


def draw(cell, offset):
    return recall_batch(
        batch=EVAL_SEQUENCES,
        seq_len=cell.seq_len,
        num_kv_pairs=cell.num_kv_pairs,
        vocab=cell.vocab,
        generator=torch.Generator().manual_seed(offset + cell.seed),
    )


def measure(cell, device, lr=None):
    """With `lr`, one training at it; else the selection over cell.lrs, extended past an edge (rates.select), by
    the best validation accuracy (ties to the smaller rate)."""
    data = dict(seq_len=cell.seq_len, num_kv_pairs=cell.num_kv_pairs, vocab=cell.vocab)

    def fit_at(rate):
        lm = build_lm(cell, cell.vocab, device)
        gen = torch.Generator().manual_seed(cell.seed)
        result = train(
            lm,
            lambda: recall_batch(batch=cell.batch, generator=gen, **data),
            steps=cell.steps,
            lr=rate,
            device=device,
            dtype=cell.dtype,
            loss_fn=recall_loss,
        )
        row = dict(
            lr=rate,
            params=lm.num_params(),
            final_loss=result.train_loss,
            time_s=result.time_s,
            val_accuracy=recall_accuracy(lm, *draw(cell, VAL_SEED)),
            accuracy=recall_accuracy(lm, *draw(cell, TEST_SEED)),
            status="ok",
        )
        return rates.Tried(rate, row["val_accuracy"], [row])

    if lr is not None:
        return [{**fit_at(lr).rows[0], "lr_selected": True}]
    tried, best = rates.select(cell.lrs, fit_at, extensions=cell.lr_extensions)
    return [{**t.rows[0], "lr_selected": t is best} for t in tried]
