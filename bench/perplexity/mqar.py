"""Multi-query associative recall trainings (recall.py's MQAR), with the LM protocol: each model and length
trained at every candidate rate on the first seed, the rate with the best accuracy on a validation draw serving
every seed, and accuracy reported on a test draw. The draws come from generator seeds used for nothing else."""

import torch

from bench.perplexity.lm import build_lm, training_columns
from bench.perplexity.recall import chance_accuracy, recall_accuracy, recall_batch, recall_loss
from bench.perplexity.training import train

EVAL_SEQUENCES = 256
TEST_SEED, VAL_SEED = 10_000, 20_000  # + the training seed: draws no training sees


def base_row(cell):
    """The columns of a recall training's rows known before it runs."""
    return dict(
        training_columns(cell),
        seq_len=cell.seq_len,
        num_kv_pairs=cell.num_kv_pairs,
        vocab=cell.vocab,
        chance_accuracy=chance_accuracy(cell.num_kv_pairs),
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
    """With `lr`, one training at it; else one per rate of cell.lrs, the best validation accuracy selected."""
    data = dict(seq_len=cell.seq_len, num_kv_pairs=cell.num_kv_pairs, vocab=cell.vocab)
    rows = []
    for rate in (lr,) if lr is not None else cell.lrs:  # ascending: a tie keeps the smaller rate
        lm = build_lm(cell, cell.vocab, device)
        gen = torch.Generator().manual_seed(cell.seed)
        result = train(
            lm,
            lambda gen=gen: recall_batch(batch=cell.batch, generator=gen, **data),
            steps=cell.steps,
            lr=rate,
            device=device,
            dtype=cell.dtype,
            loss_fn=recall_loss,
        )
        rows.append(
            dict(
                lr=rate,
                params=lm.num_params(),
                final_loss=result.train_loss,
                time_s=result.time_s,
                val_accuracy=recall_accuracy(lm, *draw(cell, VAL_SEED)),
                accuracy=recall_accuracy(lm, *draw(cell, TEST_SEED)),
                status="ok",
            )
        )
    best = max(rows, key=lambda r: r["val_accuracy"])  # the first of the best: the smallest rate
    return [{**row, "lr_selected": row is best} for row in rows]
