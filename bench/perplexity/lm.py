"""Byte-level language models: train, select the learning rate on validation, report on test.

Scoring: at evaluation length k*T (T the training length), the last T predictions of windows that end at
fixed offsets of the split (Corpus.scored_windows), so every model and every k is scored on the same bytes
and only the context grows with k. Validation rows: 1x only, one per rate tried (the grid's, and past its edge while
the best rate sits there: bench.perplexity.rates), first seed. Test rows: the selected rate only, every seed, every
evaluation length.
"""

import math

import torch

import models
from bench.core.config import SWEPT_OPTIONS
from bench.core.sweep import Rows
from bench.perplexity import rates
from bench.perplexity.training import mean_loss, train

CURVE_CSV = "train_curve.csv"
CURVE_POINTS = 100  # train_curve.csv holds at most this many points per training
NUM_TOKENS = 256  # bytes


def training_columns(cell):
    """The columns every row of a training carries (perplexity.csv, train_curve.csv, recall.csv), as the cell
    names them: the model, its options, the seed and the training's settings."""
    return {c: getattr(cell, c) for c in ("model", *SWEPT_OPTIONS, "seed", "dim", "depth", "steps", "batch", "dtype")}


def base_row(cell, corpus, device):
    """The columns of a training's rows known before it runs (lr, split and eval_seq_len come per row)."""
    return dict(
        training_columns(cell),
        corpus=cell.corpus,
        corpus_sha256=corpus.sha256,
        train_seq_len=cell.seq_len,
        tokens=cell.steps * cell.batch * cell.seq_len,
        device=str(device),
        entropy_floor_bpb=corpus.entropy_floor_bpb,
    )


def build_lm(cell, num_tokens, device):
    torch.manual_seed(cell.seed)
    return models.build_lm(
        cell.model, num_tokens=num_tokens, dim=cell.dim, depth=cell.depth, device=device, **cell.layer_options()
    )


def curve_rows(cell, lr, losses):
    """At most CURVE_POINTS points of a training's loss curve, each the mean of the steps since the last."""
    every = max(1, len(losses) // CURVE_POINTS)
    training = dict(training_columns(cell), corpus=cell.corpus, train_seq_len=cell.seq_len, lr=lr)
    return [
        dict(
            training,
            step=start + len(losses[start : start + every]),
            loss=sum(losses[start : start + every]) / len(losses[start : start + every]),
        )
        for start in range(0, len(losses), every)
    ]


def windows(cell, corpus, split, multiple):
    """The scored windows of a split at one evaluation multiple (validation: 1x only)."""
    longest = max(cell.eval_lengths) if split == "test" else 1
    return corpus.scored_windows(
        split,
        seq_len=cell.seq_len,
        count=max(1, cell.eval_tokens // cell.seq_len),
        multiple=multiple,
        max_multiple=longest,
    )


def check(cell, corpus):
    """Bad input before anything is written: the splits must hold the windows the cell scores."""
    windows(cell, corpus, "valid", 1)
    for multiple in cell.eval_lengths:
        windows(cell, corpus, "test", multiple)
    corpus.batch("train", batch=1, seq_len=cell.seq_len, generator=torch.Generator().manual_seed(0))


def evaluate(lm, cell, corpus, split, multiple, device):
    """Bits/byte and friends of a trained LM on one split at one multiple."""
    ids, labels = windows(cell, corpus, split, multiple)
    loss = mean_loss(lm, ids, labels, device=device, dtype=cell.dtype)
    floor = corpus.window_floor(seq_len=cell.seq_len, multiple=multiple) if corpus.window_floor else None
    return dict(
        eval_seq_len=multiple * cell.seq_len,
        split=split,
        eval_loss=loss,
        bits_per_byte=loss / math.log(2),
        ppl=math.exp(loss),
        window_floor_bpb=floor,
        params=lm.num_params(),
        status="ok",
    )


def fit(cell, corpus, lr, device):
    lm = build_lm(cell, NUM_TOKENS, device)
    gen = torch.Generator().manual_seed(cell.seed)
    result = train(
        lm,
        lambda: corpus.batch("train", batch=cell.batch, seq_len=cell.seq_len, generator=gen),
        steps=cell.steps,
        lr=lr,
        device=device,
        dtype=cell.dtype,
    )
    return lm, result


def measure(cell, corpus, device, lr=None):
    """One cell's rows: with `lr`, one training at it (test rows); else the selection over cell.lrs, extended past
    an edge (rates.select: a validation row per rate tried, ties to the smaller rate), then the chosen training's
    test rows."""
    curves = []

    def fit_at(rate):
        lm, result = fit(cell, corpus, rate, device)
        curves.extend(curve_rows(cell, rate, result.losses))
        trained = dict(lr=rate, train_loss=result.train_loss, time_s=result.time_s)
        if lr is not None:
            return rates.Tried(rate, 0.0, [], (lm, trained))
        row = {**evaluate(lm, cell, corpus, "valid", 1, device), **trained, "split": "val"}
        return rates.Tried(rate, -row["bits_per_byte"], [row], (lm, trained))

    if lr is None:
        tried, best = rates.select(cell.lrs, fit_at, extensions=cell.lr_extensions)
    else:
        tried = [best := fit_at(lr)]
    rows = [dict(row, lr_selected=t is best) for t in tried for row in t.rows]
    lm, trained = best.kept
    rows += [
        {**evaluate(lm, cell, corpus, "test", m, device), **trained, "lr_selected": True} for m in cell.eval_lengths
    ]
    return Rows(rows, also={CURVE_CSV: curves})
