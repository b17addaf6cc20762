"""Perplexity suite: train every model under the same budget, then bits per byte, length generalisation,
and multi-query associative recall.

    python -m bench.perplexity                                   # the device's preset (lm and recall)
    python -m bench.perplexity --models gss,attention --corpus synthetic --steps 300 --seeds 0,1,2
    python -m bench.perplexity --task recall --models gss,attention --seq-len 512

Rows: DIR/perplexity.csv (one per training and eval length), DIR/train_curve.csv, DIR/recall.csv.
Losses are in nats per byte; bits_per_byte = eval_loss / ln 2; entropy_floor_bpb is the synthetic
corpus's exact entropy rate (empty for real text).
"""

import functools
import math
import sys
from dataclasses import replace

import torch

import models
from bench import cli, usage
from bench.config import PERPLEXITY_PRESETS, TASKS, TrainGrid
from bench.data import load_corpus
from bench.recall import check as check_recall
from bench.recall import recall_accuracy, recall_batch, recall_loss
from bench.sweep import Rows, Sweep, drive
from bench.training import mean_loss, train
from bench.usage import UsageError

CSV, CURVE_CSV, RECALL_CSV = "perplexity.csv", "train_curve.csv", "recall.csv"
CURVE_POINTS = 100  # train_curve.csv holds at most this many points per training
RECALL_EVAL_SEQUENCES = 256


def _seed(text, name):
    try:
        value = int(text)
    except ValueError:
        raise UsageError(f"--{name}: {text!r} is not an integer") from None
    if value < 0:
        raise UsageError(f"--{name}: {value} is negative")
    return value


@functools.cache
def corpus_of(spec):
    return load_corpus(spec)


def build_cells(args, preset):
    """The preset's grids for the requested task(s); with grid flags, one grid per task from the flags."""
    tasks = usage.parse_list(args.task, "task", lambda t: usage.choice(t, "task", TASKS)) if args.task else TASKS
    grids = [g for g in preset.grids if g.task in tasks]
    flags = dict(models=args.models, corpus=args.corpus, seq_lens=args.seq_len, kernel_N=args.kernel_n,
                 lambda_imag_exp=args.lambda_imag_exp, conv_kernel=args.conv_kernel, seeds=args.seeds,
                 eval_lengths=args.eval_lengths)
    if any(v is not None for v in flags.values()):
        bases = {g.task: g for g in reversed(grids)}  # the first grid of each task supplies the defaults
        grids = [TrainGrid(**{**base.__dict__, "name": "custom", **{k: v for k, v in flags.items() if v is not None}})
                 for base in bases.values()]
    tuning = dict(batch=args.batch, steps=args.steps, dim=args.dim, depth=args.depth, lr=args.lr,
                  dtype=args.dtype[0] if args.dtype else None)
    grids = [replace(g, **{k: v for k, v in tuning.items() if v is not None}) for g in grids]
    cells = list(dict.fromkeys(c for g in grids for c in g.cells()))
    if not cells:
        raise UsageError("nothing to train: no grid of the preset has the requested task" if not grids else
                         "nothing to train: no requested model takes the options given (conv_kernel 'full' is "
                         "gss-direct's)")
    for cell in cells:  # bad input fails here, before anything is written
        models.build_layer(cell.model, dim=cell.dim, device="meta", **cell.layer_options())
        if cell.task == "recall":
            check_recall(seq_len=cell.seq_len, num_kv_pairs=cell.num_kv_pairs, vocab=cell.vocab)
        else:
            corpus = corpus_of(cell.corpus)
            for m in cell.eval_lengths:
                corpus.eval_windows(seq_len=m * cell.seq_len, count=1)
            corpus.batch("train", batch=1, seq_len=cell.seq_len, generator=torch.Generator().manual_seed(0))
    return cells


def convert(args):
    """The suite's own flags (cli.convert_flags handles the shared ones)."""
    for name, parse in [("seq_len", usage.positive_int), ("eval_lengths", usage.positive_int),
                        ("seeds", _seed)]:
        raw = getattr(args, name)
        if raw is not None:
            flag = name.replace("_", "-")
            setattr(args, name, usage.parse_list(raw, flag, lambda t, parse=parse, flag=flag: parse(t, flag)))
    for name in ("steps", "depth"):
        if getattr(args, name) is not None:
            setattr(args, name, usage.positive_int(getattr(args, name), name))
    if args.dtype is not None and len(args.dtype) > 1:
        raise UsageError(f"--dtype takes one dtype here (every model trains in it), got {','.join(args.dtype)}")
    if args.lr is not None:
        try:
            args.lr = float(args.lr)
        except ValueError:
            raise UsageError(f"--lr: {args.lr!r} is not a number") from None
        if not 0 < args.lr < math.inf:
            raise UsageError(f"--lr must be a positive finite number, got {args.lr}")
    if args.corpus is not None:
        args.corpus = args.corpus.strip() or None
        if args.corpus is None:
            raise UsageError("--corpus needs a name or a path")
    return args


def lm_rows(cell, corpus, device):
    """The rows of one training, one per evaluation length, with every column known before it runs."""
    base = dict(model=cell.model, corpus=cell.corpus, corpus_sha256=corpus.sha256, seed=cell.seed, dim=cell.dim,
                depth=cell.depth, kernel_N=cell.kernel_N, kernel_H=cell.kernel_H, lambda_imag_exp=cell.lambda_imag_exp,
                conv_kernel=cell.conv_kernel, train_seq_len=cell.seq_len, steps=cell.steps, batch=cell.batch,
                tokens=cell.steps * cell.batch * cell.seq_len, lr=cell.lr, dtype=cell.dtype, device=str(device),
                entropy_floor_bpb=corpus.entropy_floor_bpb)
    return [{**base, "eval_seq_len": m * cell.seq_len} for m in cell.eval_lengths]


def recall_row(cell):
    return dict(model=cell.model, seq_len=cell.seq_len, num_kv_pairs=cell.num_kv_pairs, vocab=cell.vocab,
                seed=cell.seed, steps=cell.steps, dim=cell.dim, depth=cell.depth, kernel_N=cell.kernel_N,
                kernel_H=cell.kernel_H, lambda_imag_exp=cell.lambda_imag_exp, conv_kernel=cell.conv_kernel,
                batch=cell.batch, lr=cell.lr, dtype=cell.dtype)


def build_lm(cell, num_tokens, device):
    torch.manual_seed(cell.seed)
    return models.build_lm(cell.model, num_tokens=num_tokens, dim=cell.dim, depth=cell.depth, device=device,
                           **cell.layer_options())


def curve_rows(cell, losses):
    """At most CURVE_POINTS points of a training's loss curve, each the mean of the steps since the last."""
    every = max(1, len(losses) // CURVE_POINTS)
    training = dict(model=cell.model, kernel_N=cell.kernel_N, lambda_imag_exp=cell.lambda_imag_exp,
                    conv_kernel=cell.conv_kernel, seed=cell.seed, corpus=cell.corpus, train_seq_len=cell.seq_len,
                    steps=cell.steps, kernel_H=cell.kernel_H, dim=cell.dim, depth=cell.depth, batch=cell.batch,
                    lr=cell.lr, dtype=cell.dtype)
    return [dict(training, step=start + len(losses[start:start + every]),
                 loss=sum(losses[start:start + every]) / len(losses[start:start + every]))
            for start in range(0, len(losses), every)]


def measure_lm(cell, rows, corpus, device):
    """Train, then evaluate at every length on the corpus's fixed validation windows."""
    windows = [corpus.eval_windows(seq_len=r["eval_seq_len"], count=max(1, cell.eval_tokens // r["eval_seq_len"]))
               for r in rows]
    lm = build_lm(cell, 256, device)
    gen = torch.Generator().manual_seed(cell.seed)
    result = train(lm, lambda: corpus.batch("train", batch=cell.batch, seq_len=cell.seq_len, generator=gen),
                   steps=cell.steps, lr=cell.lr, device=device, dtype=cell.dtype)
    measured = []
    for ids, labels in windows:
        loss = mean_loss(lm, ids, labels, device=device, dtype=cell.dtype)
        measured.append(dict(params=lm.num_params(), train_loss=result.train_loss, eval_loss=loss,
                             bits_per_byte=loss / math.log(2), ppl=math.exp(loss), time_s=result.time_s, status="ok"))
    return Rows(measured, also={CURVE_CSV: curve_rows(cell, result.losses)})


def measure_recall(cell, device):
    data = dict(seq_len=cell.seq_len, num_kv_pairs=cell.num_kv_pairs, vocab=cell.vocab)
    lm = build_lm(cell, cell.vocab, device)
    gen = torch.Generator().manual_seed(cell.seed)
    result = train(lm, lambda: recall_batch(batch=cell.batch, generator=gen, **data), steps=cell.steps, lr=cell.lr,
                   device=device, dtype=cell.dtype, loss_fn=recall_loss)
    test = recall_batch(batch=RECALL_EVAL_SEQUENCES, generator=torch.Generator().manual_seed(10_000 + cell.seed),
                        **data)
    return dict(params=lm.num_params(), final_loss=result.train_loss, accuracy=recall_accuracy(lm, *test),
                time_s=result.time_s, status="ok")


def run(args, ctx):
    """Train the context's cells (LMs and recall) into its run directory; returns the path of perplexity.csv."""
    shared = dict(out_dir=ctx.out_dir, run_id=ctx.run_id, device=ctx.device, resume=args.resume)
    lm, recall = Sweep(CSV, also=(CURVE_CSV,), **shared), Sweep(RECALL_CSV, **shared)

    def run_cell(cell):
        if cell.task == "lm":
            corpus = corpus_of(cell.corpus)
            rows = lm_rows(cell, corpus, ctx.device)
            lm.run(rows, lambda: measure_lm(cell, rows, corpus, ctx.device))
        else:
            recall.run(recall_row(cell), lambda: measure_recall(cell, ctx.device))

    drive(ctx.cells, run_cell, desc="perplexity")
    return ctx.out_dir / CSV


def make_parser():
    shared = ("--models", "--batch", "--dim", "--depth", "--kernel-n", "--lambda-imag-exp", "--conv-kernel", "--dtype")
    return cli.parser(__doc__, "python -m bench.perplexity", shared, task="lm, recall (default: the preset's tasks)",
                      corpus="synthetic, stdlib, enwik8[:PATH], or a path to a text file",
                      seq_len="training length (recall: comma-separated lengths)", steps="optimiser steps",
                      seeds="comma-separated seeds", eval_lengths="multiples of the training length, e.g. 1,2,4",
                      lr="peak rate", dtype="float32, bfloat16 or float16 (autocast; one dtype)")


def main(argv=None):
    return cli.run_suite(make_parser(), argv, presets=PERPLEXITY_PRESETS, run=run, build_cells=build_cells,
                         convert=convert)


if __name__ == "__main__":
    sys.exit(main())
