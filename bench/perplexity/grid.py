"""The perplexity suite's sweeps as data: trainings, their grids and the named presets.

A grid lists candidate learning rates (`lrs`): with more than one, each model and option set is trained at
every rate on the first seed, extended a step of the grid's ratio past an edge while the best rate sits there (at
most `lr_extensions` a side, bench.perplexity.rates), and the rate with the best validation score serves every
seed (bench.perplexity).
"""

from dataclasses import dataclass

import models
from bench.core.config import SWEPT_OPTIONS, Preset, option_combos, taken_options
from bench.perplexity.rates import EXTENSIONS
from bench.usage import choice

TASKS = ("lm", "recall")
# attention-chunked and gss-hybrid attend within chunks of 1/8 of the training length, as the GSS paper's 512 at
# 4,096: a chunk as long as the training window would be plain attention
CHUNK_OF_TRAINING = 8


@dataclass(frozen=True)
class Training:
    """One training cell of the perplexity suite (task lm) or of associative recall (task recall): at the first
    seed with several `lrs`, the learning-rate selection (a training per rate); otherwise one training at the
    selected (or only) rate."""

    task: str
    model: str
    seed: int
    corpus: str | None
    seq_len: int
    batch: int
    steps: int
    lrs: tuple
    dim: int
    depth: int
    first_seed: bool = True  # the seed that selects the learning rate
    eval_lengths: tuple = (1,)  # multiples of seq_len (lm)
    eval_tokens: int = 16384  # scored bytes per evaluation length: the same target bytes for every model and length
    num_kv_pairs: int | None = None  # recall
    vocab: int | None = None  # recall
    kernel_N: int | None = None
    kernel_H: int | None = None
    lambda_imag_exp: bool | None = None
    conv_kernel: int | None = None
    dtype: str = "float32"
    lr_extensions: int = EXTENSIONS  # rates tried past each edge of lrs (0: the rates as given, --lr)

    @property
    def selects(self):
        """Whether this cell selects the learning rate (several candidates, first seed)."""
        return self.first_seed and len(self.lrs) > 1

    def layer_options(self):
        """The model's options: the grid's, and chunked attention's chunk at CHUNK_OF_TRAINING of the length."""
        values = {o: getattr(self, o) for o in SWEPT_OPTIONS}
        return taken_options(self.model, {**values, "chunk": max(1, self.seq_len // CHUNK_OF_TRAINING)})


def recall_vocab(vocab, seq_lens):
    """The grid's vocabulary when it exceeds the longest length (Zoology's MQAR needs vocab > seq_len), else
    the smallest power of two above that length."""
    longest = max(seq_lens)
    return vocab if vocab is not None and vocab > longest else 1 << longest.bit_length()


@dataclass(frozen=True)
class TrainGrid:
    """models x applicable options x seeds (x seq_lens for recall); everything else shared, so every
    model gets the same token budget, optimiser, batch, seeds and candidate learning rates."""

    name: str
    task: str
    models: tuple
    seeds: tuple = (0,)
    corpus: str | None = "stdlib"
    seq_lens: tuple = (256,)
    batch: int = 8
    steps: int = 200
    lrs: tuple = (2e-3,)
    dim: int = 64
    depth: int = 2
    eval_lengths: tuple = (1, 2, 4)
    eval_tokens: int = 16384
    num_kv_pairs: int = 8
    vocab: int | None = None  # recall; None: recall_vocab's rule
    kernel_N: tuple | None = None
    kernel_H: tuple | None = None
    lambda_imag_exp: tuple | None = None
    conv_kernel: tuple | None = None
    dtype: str = "float32"
    lr_extensions: int = EXTENSIONS

    def __post_init__(self):
        choice(self.task, "task", TASKS)
        for name in self.models:
            models.spec(name)

    def cells(self):
        recall = self.task == "recall"
        shared = dict(
            task=self.task,
            batch=self.batch,
            steps=self.steps,
            lrs=tuple(sorted(set(self.lrs))),
            dim=self.dim,
            depth=self.depth,
            dtype=self.dtype,
            lr_extensions=self.lr_extensions,
            corpus=None if recall else self.corpus,
            eval_lengths=() if recall else self.eval_lengths,
            eval_tokens=self.eval_tokens,
            num_kv_pairs=self.num_kv_pairs if recall else None,
            vocab=recall_vocab(self.vocab, self.seq_lens) if recall else None,
        )
        return [
            Training(model=model, seed=seed, first_seed=seed == self.seeds[0], seq_len=seq_len, **shared, **options)
            for model in self.models
            for options in option_combos(model, self)
            for seq_len in self.seq_lens
            for seed in self.seeds
        ]


_ZOOLOGY_MODELS = ("gss", "conv", "attention", "dss")


def zoology(name, *, widths, cells, tokens, models=_ZOOLOGY_MODELS, **training):
    """Zoology's figure 2 as grids (Arora et al. 2023, Section 3; zoology/experiments/paper_configs/
    iclr24_zoology_figure2): MQAR accuracy over model width for each (seq_len, num_kv_pairs) of `cells` that fits
    (seq_len >= 4 * num_kv_pairs), depth 2, one seed (the selection seed: each point is the best accuracy over its
    bracketed rates), batches of `tokens` tokens (as Zoology, fewer sequences at longer lengths). A grid per
    point."""
    return tuple(
        TrainGrid(
            name,
            "recall",
            models,
            seeds=(0,),
            seq_lens=(seq_len,),
            num_kv_pairs=pairs,
            batch=tokens // seq_len,
            dim=dim,
            depth=2,
            kernel_H=(dim // 2,),  # the GSS paper's H = dim / 2
            **training,
        )
        for dim in widths
        for seq_len, pairs in cells
        if 4 * pairs <= seq_len
    )


# Zoology's grid: widths 64..256, lengths 64..256 with 4, 8 and 16 pairs, vocabulary 8,192 (Zoology's). Zoology trains
# 64 epochs of 100,000 sequences (some 12,500 steps of 512) at each of four rates, 1e-4..1e-2; this grid trains a
# fraction of that: 1,000 steps of 8,192 tokens, at rates a factor 3 apart that extend down to Zoology's 1e-4. Not
# yet run on a GPU: at 200 steps attention learned nothing at width 128 in CPU trials (docs/suites.md)
ZOOLOGY = zoology(
    "zoology",
    widths=(64, 128, 256),
    cells=tuple((L, p) for L in (64, 128, 256) for p in (4, 8, 16)),
    tokens=8192,
    steps=1000,
    lrs=(1e-3, 3e-3, 9e-3),
    vocab=8192,
)
# The CPU's share of it (2 cores): the narrow end, widths 32, 64 and 128 at length 64 with 4 and 8 pairs; batch 32,
# 300 steps, the least on trial runs at which attention solved the 4-pair cell at width 128 (docs/suites.md); a
# vocabulary of 256, where Zoology's 8,192 would make the output layer most of a step at width 64. Not width 256: its
# trainings (42 s each) took 36 of a quiet run's minutes past the preset's 30 (docs/suites.md)
ZOOLOGY_CPU = zoology(
    "zoology-cpu",
    widths=(32, 64, 128),
    cells=((64, 4), (64, 8)),
    tokens=2048,
    steps=300,
    lrs=(5e-3, 1e-2, 2e-2),
    vocab=256,
)

_TINY = dict(dim=64, depth=2, batch=8, kernel_H=(32,))  # the GSS paper's H = dim / 2 ratio at a tiny width
# the baselines and the GSS paper's own comparison: DSS, chunked attention and GSS-Hybrid (chunk: CHUNK_OF_TRAINING)
_PAPER = ("gss", "conv", "attention", "dss", "attention-chunked", "gss-hybrid")
PERPLEXITY_PRESETS = {
    # CPU, 2 cores: tiny byte-level LMs, each model at its best of three learning rates.
    "quick": Preset(
        "quick",
        (
            # the rates centred on the one every model chose from a lower grid on a trial run. Not fewer steps: with
            # fewer, most models chose the largest rate (the optimum moves up as training shortens). Zoology's four
            # models: with three seeds and the rate extensions, chunked attention and GSS-Hybrid would take the quick
            # run_all past its 10 minutes (docs/suites.md); the full preset trains all six
            TrainGrid(
                "models",
                "lm",
                _ZOOLOGY_MODELS,
                seeds=(0, 1, 2),
                corpus="stdlib",
                steps=300,
                seq_lens=(256,),
                kernel_N=(64,),
                lrs=(6e-3, 1.2e-2, 2.4e-2),
                **_TINY,
            ),
            # No kernel_N / lambda_imag_exp ablation here (the full preset has it): its trainings were a large share
            # of the quick run_all for a delta within noise in the last quick reference that had it.
            # Zoology's MQAR at a cell attention solves in every seed on trial runs (docs/suites.md): length 32, 4
            # pairs, batch 32; a vocabulary of 128, whose filler repeats a query's key before it for about 4% of
            # the queries. The four models of Zoology's comparison (chunked attention and GSS-Hybrid left out to keep
            # the preset within its share of the quick run_all)
            TrainGrid(
                "recall",
                "recall",
                _ZOOLOGY_MODELS,
                seeds=(0, 1, 2),
                seq_lens=(32,),
                steps=400,
                num_kv_pairs=4,
                vocab=128,
                kernel_N=(64,),
                lrs=(6e-3, 1.2e-2, 2.4e-2),
                **{**_TINY, "batch": 32},
            ),
        ),
    ),
    # One GPU: the byte-level setting of the original training script (dim 512, depth 8, seq_len 4096,
    # bf16 autocast) for a fixed budget, at the best of four learning rates.
    "full": Preset(
        "full",
        (
            TrainGrid(
                "models",
                "lm",
                _PAPER,
                seeds=(0, 1),
                corpus="stdlib",
                seq_lens=(4096,),
                batch=4,
                steps=300,
                lrs=(3e-4, 6e-4, 1.2e-3, 2.4e-3),
                dim=512,
                depth=8,
                eval_lengths=(1, 2, 4, 8),
                eval_tokens=131072,
                dtype="bfloat16",
            ),
            TrainGrid(
                "ablation",
                "lm",
                ("gss",),
                seeds=(0, 1),
                corpus="synthetic",
                seq_lens=(1024,),
                batch=8,
                steps=300,
                lrs=(5e-4, 1e-3, 2e-3, 4e-3),
                dim=256,
                depth=4,
                kernel_N=(64, 512),
                lambda_imag_exp=(True, False),
                dtype="bfloat16",
            ),
            TrainGrid(
                "recall",
                "recall",
                _PAPER,
                seeds=(0, 1),
                seq_lens=(256, 1024, 4096),
                batch=32,
                steps=500,
                lrs=(5e-4, 1e-3, 2e-3, 4e-3),
                dim=128,
                depth=2,
                num_kv_pairs=32,
                vocab=8192,
            ),
            *ZOOLOGY,
        ),
    ),
    "zoology": Preset("zoology", ZOOLOGY),
    "zoology-cpu": Preset("zoology-cpu", ZOOLOGY_CPU),
    # One H100/H200 within the device budget: one short training of every model at one rate (no selection).
    "gpu-check": Preset(
        "gpu-check",
        (
            TrainGrid(
                "models",
                "lm",
                models.LM_NAMES,
                corpus="stdlib",
                seq_lens=(2048,),
                batch=8,
                steps=100,
                lrs=(1e-3,),
                dim=512,
                depth=4,
                eval_lengths=(1, 2),
                eval_tokens=65536,
                dtype="bfloat16",
            ),
            TrainGrid(
                "recall",
                "recall",
                models.LM_NAMES,
                seq_lens=(256,),
                batch=32,
                steps=100,
                lrs=(2e-3,),
                dim=128,
                depth=2,
                num_kv_pairs=16,
                vocab=8192,
            ),
        ),
    ),
    "smoke": Preset(
        "smoke",
        (
            TrainGrid(
                "models",
                "lm",
                models.LM_NAMES,
                seeds=(0,),
                corpus="synthetic",
                seq_lens=(32,),
                batch=2,
                steps=3,
                dim=16,
                depth=1,
                eval_lengths=(1, 2),
                eval_tokens=256,
                kernel_N=(8,),
                kernel_H=(16,),
                lrs=(2e-3, 4e-3),
            ),
            TrainGrid(
                "recall",
                "recall",
                ("gss", "attention"),
                seq_lens=(32,),
                batch=2,
                steps=3,
                dim=16,
                depth=1,
                num_kv_pairs=4,
                kernel_N=(8,),
                kernel_H=(16,),
            ),
        ),
    ),
}
