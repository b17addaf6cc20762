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
from bench import cli, config
from bench.config import PERPLEXITY_PRESETS, TASKS, TrainGrid, UsageError
from bench.data import load_corpus
from bench.recall import check as check_recall
from bench.recall import recall_accuracy, recall_batch, recall_loss
from bench.results import DIED_ERROR, KEY_COLUMNS, RowWriter, cell_key, read_rows
from bench.sweep import is_oom, progress
from bench.training import mean_loss, train

KEY = KEY_COLUMNS["perplexity.csv"]
RECALL_KEY = KEY_COLUMNS["recall.csv"]
TRAINING_KEY = tuple(c for c in KEY if c != "eval_seq_len")
PPL_COLUMNS = ("run_id", "model", "corpus", "corpus_sha256", "seed", "dim", "depth", "params", "kernel_N", "kernel_H",
               "lambda_imag_exp", "conv_kernel", "train_seq_len", "eval_seq_len", "steps", "batch", "tokens", "lr",
               "dtype", "device", "train_loss", "eval_loss", "bits_per_byte", "ppl", "entropy_floor_bpb", "time_s",
               "status", "error")
CURVE_COLUMNS = ("run_id", "model", "kernel_N", "lambda_imag_exp", "conv_kernel", "seed", "step", "loss", "corpus",
                 "train_seq_len", "steps", "kernel_H", "dim", "depth", "batch", "lr", "dtype")
RECALL_COLUMNS = ("run_id", "model", "seq_len", "num_kv_pairs", "vocab", "seed", "steps", "dim", "depth", "params",
                  "kernel_N", "kernel_H", "lambda_imag_exp", "conv_kernel", "final_loss", "accuracy", "time_s",
                  "status", "error", "batch", "lr", "dtype")
CSVS = ("perplexity.csv", "train_curve.csv", "recall.csv")
DTYPES = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}
CURVE_POINTS = 100  # train_curve.csv holds at most this many points per training
RECALL_EVAL_SEQUENCES = 256


def add_flags(p):
    p.add_argument("--task", help="lm, recall (default: the preset's tasks)")
    p.add_argument("--models", help=f"comma-separated, from: {', '.join(models.NAMES)}")
    p.add_argument("--corpus", help="synthetic, stdlib, enwik8[:PATH], or a path to a text file")
    for flag, text in [("--seq-len", "training length (recall: comma-separated lengths)"), ("--batch", "batch size"),
                       ("--steps", "optimiser steps"), ("--dim", "model width"), ("--depth", "layers"),
                       ("--kernel-n", "DSS state sizes"), ("--lambda-imag-exp", "true,false"),
                       ("--conv-kernel", "taps (conv, gss-direct), or full"), ("--seeds", "comma-separated seeds"),
                       ("--eval-lengths", "multiples of the training length, e.g. 1,2,4"), ("--lr", "peak rate"),
                       ("--dtype", "float32, bfloat16 or float16 (autocast)")]:
        p.add_argument(flag, help=text)


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
    tasks = config.parse_list(args.task, "task", lambda t: config.choice(t, "task", TASKS)) if args.task else TASKS
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
    for name, parse in [("seq_len", config.positive_int), ("eval_lengths", config.positive_int),
                        ("seeds", _seed)]:
        raw = getattr(args, name)
        if raw is not None:
            flag = name.replace("_", "-")
            setattr(args, name, config.parse_list(raw, flag, lambda t: parse(t, flag)))
    for name in ("steps", "depth"):
        if getattr(args, name) is not None:
            setattr(args, name, config.positive_int(getattr(args, name), name))
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


class Suite:
    def __init__(self, *, run_id, out_dir, device, resume):
        self.run_id, self.out_dir, self.device = run_id, out_dir, device
        self.rows = RowWriter(out_dir / "perplexity.csv", PPL_COLUMNS)
        self.curve = RowWriter(out_dir / "train_curve.csv", CURVE_COLUMNS)
        self.recall = RowWriter(out_dir / "recall.csv", RECALL_COLUMNS)
        self.done = set()
        if resume:
            self.done |= {cell_key(r, TRAINING_KEY) for r in read_rows(out_dir / "perplexity.csv")}
            self.done |= {cell_key(r, RECALL_KEY) for r in read_rows(out_dir / "recall.csv")}

    def lm_row(self, cell, corpus):
        return dict(run_id=self.run_id, model=cell.model, corpus=cell.corpus, corpus_sha256=corpus.sha256,
                    seed=cell.seed, dim=cell.dim, depth=cell.depth, kernel_N=cell.kernel_N, kernel_H=cell.kernel_H,
                    lambda_imag_exp=cell.lambda_imag_exp, conv_kernel=cell.conv_kernel, train_seq_len=cell.seq_len,
                    steps=cell.steps, batch=cell.batch, tokens=cell.steps * cell.batch * cell.seq_len, lr=cell.lr,
                    dtype=cell.dtype, device=str(self.device), entropy_floor_bpb=corpus.entropy_floor_bpb)

    def recall_row(self, cell):
        return dict(run_id=self.run_id, model=cell.model, seq_len=cell.seq_len, num_kv_pairs=cell.num_kv_pairs,
                    vocab=cell.vocab, seed=cell.seed, steps=cell.steps, dim=cell.dim, depth=cell.depth,
                    kernel_N=cell.kernel_N, kernel_H=cell.kernel_H, lambda_imag_exp=cell.lambda_imag_exp,
                    conv_kernel=cell.conv_kernel, batch=cell.batch, lr=cell.lr, dtype=cell.dtype)

    def build(self, cell, num_tokens):
        torch.manual_seed(cell.seed)
        return models.build_lm(cell.model, num_tokens=num_tokens, dim=cell.dim, depth=cell.depth,
                               device=self.device, **cell.layer_options())

    def run_lm(self, cell):
        corpus = corpus_of(cell.corpus)
        base = self.lm_row(cell, corpus)
        if cell_key(base, TRAINING_KEY) in self.done:
            return
        rows = [{**base, "eval_seq_len": m * cell.seq_len} for m in cell.eval_lengths]
        windows = [corpus.eval_windows(seq_len=r["eval_seq_len"], count=max(1, cell.eval_tokens // r["eval_seq_len"]))
                   for r in rows]
        with cli.in_flight(self.out_dir, base, stem="perplexity"):
            try:
                lm = self.build(cell, 256)
                gen = torch.Generator().manual_seed(cell.seed)
                result = train(lm, lambda: corpus.batch("train", batch=cell.batch, seq_len=cell.seq_len, generator=gen),
                               steps=cell.steps, lr=cell.lr, device=self.device, dtype=DTYPES[cell.dtype])
                for row, (ids, labels) in zip(rows, windows):
                    loss = mean_loss(lm, ids, labels, device=self.device, dtype=DTYPES[cell.dtype])
                    row.update(params=lm.num_params(), train_loss=result.train_loss, eval_loss=loss,
                               bits_per_byte=loss / math.log(2), ppl=math.exp(loss), time_s=result.time_s, status="ok")
                self.write_curve(cell, result.losses)
            except Exception as error:  # failures are rows; the sweep goes on
                for row in rows:
                    row.update(status="oom" if is_oom(error) else "error", error=f"{type(error).__name__}: {error}")
            for row in rows:
                self.rows.append(row)

    def write_curve(self, cell, losses):
        every = max(1, len(losses) // CURVE_POINTS)
        training = dict(run_id=self.run_id, model=cell.model, kernel_N=cell.kernel_N, lambda_imag_exp=cell.lambda_imag_exp,
                        conv_kernel=cell.conv_kernel, seed=cell.seed, corpus=cell.corpus, train_seq_len=cell.seq_len,
                        steps=cell.steps, kernel_H=cell.kernel_H, dim=cell.dim, depth=cell.depth, batch=cell.batch,
                        lr=cell.lr, dtype=cell.dtype)
        for start in range(0, len(losses), every):
            chunk = losses[start:start + every]
            self.curve.append(dict(training, step=start + len(chunk), loss=sum(chunk) / len(chunk)))

    def run_recall(self, cell):
        row = self.recall_row(cell)
        if cell_key(row, RECALL_KEY) in self.done:
            return
        data = dict(seq_len=cell.seq_len, num_kv_pairs=cell.num_kv_pairs, vocab=cell.vocab)
        with cli.in_flight(self.out_dir, row, stem="recall"):
            try:
                lm = self.build(cell, cell.vocab)
                gen = torch.Generator().manual_seed(cell.seed)
                result = train(lm, lambda: recall_batch(batch=cell.batch, generator=gen, **data), steps=cell.steps,
                               lr=cell.lr, device=self.device, dtype=DTYPES[cell.dtype], loss_fn=recall_loss)
                test = recall_batch(batch=RECALL_EVAL_SEQUENCES, generator=torch.Generator().manual_seed(10_000 + cell.seed),
                                    **data)
                row.update(params=lm.num_params(), final_loss=result.train_loss, accuracy=recall_accuracy(lm, *test),
                           time_s=result.time_s, status="ok")
            except Exception as error:
                row.update(status="oom" if is_oom(error) else "error", error=f"{type(error).__name__}: {error}")
            self.recall.append(row)

    def recover(self):
        """A training that was running when the process died is recorded as an error, not run again."""
        for stem, writer, key in (("perplexity", self.rows, TRAINING_KEY), ("recall", self.recall, RECALL_KEY)):
            pending = cli.take_in_flight(self.out_dir, stem=stem)
            if pending is not None and cell_key(pending, key) not in self.done:
                writer.append({**pending, "status": "error", "error": DIED_ERROR})
                self.done.add(cell_key(pending, key))


def run(args, out_dir, run_id, device, preset):
    cells = cli.shard(build_cells(args, preset), args.shard)
    suite = Suite(run_id=run_id, out_dir=out_dir, device=device, resume=args.resume)
    suite.recover()
    for cell in progress(cells, "perplexity"):
        (suite.run_lm if cell.task == "lm" else suite.run_recall)(cell)
    return out_dir / "perplexity.csv"


def main(argv=None):
    parser = cli.parser("python -m bench.perplexity", __doc__.split("\n\n")[0])
    add_flags(parser)
    return cli.run_suite(parser, argv, csv_name=CSVS, presets=PERPLEXITY_PRESETS, run=run, build_cells=build_cells,
                         convert=convert)


if __name__ == "__main__":
    sys.exit(main())
