"""Every CSV GSS Bench writes, in one place (torch-free): its columns in header order, the key columns that
identify one cell, the length column an OOM skip follows, and the facts every reader shares (options, modes, the
reference model). What each column means, and which hold numbers, is in bench.columns.

Suites write rows with these columns, `bench.results` merges on these keys, `bench.regress` gates these
values, and docs/suites.md prints these tables (a test keeps them equal). A new column is one line in
bench.columns and one in its table here:

    python -m bench.schema                 # every table as Markdown (the reference in docs/suites.md)
"""

import sys
from dataclasses import dataclass

from bench.columns import COLUMNS_DOC

# The options a grid can sweep, by their paper names; a column that does not apply to a model is empty.
OPTIONS = ("kernel_N", "kernel_H", "lambda_imag_exp", "conv_kernel")
MODES = ("fwd", "fwdbwd")  # a layer step: the forward alone, or the forward and the backward
# Speed-ups (findings.csv), --relative times (the gate) and the quoted crossover are taken against this model.
REFERENCE_MODEL = "attention"
CROSSOVER_PAIR = ("gss", REFERENCE_MODEL)  # the crossover the README quotes, refined by the scaling suite
# the order of tables and legends; others follow
MODELS_ORDER = ("gss", "gss-fast", "gss-direct", "dss", "conv", "attention", "attention-chunked", "gss-hybrid")
# The synthetic corpus's blocks (bench.perplexity.synthetic.Synthetic's defaults): Markov bytes, the marker, then a
# copy of their tail. The read side needs the block length (the window floor's phase bound) without torch.
SYNTHETIC_MARKOV_LEN = 96
SYNTHETIC_COPY_LEN = 32
SYNTHETIC_BLOCK_LEN = SYNTHETIC_MARKOV_LEN + 1 + SYNTHETIC_COPY_LEN


def full_taps(conv_kernel, seq_len):
    """Whether a direct convolution's taps cover the whole length ("full" on command lines and in labels): such
    cells of every length are one series. Values as numbers or as CSV text; no taps ("" or None) is not full."""
    try:
        return float(conv_kernel) == float(seq_len)
    except (TypeError, ValueError):
        return False


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
_MIXER = ("kernel_N", "lambda_imag_exp", "conv_kernel")  # a training's options but its width kernel_H, in _TRAINING
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
                "gauge_times_ms",
                "min_bytes",
                "floor_ms",
                "roofline_frac",
                "gpu_ms",
                "gpu_times_ms",
                "gpu_note",
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
                "min_bytes",
                "floor_ms",
                "roofline_frac",
                "gpu_ms",
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
                *OPTIONS,
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
                *_MIXER,
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
                *_MIXER,
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
                *_MIXER,
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
            key=("model", "corpus", *_MIXER, "seed", "step", "train_seq_len", "steps", *_TRAINING),
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
                *OPTIONS,
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
                "floor_accuracy",
                "ceiling_accuracy",
                "key_collision_rate",
            ),
            key=("model", "seq_len", "num_kv_pairs", "vocab", "seed", "steps", *_MIXER, *_TRAINING),
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
                "flops",
                "tflops_per_s",
                "peak_frac",
                "min_bytes",
                "bandwidth_frac",
            ),
            key=("model", "mode", "seq_len", "dtype", "device", "batch", "dim", *_LAYER, "category"),
            length="seq_len",
            read=(
                "model",
                "mode",
                "seq_len",
                "category",
                "status",
                "time_ms",
                "fraction",
                "flops",
                "tflops_per_s",
                "peak_frac",
                "min_bytes",
                "bandwidth_frac",
            ),
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
        # computed from scaling.csv by bench.analysis.findings, not measured: no suite writes it, no length
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
