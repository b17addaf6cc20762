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

import models
from bench.core import cli
from bench.core.sweep import Sweep, run_jobs
from bench.perplexity import lm, mqar
from bench.perplexity.data import load_corpus
from bench.perplexity.grid import PERPLEXITY_PRESETS, TASKS, TrainGrid
from bench.perplexity.recall import check as check_recall
from bench.results import cell_key
from bench.schema import TABLES
from bench.usage import UsageError, list_of, one_of, positive_int, positive_number, value_of

CSV, CURVE_CSV, RECALL_CSV = "perplexity.csv", lm.CURVE_CSV, "recall.csv"


def _seed(text, name):
    try:
        value = int(text)
    except ValueError:
        raise UsageError(f"--{name}: {text!r} is not an integer") from None
    if value < 0:
        raise UsageError(f"--{name}: {value} is negative")
    return value


def _dtype(text):
    """--dtype here: one dtype (every model trains in it), as a tuple like the shared flag's."""
    dtypes = cli.FLAGS["--dtype"][1](text)
    if len(dtypes) > 1:
        raise UsageError(f"--dtype takes one dtype here (every model trains in it), got {','.join(dtypes)}")
    return dtypes


def _corpus(text):
    if not text.strip():
        raise UsageError("--corpus needs a name or a path")
    return text.strip()


@functools.cache
def corpus_of(spec):
    return load_corpus(spec)


def build_cells(
    preset,
    *,
    task=None,
    seq_len=None,
    kernel_n=None,
    lr=None,
    dtype=None,
    batch=None,
    steps=None,
    dim=None,
    depth=None,
    **flags,
):
    """The preset's grids for the requested task(s), from the flags' values (None: unset). With grid flags (models,
        corpus, seq_len, kernel_n, lambda_imag_exp, conv_kernel, seeds, eval_lengths, vocab, num_kv_pairs), one grid per
        task from them and its first grid; batch, steps, dim, depth, lr and dtype apply to every grid (rates given with
    --lr are never extended past their edges)."""
    tuning = dict(batch=batch, steps=steps, dim=dim, depth=depth, lrs=lr, dtype=dtype[0] if dtype else None)
    tuning["lr_extensions"] = None if lr is None else 0  # rates given are trained as given, never extended
    grids = [g for g in preset.grids if g.task in (task or TASKS)]
    flags.update(seq_lens=seq_len, kernel_N=kernel_n)
    if any(v is not None for v in flags.values()):
        bases = {g.task: g for g in reversed(grids)}  # the first grid of each task supplies the defaults
        grids = [
            TrainGrid(**{**base.__dict__, "name": "custom", **{k: v for k, v in flags.items() if v is not None}})
            for base in bases.values()
        ]
    grids = [replace(g, **{k: v for k, v in tuning.items() if v is not None}) for g in grids]
    cells = list(dict.fromkeys(c for g in grids for c in g.cells()))
    if flags.get("vocab") is not None:  # as given, not adjusted: a vocabulary too small for the lengths is bad input
        cells = [replace(c, vocab=flags["vocab"]) if c.task == "recall" else c for c in cells]
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


class SelectingSweep(Sweep):
    """A sweep that remembers the learning rate each selection chose, from the rows it records or reads back:
    the trainings of the other seeds run at it. A row's device is the device type, the same on any worker."""

    def __init__(self, csv, **kwargs):
        self.chosen = {}  # the selection's group (the cell key without seed, lr, split) -> the chosen rate
        self.group = tuple(c for c in TABLES[csv].cell if c not in ("seed", "lr", "split"))
        super().__init__(csv, worker_device=False, **kwargs)

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


def make_spec(common, **flags):
    """The run of the common settings (cli.Common) and this suite's flags' values (build_cells): a shard keeps
    a training group's seeds together."""
    return cli.build("perplexity", common, flags, PERPLEXITY_PRESETS, build_cells, shard=shard)


def run(spec):
    """Train the spec's cells (LMs and recall) into its run directory; returns the path of perplexity.csv. A
    training at a selected rate starts once its selection has chosen (here, it comes after it)."""
    sweeps = {
        "lm": SelectingSweep(CSV, also=(CURVE_CSV,), **spec.sweep_args),
        "recall": SelectingSweep(RECALL_CSV, **spec.sweep_args),
    }

    def base(cell):  # the columns of its rows known before it trains
        return lm.base_row(cell, corpus_of(cell.corpus), spec.device) if cell.task == "lm" else mqar.base_row(cell)

    def start(cell):
        """Its key row(s) and task: a selection is keyed by the grid's smallest rate's row (validation, for an LM)
        and trains at every rate (and past an edge); another training, at the rate its selection chose (none
        chosen: an error row)."""
        row, lm_task = base(cell), cell.task == "lm"
        if cell.selects:
            first = dict(lr=cell.lrs[0], split="val", eval_seq_len=cell.seq_len) if lm_task else dict(lr=cell.lrs[0])
            return {**row, **first}, (measure, (cell, None))
        rate = sweeps[cell.task].rate_for(cell, row)
        keys = [{**row, "lr": rate, "split": "test", "eval_seq_len": m * cell.seq_len} for m in cell.eval_lengths]
        return keys if lm_task else {**row, "lr": rate}, (unselected, ()) if rate is None else (measure, (cell, rate))

    jobs = []
    for cell in spec.cells:
        sweep = sweeps[cell.task]
        ready = None if cell.selects else (lambda cell=cell, sweep=sweep: sweep.rate_for(cell, base(cell)) is not None)
        jobs.append(sweep.job(functools.partial(start, cell), ready))
    run_jobs(jobs, spec, desc="perplexity")
    return spec.out_dir / CSV


def measure(cell, rate, device):
    """A training's rows (and curves): at `rate`, or the selection over the cell's rates (rate None)."""
    if cell.task == "lm":
        return lm.measure(cell, corpus_of(cell.corpus), device, lr=rate)
    return mqar.measure(cell, device, lr=rate)


def make_parser():
    shared = ("--models", "--batch", "--dim", "--depth", "--kernel-n", "--lambda-imag-exp", "--conv-kernel", "--dtype")
    return cli.parser(
        __doc__,
        "python -m bench.perplexity",
        shared,
        task=("lm, recall (default: the preset's tasks)", list_of(one_of(TASKS, "task"), "task")),
        corpus=("synthetic, stdlib, enwik8[:PATH], or a path to a text file", _corpus),
        seq_len=("training length (recall: comma-separated lengths)", list_of(positive_int, "seq-len")),
        steps=("optimiser steps", value_of(positive_int, "steps")),
        seeds=("comma-separated seeds", list_of(_seed, "seeds")),
        eval_lengths=("multiples of the training length, e.g. 1,2,4", list_of(positive_int, "eval-lengths")),
        lr=(
            "peak rates; with several, each model selects its own on validation (first seed), among these only",
            list_of(positive_number, "lr"),
        ),
        dtype=("float32, bfloat16 or float16 (autocast; one dtype)", _dtype),
        vocab=(
            "recall vocabulary (default: the grid's if above the longest length, else the next power of two)",
            value_of(positive_int, "vocab"),
        ),
        num_kv_pairs=("recall key-value pairs per sequence", value_of(positive_int, "num-kv-pairs")),
    )


def main(argv=None):
    return cli.main(make_parser(), argv, make_spec, run)


if __name__ == "__main__":
    sys.exit(main())
