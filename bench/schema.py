"""Every CSV GSS Bench writes, in one place (torch-free): its columns in header order, the key columns that
identify one cell, the length column an OOM skip follows, and what each column means.

Suites write rows with these columns, `bench.results` merges on these keys, `bench.regress` gates these
values, `bench.analysis` parses these numbers, and docs/suites.md prints these tables (a test keeps them
equal). A new column is one line here:

    python -m bench.schema                 # every table as Markdown (the reference in docs/suites.md)
"""

import sys
from dataclasses import dataclass

# The options a grid can sweep, by their paper names; a column that does not apply to a model is empty.
OPTIONS = ("kernel_N", "kernel_H", "lambda_imag_exp", "conv_kernel")
MODES = ("fwd", "fwdbwd")  # a layer step: the forward alone, or the forward and the backward
# Speed-ups (findings.csv), --relative times (the gate) and the quoted crossover are taken against this model.
REFERENCE_MODEL = "attention"
CROSSOVER_PAIR = ("gss", REFERENCE_MODEL)  # the crossover the README quotes, refined by the scaling suite


def full_taps(conv_kernel, seq_len):
    """Whether a direct convolution's taps cover the whole length ("full" on command lines and in labels): such
    cells of every length are one series. Values as numbers or as CSV text."""
    return conv_kernel not in (None, "") and str(conv_kernel) == str(seq_len)


# the order of tables and legends; others follow
MODELS_ORDER = ("gss", "gss-fast", "gss-direct", "dss", "conv", "attention", "attention-chunked", "gss-hybrid")

# What every column means, wherever it appears (a name means the same thing in every CSV).
COLUMNS_DOC = {
    "run_id": "the run directory's name",
    "model": "registry name (`models.NAMES`)",
    "mode": "`fwd` (inference) or `fwdbwd` (forward + backward of the output's mean)",
    "dtype": "`float32`, or the autocast dtype (`bfloat16`, `float16`) over float32 weights; numerics also `float64`",
    "device": "`cpu` or `cuda:<device name>` (perplexity.csv: `cpu` or `cuda`)",
    "batch": "sequences per step",
    "seq_len": "tokens per sequence",
    "dim": "model width",
    "depth": "layers of the LM",
    "kernel_N": "DSS state size N (GSS family)",
    "kernel_H": "channels of the state space convolution H (GSS family, conv)",
    "lambda_imag_exp": "DSS kernel exponentiates the imaginary part of Lambda (GSS family)",
    "conv_kernel": "convolution taps actually used (conv, gss-direct; `seq_len` for full)",
    "compiled": "the layer ran under `torch.compile`",
    "params": "trainable parameters",
    "flops": "FLOPs of one step as counted (docs/measurement.md)",
    "tflops_per_s": "counted FLOPs / median step time, in 1e12 per second",
    "tokens_per_s": "tokens per second: batch x seq_len / median step time (decode: batch / time per token)",
    "time_ms": "median step time, ms (op_breakdown: the category's time, mean over the profiled steps)",
    "time_iqr_ms": "interquartile range of the timed repeats, ms",
    "repeats": "timed repeats behind the median",
    "times_ms": "every timed repeat in the order run, ms, space-separated (6 significant digits); empty in runs "
    "made before it existed",
    "peak_mem_mb": "peak memory above what was allocated before the step (decode: one decode step), MiB",
    "status": "`ok`, `oom`, `error` or `skipped`",
    "error": "the error message, or the reason a cell was skipped",
    "corpus": "corpus name or path",
    "corpus_sha256": "SHA-256 of the corpus bytes used",
    "seed": "training seed",
    "train_seq_len": "training length",
    "eval_seq_len": "evaluation window length",
    "steps": "optimiser steps",
    "tokens": "training tokens (steps x batch x train_seq_len)",
    "lr": "peak learning rate",
    "train_loss": "mean training loss over the last 10% of the steps, nats per byte",
    "eval_loss": "validation loss, nats per byte",
    "bits_per_byte": "eval_loss / ln 2",
    "ppl": "exp(eval_loss)",
    "entropy_floor_bpb": "exact entropy rate of the synthetic source, bits per byte (empty for real text)",
    "time_s": "training wall time, s",
    "step": "optimiser step a curve point ends at",
    "loss": "mean training loss over the steps since the last point, nats",
    "num_kv_pairs": "key-value pairs per recall sequence",
    "vocab": "recall vocabulary size",
    "final_loss": "mean training loss over the last 10% of the steps, nats per token",
    "accuracy": "share of queried values recalled correctly, on the test draw",
    "val_accuracy": "the same on the validation draw that selects the learning rate",
    "chance_accuracy": "accuracy of answering with a random one of the sequence's values: 1 / num_kv_pairs",
    "split": "`val` (selects the learning rate: first seed, 1x only) or `test` (reported)",
    "lr_selected": "`true` on the rows of the rate selected for this model and option set",
    "window_floor_bpb": "the least expected bits/byte on the scored bytes of a window with its context, "
    "knowing the source's phase (synthetic only)",
    "category": "a range of `models/`, `backward` or `other`",
    "fraction": "the category's share of the step (a cell's fractions sum to 1)",
    "step_ms": "profiled step time, ms",
    "profiled_steps": "steps the times average over",
    "basis": "`cpu_wall` or `cuda_kernels`: what time the categories share",
    "trace": "the cell's trace directory, relative to the run directory",
    "method": "`recurrent`, `kv_cache` or `reforward`",
    "prompt_len": "prompt tokens",
    "new_tokens": "tokens generated per prompt",
    "prefill_ms": "median time of one prefill, ms (empty for reforward)",
    "time_per_token_ms": "median time of one decode step, ms",
    "time_per_token_iqr_ms": "interquartile range of the decode steps, ms",
    "state_mb": "decoding state of the whole batch after prefill, MiB (empty for reforward)",
    "out_rel_err": "||out - out_ref|| / ||out_ref|| against float64",
    "grad_rel_err": "relative error of the input gradient against float64",
    "out_branch_rel_err": "out_rel_err of the branch alone (the residual x left out)",
    "grad_branch_rel_err": "grad_rel_err of the branch alone",
    "finding": "`slope`, `crossover` or `speedup` of a length sweep (bench.analysis.findings)",
    "other": "the model a crossover's `model` overtakes, or a speedup's reference (`attention`); empty for a slope",
    "value": "the finding, in `unit`: a slope from the cells' recorded time_ms; a crossover or speedup from the time "
    "ratio of two cells at each length, the median over their interleaved rounds of the rounds' ratios "
    "(the ratio of time_ms where a cell has no times_ms)",
    "ci_low": "2.5th percentile of the finding over bootstrap resamples of the cells' times_ms (a crossover's or "
    "speedup's: of the two cells' rounds, in pairs; empty when a cell of the finding has none)",
    "ci_high": "97.5th percentile of the same",
    "unit": "`exponent` (slope: time ~ seq_len^k), `tokens` (crossover) or `x` (speedup: a time ratio)",
    "detail": "the sweep's options (`kernel_N=64`), the lengths used (`seq_len 2048..8192`), and the share of "
    "resamples in which a crossover does not exist",
}

# Columns parsed as numbers when a CSV is read back; every other column keeps the string written.
NUMERIC = frozenset(
    {
        "batch",
        "seq_len",
        "dim",
        "params",
        "flops",
        "tflops_per_s",
        "tokens_per_s",
        "time_ms",
        "time_iqr_ms",
        "repeats",
        "peak_mem_mb",
        "seed",
        "depth",
        "train_seq_len",
        "eval_seq_len",
        "steps",
        "tokens",
        "train_loss",
        "eval_loss",
        "bits_per_byte",
        "ppl",
        "entropy_floor_bpb",
        "time_s",
        "step",
        "loss",
        "num_kv_pairs",
        "vocab",
        "accuracy",
        "fraction",
        "prompt_len",
        "new_tokens",
        "prefill_ms",
        "time_per_token_ms",
        "state_mb",
        "out_rel_err",
        "grad_rel_err",
        "lr",
        "window_floor_bpb",
        "chance_accuracy",
        "val_accuracy",
    }
)


@dataclass(frozen=True)
class Table:
    """One CSV: `columns` in header order; `key` identifies one row; a measured cell is one row, or one row
    per value of `per_cell` (`cell` is the key without it); `length` is the key column that grows along a
    series (an OOM skips the longer cells); `read` are the columns the findings and figures need; `values`
    the measured columns a gate checks."""

    name: str
    suite: str
    columns: tuple
    key: tuple
    length: str
    read: tuple
    values: tuple = ()
    per_cell: str | None = None  # several rows per cell, one per value of this column

    def __post_init__(self):
        for group in ("key", "read", "values"):
            if unknown := [c for c in getattr(self, group) if c not in self.columns]:
                raise ValueError(f"{self.name}: {group} columns {unknown} are not columns")
        if undocumented := [c for c in self.columns if c not in COLUMNS_DOC]:
            raise ValueError(f"{self.name}: columns {undocumented} have no entry in COLUMNS_DOC")

    @property
    def stem(self):
        return self.name.removesuffix(".csv")

    @property
    def cell(self):
        """The columns that identify one measured cell."""
        return tuple(c for c in self.key if c != self.per_cell)

    @property
    def series(self):
        """A cell's key without its length: the cells an OOM carries over to."""
        return tuple(c for c in self.cell if c != self.length)


_LAYER = ("kernel_N", "kernel_H", "lambda_imag_exp", "conv_kernel", "compiled")
_TRAINING = ("kernel_H", "dim", "depth", "batch", "lr", "dtype")

TABLES = {
    t.name: t
    for t in (
        Table(
            "scaling.csv",
            "scaling",
            (
                "run_id",
                "model",
                "mode",
                "dtype",
                "device",
                "batch",
                "seq_len",
                "dim",
                *_LAYER,
                "params",
                "flops",
                "tflops_per_s",
                "tokens_per_s",
                "time_ms",
                "time_iqr_ms",
                "repeats",
                "peak_mem_mb",
                "status",
                "error",
                "times_ms",
            ),
            key=("model", "mode", "dtype", "device", "batch", "seq_len", "dim", *_LAYER),
            length="seq_len",
            read=(
                "model",
                "mode",
                "dtype",
                "seq_len",
                *OPTIONS,
                "status",
                "time_ms",
                "time_iqr_ms",
                "peak_mem_mb",
                "flops",
                "tflops_per_s",
            ),
            values=("params", "flops", "time_ms", "time_iqr_ms", "repeats", "peak_mem_mb"),
        ),
        # a training is identified by what the gate joins on, then every other setting a grid can vary
        Table(
            "perplexity.csv",
            "perplexity",
            (
                "run_id",
                "model",
                "corpus",
                "corpus_sha256",
                "seed",
                "dim",
                "depth",
                "params",
                "kernel_N",
                "kernel_H",
                "lambda_imag_exp",
                "conv_kernel",
                "train_seq_len",
                "eval_seq_len",
                "steps",
                "batch",
                "tokens",
                "lr",
                "dtype",
                "device",
                "train_loss",
                "eval_loss",
                "bits_per_byte",
                "ppl",
                "entropy_floor_bpb",
                "time_s",
                "status",
                "error",
                "split",
                "lr_selected",
                "window_floor_bpb",
            ),
            key=(
                "model",
                "corpus",
                "corpus_sha256",
                "seed",
                "kernel_N",
                "lambda_imag_exp",
                "conv_kernel",
                "train_seq_len",
                "eval_seq_len",
                "steps",
                *_TRAINING,
                "split",
            ),
            length="train_seq_len",
            read=(
                "model",
                "corpus",
                "seed",
                "kernel_N",
                "lambda_imag_exp",
                "conv_kernel",
                "train_seq_len",
                "eval_seq_len",
                "status",
                "bits_per_byte",
                "entropy_floor_bpb",
            ),
            values=("params", "bits_per_byte"),
            per_cell="eval_seq_len",
        ),
        Table(
            "train_curve.csv",
            "perplexity",
            (
                "run_id",
                "model",
                "kernel_N",
                "lambda_imag_exp",
                "conv_kernel",
                "seed",
                "step",
                "loss",
                "corpus",
                "train_seq_len",
                "steps",
                "kernel_H",
                "dim",
                "depth",
                "batch",
                "lr",
                "dtype",
            ),
            key=(
                "model",
                "corpus",
                "kernel_N",
                "lambda_imag_exp",
                "conv_kernel",
                "seed",
                "step",
                "train_seq_len",
                "steps",
                *_TRAINING,
            ),
            length="train_seq_len",
            read=("model", "seed", "step", "loss"),
            per_cell="step",
        ),
        Table(
            "recall.csv",
            "perplexity",
            (
                "run_id",
                "model",
                "seq_len",
                "num_kv_pairs",
                "vocab",
                "seed",
                "steps",
                "dim",
                "depth",
                "params",
                "kernel_N",
                "kernel_H",
                "lambda_imag_exp",
                "conv_kernel",
                "final_loss",
                "accuracy",
                "time_s",
                "status",
                "error",
                "batch",
                "lr",
                "dtype",
                "chance_accuracy",
                "val_accuracy",
                "lr_selected",
            ),
            key=(
                "model",
                "seq_len",
                "num_kv_pairs",
                "vocab",
                "seed",
                "steps",
                "kernel_N",
                "lambda_imag_exp",
                "conv_kernel",
                *_TRAINING,
            ),
            length="seq_len",
            read=("model", "seq_len", "status", "accuracy"),
            values=("params", "accuracy"),
        ),
        Table(
            "op_breakdown.csv",
            "profiling",
            (
                "model",
                "mode",
                "seq_len",
                "category",
                "time_ms",
                "fraction",
                "run_id",
                "dtype",
                "device",
                "batch",
                "dim",
                *_LAYER,
                "step_ms",
                "profiled_steps",
                "basis",
                "trace",
                "status",
                "error",
            ),
            key=("model", "mode", "seq_len", "dtype", "device", "batch", "dim", *_LAYER, "category"),
            length="seq_len",
            read=("model", "mode", "seq_len", "category", "status", "time_ms", "fraction"),
            per_cell="category",
        ),
        Table(
            "decode.csv",
            "decode",
            (
                "run_id",
                "model",
                "method",
                "dtype",
                "device",
                "batch",
                "dim",
                "depth",
                "prompt_len",
                "new_tokens",
                "prefill_ms",
                "time_per_token_ms",
                "tokens_per_s",
                "peak_mem_mb",
                "state_mb",
                "status",
                "error",
                "time_per_token_iqr_ms",
                "repeats",
            ),
            key=("model", "method", "dtype", "device", "batch", "dim", "depth", "prompt_len", "new_tokens"),
            length="prompt_len",
            read=(
                "model",
                "method",
                "dtype",
                "prompt_len",
                "status",
                "prefill_ms",
                "time_per_token_ms",
                "peak_mem_mb",
                "state_mb",
            ),
        ),
        Table(
            "numerics.csv",
            "numerics",
            (
                "run_id",
                "model",
                "dtype",
                "device",
                "seq_len",
                "out_rel_err",
                "grad_rel_err",
                "status",
                "error",
                "dim",
                "batch",
                "out_branch_rel_err",
                "grad_branch_rel_err",
            ),
            key=("model", "dtype", "device", "seq_len", "dim", "batch"),
            length="seq_len",
            read=("model", "dtype", "seq_len", "status", "out_rel_err", "grad_rel_err"),
        ),
        # computed from scaling.csv by bench.analysis.findings (beside REPORT.md), not measured: no suite writes it,
        # no length
        Table(
            "findings.csv",
            "findings",
            ("finding", "mode", "dtype", "model", "other", "value", "ci_low", "ci_high", "unit", "detail"),
            key=("finding", "mode", "dtype", "model", "other", "detail"),
            length="",
            read=("finding", "mode", "dtype", "model", "other", "value", "ci_low", "ci_high", "unit", "detail"),
        ),
    )
}

KEY_COLUMNS = {name: table.key for name, table in TABLES.items()}


def table(name):
    """The Table of a CSV name; unknown names fail listing the known ones."""
    try:
        return TABLES[name]
    except KeyError:
        raise ValueError(f"unknown CSV {name!r}; known: {', '.join(TABLES)}") from None


def markdown(name):
    """A CSV's columns as a Markdown table: column, key (yes where it identifies the cell), meaning."""
    t = table(name)
    lines = [f"`{name}` (suite `{t.suite}`)", "", "| column | key | meaning |", "| --- | --- | --- |"]
    lines += [f"| `{c}` | {'yes' if c in t.key else ''} | {COLUMNS_DOC[c]} |" for c in t.columns]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write("\n".join(markdown(name) for name in TABLES))
