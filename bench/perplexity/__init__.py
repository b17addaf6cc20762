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
import sys
from dataclasses import replace

import torch

import models
from bench import usage
from bench.core import cli, executor
from bench.core.sweep import Sweep, device_name, drive
from bench.perplexity import lm, mqar
from bench.perplexity.data import load_corpus
from bench.perplexity.grid import PERPLEXITY_PRESETS, TASKS, TrainGrid
from bench.perplexity.recall import check as check_recall
from bench.results import cell_key
from bench.schema import TABLES
from bench.usage import UsageError

CSV, CURVE_CSV, RECALL_CSV = "perplexity.csv", lm.CURVE_CSV, "recall.csv"


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
    flags = dict(
        models=args.models,
        corpus=args.corpus,
        seq_lens=args.seq_len,
        kernel_N=args.kernel_n,
        lambda_imag_exp=args.lambda_imag_exp,
        conv_kernel=args.conv_kernel,
        seeds=args.seeds,
        eval_lengths=args.eval_lengths,
        vocab=args.vocab,
        num_kv_pairs=args.num_kv_pairs,
    )
    if any(v is not None for v in flags.values()):
        bases = {g.task: g for g in reversed(grids)}  # the first grid of each task supplies the defaults
        grids = [
            TrainGrid(**{**base.__dict__, "name": "custom", **{k: v for k, v in flags.items() if v is not None}})
            for base in bases.values()
        ]
    tuning = dict(
        batch=args.batch,
        steps=args.steps,
        dim=args.dim,
        depth=args.depth,
        lrs=args.lr,
        dtype=args.dtype[0] if args.dtype else None,
    )
    grids = [replace(g, **{k: v for k, v in tuning.items() if v is not None}) for g in grids]
    cells = list(dict.fromkeys(c for g in grids for c in g.cells()))
    if args.vocab is not None:  # as given, not adjusted: a vocabulary too small for the lengths is bad input
        cells = [replace(c, vocab=args.vocab) if c.task == "recall" else c for c in cells]
    if not cells:
        raise UsageError(
            "nothing to train: no grid of the preset has the requested task"
            if not grids
            else "nothing to train: no requested model takes the options given (conv_kernel 'full' is gss-direct's)"
        )
    for cell in cells:  # bad input fails here, before anything is written
        models.build_lm(cell.model, num_tokens=2, dim=cell.dim, depth=cell.depth, device="meta", **cell.layer_options())
        if cell.task == "recall":
            check_recall(seq_len=cell.seq_len, num_kv_pairs=cell.num_kv_pairs, vocab=cell.vocab)
        else:
            lm.check(cell, corpus_of(cell.corpus))
    return cells


def shard(cells, spec):
    """The I-th of N slices that keep every seed of a training group together (its learning-rate selection and
    the trainings at the chosen rate): round-robin over groups."""
    if spec is None:
        return cells
    groups = list(dict.fromkeys(replace(c, seed=0, first_seed=True) for c in cells))
    mine = set(cli.shard(groups, spec))
    return [c for c in cells if replace(c, seed=0, first_seed=True) in mine]


def convert(args):
    """The suite's own flags (cli.convert_flags handles the shared ones)."""
    executor.convert(args)
    cli.convert_lists(
        args, seq_len=usage.positive_int, eval_lengths=usage.positive_int, seeds=_seed, lr=usage.positive_number
    )
    cli.convert_ints(args, "steps", "depth", "vocab", "num_kv_pairs")
    if args.dtype is not None and len(args.dtype) > 1:
        raise UsageError(f"--dtype takes one dtype here (every model trains in it), got {','.join(args.dtype)}")
    if args.corpus is not None:
        args.corpus = args.corpus.strip() or None
        if args.corpus is None:
            raise UsageError("--corpus needs a name or a path")
    return args


class SelectingSweep(Sweep):
    """A sweep that remembers the learning rate each selection chose, from the rows it records or reads back:
    the trainings of the other seeds run at it."""

    def __init__(self, csv, **kwargs):
        self.chosen = {}  # the selection's group (the cell key without seed, lr, split) -> the chosen rate
        self.group = tuple(c for c in TABLES[csv].cell if c not in ("seed", "lr", "split"))
        super().__init__(csv, **kwargs)

    def remember(self, row):
        super().remember(row)
        if row.get("lr_selected") == "true":
            self.chosen[cell_key(row, self.group)] = float(row["lr"])

    def rate_for(self, cell, base):
        """The rate a cell that does not select trains at: its only candidate, or the one its selection chose."""
        return cell.lrs[0] if len(cell.lrs) == 1 else self.chosen.get(cell_key(base, self.group))


UNSELECTED = (
    "no learning rate selected for this training: the first seed's selection failed or did not run (a "
    "shard holds a group's seeds together)"
)


def unselected(*_):
    raise RuntimeError(UNSELECTED)


def run(args, ctx):
    """Train the context's cells (LMs and recall) into its run directory; returns the path of perplexity.csv."""
    shared = dict(out_dir=ctx.out_dir, run_id=ctx.run_id, device=ctx.device, resume=args.resume)
    sweeps = {"lm": SelectingSweep(CSV, also=(CURVE_CSV,), **shared), "recall": SelectingSweep(RECALL_CSV, **shared)}

    def plan(cell):
        """(sweep, key row(s), the rate to train at: None for a selection)"""
        sweep = sweeps[cell.task]
        corpus = corpus_of(cell.corpus) if cell.task == "lm" else None
        base = lm.base_row(cell, corpus, ctx.device) if corpus else mqar.base_row(cell)
        if cell.selects:  # keyed by its first row: the smallest rate's validation row
            first = dict(lr=cell.lrs[0], split="val", eval_seq_len=cell.seq_len) if corpus else dict(lr=cell.lrs[0])
            return sweep, {**base, **first}, None
        rate = sweep.rate_for(cell, base)
        keys = [{**base, "lr": rate, "split": "test", "eval_seq_len": m * cell.seq_len} for m in cell.eval_lengths]
        return sweep, keys if corpus else {**base, "lr": rate}, rate

    def run_cell(cell):
        sweep, key, rate = plan(cell)
        if not cell.selects and rate is None:
            return sweep.run(key, unselected)
        sweep.run(key, lambda: measure(cell, ctx.device, rate))

    if args.executor == "local":
        drive(ctx.cells, run_cell, desc="perplexity", deadline=ctx.deadline)
    else:  # a training at a selected rate waits for its selection, then starts with the rate it chose
        _, infos = executor.run(
            jobs(ctx.cells, plan), desc="perplexity", deadline=ctx.deadline, **executor.options(args, ctx.device)
        )
        executor.record_nodes(ctx.out_dir, infos)
    return ctx.out_dir / CSV


def jobs(cells, plan):
    """The trainings as executor jobs, in order; one at a selected rate is held until its selection (the first
    seed's cell of the same model and options) has finished, here or in the run being resumed."""

    def group(c):
        return c.task, c.model, c.seq_len, c.kernel_N, c.kernel_H, c.lambda_imag_exp, c.conv_kernel, c.corpus

    selections, finished = {group(c): c for c in cells if c.selects}, set()
    for cell in cells:
        state = {}

        def begin(cell=cell, state=state):
            sweep, key, rate = plan(cell)
            state.update(sweep=sweep, key=key)
            if not sweep.begin(key):
                if cell.selects:  # done in the run resumed (or skipped): its rate is known, or never will be
                    finished.add(group(cell))
                return None
            if not cell.selects and rate is None:  # its selection failed: as locally, an error row
                sweep.finish(key, RuntimeError(UNSELECTED))
                return None
            return ("bench.perplexity", "measure_remote"), (cell, sweep.device.type, rate)

        def done(result, info, cell=cell, state=state):
            state["sweep"].finish_remote(state["key"], result)
            if cell.selects:
                finished.add(group(cell))

        held = not cell.selects and group(cell) in selections
        yield executor.Job(begin, done, (lambda cell=cell: group(cell) in finished) if held else None)


def measure(cell, device, rate):
    corpus = corpus_of(cell.corpus) if cell.task == "lm" else None
    return lm.measure(cell, corpus, device, lr=rate) if corpus else mqar.measure(cell, device, lr=rate)


def measure_remote(cell, device_type, rate):
    """A training where a Ray task runs (bench.core.executor): its rows (and curves), and that worker's device."""
    device = torch.device(device_type)
    return measure(cell, device, rate), device_name(device)


def make_parser():
    shared = ("--models", "--batch", "--dim", "--depth", "--kernel-n", "--lambda-imag-exp", "--conv-kernel", "--dtype")
    p = cli.parser(
        __doc__,
        "python -m bench.perplexity",
        shared,
        task="lm, recall (default: the preset's tasks)",
        corpus="synthetic, stdlib, enwik8[:PATH], or a path to a text file",
        seq_len="training length (recall: comma-separated lengths)",
        steps="optimiser steps",
        seeds="comma-separated seeds",
        eval_lengths="multiples of the training length, e.g. 1,2,4",
        lr="peak rates; with several, each model selects its own on validation (first seed)",
        dtype="float32, bfloat16 or float16 (autocast; one dtype)",
        vocab="recall vocabulary (default: the grid's if above the longest length, else the next power of two)",
        num_kv_pairs="recall key-value pairs per sequence",
    )
    executor.add_flags(p)
    return p


# how a command line becomes cells (cli.resolve)
HOW = dict(presets=PERPLEXITY_PRESETS, build_cells=build_cells, convert=convert, shard=shard)


def main(argv=None):
    return cli.run_suite(make_parser(), argv, run=run, **HOW)


if __name__ == "__main__":
    sys.exit(main())
