"""Decode suite: prefill a prompt, then generate token by token; time per token, memory and state per method.

    python -m bench.decode                              # the device's default preset (quick on CPU, full on CUDA)
    python -m bench.decode --models gss,attention --prompt-lens 512,4096 --methods recurrent,kv_cache --list

Methods (models.GENERATE_METHODS): `recurrent` (GSS family, conv) and `kv_cache` (attention) prefill the
prompt in one parallel pass (lm.prefill), then step the LM one token at a time through each layer's
state (lm.step): the DSS recurrence, a convolution buffer, or the KV cache. `reforward` (every model)
re-runs forward over the whole sequence for every new token, as the original sampling loop does.

How each number is measured (bench.core.timing.measure and bench.core.memory.peak_memory_mb, nothing else):
* prefill_ms: median time of lm.prefill(prompt, max_len=prompt_len + new_tokens), a fresh state per
  call. Empty for reforward.
* time_per_token_ms, stepping: the generation itself is the measurement, so no state is copied or
  rolled back. After a prefill, step() is called new_tokens times, each on the greedy token of the one
  before: the first call is the warm-up (and the peak-memory run), the other new_tokens - 1 are the
  timed repeats, at positions prompt_len + 1 ... prompt_len + new_tokens - 1. Reforward: median time
  of one forward over prompt_len + 1 tokens plus the greedy pick, i.e. the cost of the next token.
* tokens_per_s = batch / time_per_token (batch sequences each get one token per step).
* peak_mem_mb: peak memory of one decode step above what is already allocated (weights, and for
  stepping the state), i.e. the working memory one more token needs; for reforward one forward over
  prompt_len + 1 tokens. The persistent memory of stepping is state_mb.
* state_mb: models.state_nbytes of the whole batch's state after prefill / 2**20; the KV cache is
  preallocated to prompt_len + new_tokens positions, which is what decoding holds. Empty for reforward.

`dtype` is autocast with float32 weights, as in the scaling suite. Rows go to DIR/decode.csv one cell at a
time; a failure is a row (oom / error / skipped), an OOM skips the longer prompts of its series, and
--resume continues a killed run.
"""

import contextlib
import itertools
import sys
from dataclasses import dataclass, replace

import torch

import models
from bench.core import cli
from bench.core.config import Preset
from bench.core.memory import MIB, peak_memory_mb
from bench.core.sweep import Sweep, device_name, run_jobs
from bench.core.timing import autocast, measure
from bench.usage import UsageError, list_of, one_of, positive_int

CSV = "decode.csv"
METHODS = models.GENERATE_METHODS
NUM_TOKENS = 256  # byte-level vocabulary


KV_CACHED = ("attention", "attention-chunked")  # models whose step state is a KV cache


def applies(model, method):
    """kv_cache is the attention models' name for stepping, recurrent everyone else's; reforward runs for all."""
    return method == "reforward" or (method == "kv_cache") == (model in KV_CACHED)


@dataclass(frozen=True)
class DecodeCell:
    model: str
    method: str
    dtype: str
    batch: int
    dim: int
    depth: int
    prompt_len: int
    new_tokens: int


@dataclass(frozen=True)
class DecodeGrid:
    """models x applicable methods x dtypes x prompt lengths, the rest shared."""

    name: str
    models: tuple
    prompt_lens: tuple
    methods: tuple = METHODS
    dtypes: tuple = ("float32",)
    batch: int = 1
    dim: int = 256
    depth: int = 2
    new_tokens: int = 16

    def __post_init__(self):
        for name in self.models:
            models.spec(name)

    def cells(self):
        return [
            DecodeCell(
                model=model,
                method=method,
                dtype=dtype,
                batch=self.batch,
                dim=self.dim,
                depth=self.depth,
                prompt_len=length,
                new_tokens=self.new_tokens,
            )
            for model, method, dtype in itertools.product(self.models, self.methods, self.dtypes)
            if applies(model, method)
            for length in sorted(self.prompt_lens)
        ]


_CPU = ("gss", "gss-fast", "conv", "attention", "dss", "attention-chunked")
_GPU_CHECK = tuple(m for m in _CPU if m != "gss-fast")  # gss-fast's steps are gss's; its cells would pass the budget
_ONE_GPU = dict(batch=8, dim=1024, depth=4)  # the scaling suite's width, 4 layers, a batch of 8 sequences


def _stepping_and_reforward(names, stepping_lens, reforward_lens, **shared):
    """The stepping methods (recurrent, kv_cache) to the longer prompts and reforward, which re-runs the whole
    prompt per token, to the shorter ones; the models and every other setting the same."""
    return (
        DecodeGrid("stepping", names, stepping_lens, methods=("recurrent", "kv_cache"), **shared),
        DecodeGrid("reforward", names, reforward_lens, methods=("reforward",), **shared),
    )


DECODE_PRESETS = {
    # CPU, 2 cores: stepping to 8192 shows the flat recurrent and the growing KV cache; re-running the
    # whole prompt per token only to 2048, where it already costs far more than a step.
    "quick": Preset(
        "quick",
        _stepping_and_reforward(_CPU, (128, 512, 2048, 8192), (128, 512, 2048)),
        timing=dict(warmup=1, min_repeats=2, budget_s=0.3),
    ),
    # One GPU: prompts to 64K tokens.
    "full": Preset(
        "full",
        _stepping_and_reforward(
            _CPU,
            tuple(2**k for k in range(8, 17)),
            tuple(2**k for k in range(8, 16)),
            dtypes=("float32", "bfloat16"),
            new_tokens=64,
            **_ONE_GPU,
        ),
        timing=dict(warmup=1, min_repeats=3, budget_s=2.0),
    ),
    # One H100/H200 within the device budget: prompts 1K..16K, bfloat16.
    "gpu-check": Preset(
        "gpu-check",
        _stepping_and_reforward(
            _GPU_CHECK, (1024, 4096, 16384), (1024, 4096), dtypes=("bfloat16",), new_tokens=32, **_ONE_GPU
        ),
        timing=dict(warmup=1, min_repeats=5, budget_s=0.5),
    ),
    # Seconds, for tests and smoke runs: every model and method.
    "smoke": Preset(
        "smoke",
        (DecodeGrid("all", tuple(models.NAMES), (16, 48), batch=1, dim=32, depth=1, new_tokens=4),),
        timing=dict(warmup=1, min_repeats=2, budget_s=0.02),
    ),
}


def _context(device, dtype):
    stack = contextlib.ExitStack()
    stack.enter_context(torch.inference_mode())
    stack.enter_context(autocast(dtype, device.type))
    return stack


def measure_stepping(lm, prompt, cell, device, timing):
    held = {}

    def prefill():
        held.clear()  # the last call's state is freed before the next is built, not beside it
        with _context(device, cell.dtype):
            held["logits"], held["state"] = lm.prefill(prompt, max_len=cell.prompt_len + cell.new_tokens)

    prefill_timing = measure(prefill, device=device, **timing)
    state = held.pop("state")
    token = held.pop("logits")[:, -1].argmax(-1)
    state_mb = models.state_nbytes(state) / MIB

    def step():
        nonlocal token
        with _context(device, cell.dtype):
            logits, _ = lm.step(token, state)
            token = logits.argmax(-1)

    peak = peak_memory_mb(step, device=device)  # decode step 1, the warm-up
    steps = cell.new_tokens - 1
    timed = measure(step, device=device, warmup=0, min_repeats=steps, max_repeats=steps)
    return dict(prefill_ms=prefill_timing.median_ms, peak_mem_mb=peak, state_mb=state_mb), timed


def measure_reforward(lm, prompt, cell, device, timing):
    ids = torch.cat((prompt, prompt[:, -1:]), dim=1)  # the prompt and one generated token

    def forward():
        with _context(device, cell.dtype):
            lm(ids)[:, -1].argmax(-1)

    peak = peak_memory_mb(forward, device=device)
    return dict(peak_mem_mb=peak), measure(forward, device=device, **timing)


def measure_cell(cell, timing, device):
    """Build the LM and a random prompt, then measure the cell's method; returns the row's measured columns."""
    torch.manual_seed(0)
    lm = models.build_lm(cell.model, num_tokens=NUM_TOKENS, dim=cell.dim, depth=cell.depth, device=device).eval()
    prompt = torch.randint(NUM_TOKENS, (cell.batch, cell.prompt_len), device=device)
    method = measure_reforward if cell.method == "reforward" else measure_stepping
    values, timed = method(lm, prompt, cell, device, timing)
    return dict(
        **values,
        time_per_token_ms=timed.median_ms,
        time_per_token_iqr_ms=timed.iqr_ms,
        repeats=timed.repeats,
        tokens_per_s=cell.batch / (timed.median_ms / 1e3),
        status="ok",
    )


def build_cells(preset, *, methods=None, dtype=None, **flags):
    """The preset's grids, narrowed and overridden by the flags' values (None: unset): models and prompt_lens
    replace each grid's, methods keeps only those methods, dtype, batch, dim, depth and new_tokens apply to all."""
    overrides = {"dtypes": dtype, **flags}
    grids = [replace(g, **{k: v for k, v in overrides.items() if v is not None}) for g in preset.grids]
    if methods is not None:
        grids = [replace(g, methods=tuple(m for m in g.methods if m in methods)) for g in grids]
    cells = list(dict.fromkeys(c for g in grids for c in g.cells()))  # a cell shared by two grids runs once
    if not cells:
        raise UsageError(
            "the grid is empty: no requested model takes a requested method "
            "(recurrent: GSS family and conv; kv_cache: attention; reforward: every model)"
        )
    return cells


def make_spec(common, **flags):
    """The run of the common settings (cli.Common) and this suite's flags' values (build_cells)."""
    return cli.build("decode", common, flags, DECODE_PRESETS, build_cells)


def run(spec):
    """Measure the spec's cells into its run directory; returns the path of the CSV."""
    sweep, name = Sweep(CSV, **spec.sweep_args), device_name(spec.device)
    timing = spec.preset.timing
    jobs = [sweep.job(lambda c=c: ({**c.__dict__, "device": name}, (measure_cell, (c, timing)))) for c in spec.cells]
    run_jobs(jobs, spec, desc="decode")
    return spec.out_dir / CSV


def _new_tokens(text):
    tokens = positive_int(text, "new-tokens")
    if tokens < 2:
        raise UsageError("--new-tokens must be at least 2: one warm-up step and at least one timed step")
    return tokens


def make_parser():
    return cli.parser(
        __doc__,
        "python -m bench.decode",
        ("--models", "--dtype", "--batch", "--dim", "--depth"),
        prompt_lens=("comma-separated positive prompt lengths", list_of(positive_int, "prompt-lens")),
        batch="sequences decoded together",
        methods=(f"comma-separated, from: {', '.join(METHODS)}", list_of(one_of(METHODS, "method"), "methods")),
        new_tokens=("tokens generated per prompt (at least 2)", _new_tokens),
    )


def main(argv=None):
    return cli.main(make_parser(), argv, make_spec, run)


if __name__ == "__main__":
    sys.exit(main())
