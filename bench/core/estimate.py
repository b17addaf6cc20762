"""Device time of a preset on one H100/H200, estimated on the CPU before it runs (run_all.py --dry-run).

The model, per step: its FLOPs (the models' analytic `.flops()`, checked against the counted FLOPs in the
tests; a backward costs twice the forward) at an assumed achieved rate per dtype, but never less than a
floor for launching an eager step's kernels from Python. Per cell: the steps the suite runs (the counting
and memory steps, warm-ups, timed repeats as bench.core.timing's stopping rule takes them, trainings' steps and
evaluations), plus a fixed cost for building the layer, allocator growth and FFT plans. The rates are
leads, not measurements: about a third of the H100's dense bfloat16 peak (990 TFLOP/s) for eager bfloat16,
about half its float32 peak without tensor cores (67 TFLOP/s, as torch runs float32 matmuls by default),
likewise float64. A GPU run's log and CSVs give the real times to compare with (docs/gpu.md). Beside the suites, the
GPU command's other steps: the CUDA checks, the machine's limits, bench.ab's paired cells (the A/A and planted runs)
and the KV-cache checks.
"""

import math

import models
from bench.core import graphs, kv_checks, limits
from bench.core.config import groups_of, layer_cells
from bench.core.paired import MIN_ROUNDS
from bench.core.timing import SLOW_STEP_MIN_REPEATS

RATES = {"float64": 30e12, "float32": 30e12, "bfloat16": 300e12, "float16": 300e12}  # achieved FLOP/s, assumed
LAUNCH_S = {"fwd": 1e-3, "fwdbwd": 3e-3}  # per layer step: ~100 / ~300 eager ops at ~10 us each
CELL_S = 0.5  # build, allocations, FFT plans, the FLOP counter's Python dispatch
CHECKS_S = 10.0  # the CUDA checks (a few observed forwards, a GPU sleep, nvidia-smi twice) and the imports before
PROCESS_S = 10.0  # a fresh Python process: torch imported, CUDA initialised (the KV checks' child)
# a decoding step that builds a new attention plan for its new cache length: what the KV-cache checks look for, so
# their steps are charged at least this (the per-token time docs/gpu.md questions is of this order)
PLAN_BUILD_S = 0.05


def _layer(model, dim, **options):
    return models.build_layer(model, dim=dim, device="meta", **options)


def step_s(flops_fwd, dtype, mode, *, layers=1, launched=True):
    """One step of forward FLOPs `flops_fwd` (a backward: twice more) in `dtype`; launched=False: replayed from
    a CUDA graph, without the floor of launching its kernels."""
    work = flops_fwd * (3 if mode == "fwdbwd" else 1) / RATES[dtype]
    return max(work, layers * LAUNCH_S[mode]) if launched else work


def timed_steps(step, timing):
    """Steps bench.core.timing.measure runs for a step of `step` seconds: warm-ups, then min_repeats (5 when one
    step exceeds the budget), assuming the median's interval converges by then (GPU times are steady)."""
    warmup, repeats, budget = timing.get("warmup", 2), timing.get("min_repeats", 10), timing.get("budget_s", 1.0)
    if step > budget:
        return 1 + SLOW_STEP_MIN_REPEATS
    return warmup + repeats


def layer_step(cell, launched=True):
    """One step of a layer cell (scaling, profiling); launched=False: replayed from a CUDA graph."""
    flops = _layer(cell.model, cell.dim, **cell.layer_options()).flops(cell.batch, cell.seq_len)
    return step_s(flops, cell.dtype, cell.mode, launched=launched)


def scaling_cell(cell, timing):
    """Counting + memory steps, the timed steps, then the graph-replayed timing (bench.core.graphs)."""
    step = layer_step(cell)
    graphed = graphs.estimate_s(step * 1e3, layer_step(cell, launched=False) * 1e3)
    return CELL_S + step * (2 + timed_steps(step, timing)) + graphed


def profiling_cell(cell, timing):
    """The profiler's warm-up and active steps, plus its start and the trace's writing (a few seconds)."""
    return 3.0 + layer_step(cell) * (timing.get("warmup", 1) + timing.get("active", 2))


def limits_s():
    """bench.core.limits.measure on CUDA: the most it takes, its plan and the overrun."""
    return limits.BUDGET_S["cuda"] * limits.OVERRUN


def replay_s(cell):
    """One replay of a cell's graph (graphs.capture's calls for about graphs.TARGET_MS)."""
    step, replayed = layer_step(cell) * 1e3, layer_step(cell, launched=False) * 1e3
    return graphs.calls_for(replayed, eager_ms=step) * replayed / 1e3


def capture_s(cell):
    """A cell's step captured (warm-ups, the one-call graph's sizing replays, the full graph's capture) and replayed
    once: graph_time's estimate without its timed replays."""
    step, replayed = layer_step(cell) * 1e3, layer_step(cell, launched=False) * 1e3
    return graphs.estimate_s(step, replayed) - graphs.REPLAYS * replay_s(cell)


def ab_cell(cell, timing, graphed=True):
    """A cell of bench.ab on CUDA: each side prepared as the scaling suite prepares a cell (built, counted, weighed),
    each side's capture tried, then at least MIN_ROUNDS paired rounds (assumed to converge there, as timed_steps
    assumes): both graphs replayed (graphed), or, where a side cannot be captured, eager steps after the preset's
    warm-ups."""
    step = layer_step(cell)
    rounds = max(MIN_ROUNDS, timing.get("min_repeats", MIN_ROUNDS))
    prepared = 2 * (CELL_S + 2 * step) + 2 * capture_s(cell)
    if graphed:
        return prepared + 2 * (1 + rounds) * replay_s(cell)
    return prepared + 2 * (timing.get("warmup", 2) + rounds) * step


def kv_checks_s(cell=kv_checks.GPU_CELL):
    """bench.core.kv_checks on one GPU: the LM built, its reforward timed, each stepping check a prefill and its
    steps (the same-length check steps twice), each step charged at least PLAN_BUILD_S; then the child process,
    which builds the LM again and runs the suite's stepping and the same-length check."""
    shared = dict(num_tokens=kv_checks.NUM_TOKENS, dim=cell.dim, depth=cell.depth, batch=cell.batch)
    prompt = step_s(_lm_flops(cell.model, seq_len=cell.prompt_len + 1, **shared), cell.dtype, "fwd", layers=cell.depth)
    token = step_s(_lm_flops(cell.model, seq_len=1, **shared), cell.dtype, "fwd", layers=cell.depth)
    stepping = prompt + cell.new_tokens * max(token, PLAN_BUILD_S)
    here = len(kv_checks.SOLO_CHECKS) * stepping + (stepping + cell.new_tokens * max(token, PLAN_BUILD_S))
    child = PROCESS_S + CELL_S + 2 * stepping + cell.new_tokens * max(token, PLAN_BUILD_S)
    return CELL_S + (1 + kv_checks.REFORWARD_REPEATS) * prompt + here + child


def _lm_flops(model, *, num_tokens, dim, depth, batch, seq_len, **options):
    lm = models.build_lm(model, num_tokens=num_tokens, dim=dim, depth=depth, device="meta", **options)
    return lm.flops(batch, seq_len)


def decode_cell(cell, timing):
    """Stepping: timed prefills, then new_tokens single-token steps; reforward: forwards of the prompt."""
    shared = dict(num_tokens=256, dim=cell.dim, depth=cell.depth, batch=cell.batch)
    prompt = step_s(_lm_flops(cell.model, seq_len=cell.prompt_len + 1, **shared), cell.dtype, "fwd", layers=cell.depth)
    if cell.method == "reforward":
        return CELL_S + prompt * (1 + timed_steps(prompt, timing))
    token = step_s(_lm_flops(cell.model, seq_len=1, **shared), cell.dtype, "fwd", layers=cell.depth)
    return CELL_S + prompt * timed_steps(prompt, timing) + token * cell.new_tokens


def numerics_cell(cell):
    """The float64 reference (one per model and length, charged to its float32 cell) and the dtype's run,
    each a forward and backward."""
    flops = _layer(cell.model, cell.dim).flops(cell.batch, cell.seq_len)
    reference = step_s(flops, "float64", "fwdbwd") if cell.dtype == "float32" else 0.0
    return CELL_S + reference + step_s(flops, "float64" if cell.dtype == "float64" else cell.dtype, "fwdbwd")


def training_cell(cell):
    """`steps` optimiser steps, one training per candidate rate (and an extension's), then the evaluations
    (forwards)."""
    vocab = cell.vocab or 256
    shared = dict(num_tokens=vocab, dim=cell.dim, depth=cell.depth, **cell.layer_options())
    step = step_s(
        _lm_flops(cell.model, batch=cell.batch, seq_len=cell.seq_len, **shared), cell.dtype, "fwdbwd", layers=cell.depth
    )
    evals = sum(
        step_s(_lm_flops(cell.model, batch=1, seq_len=m * cell.seq_len, **shared), cell.dtype, "fwd", layers=cell.depth)
        * math.ceil(cell.eval_tokens / (m * cell.seq_len))
        for m in cell.eval_lengths
    )
    # a selection whose best rate sits at the grid's edge trains rates beyond it (bench.perplexity.rates): one is
    # charged, the usual count where the grid nearly brackets the optimum, not the lr_extensions a side it may reach
    runs = len(cell.lrs) + (cell.lr_extensions > 0) if cell.selects else 1
    return CELL_S + runs * (cell.steps * step + evals)


def suite_seconds(suite, cells, timing):
    """The estimated device seconds of a suite's cells."""
    one = {
        "scaling": lambda c: scaling_cell(c, timing),
        "profiling": lambda c: profiling_cell(c, timing),
        "decode": lambda c: decode_cell(c, timing),
        "numerics": numerics_cell,
        "perplexity": training_cell,
    }[suite]
    return sum(one(cell) for cell in cells)


def scaling_group_seconds(preset, measured=None):
    """Seconds of each interleaved group of a scaling preset's cells, in their order: a cell's measured step
    (`measured`: {(model, mode, dtype, seq_len, kernel_N, conv_kernel) as CSV strings: seconds}, from a run's
    scaling.csv) through the timing rule, else scaling_cell's estimate. For bench.core.executor.simulate."""

    def seconds(c):
        key = (c.model, c.mode, c.dtype, str(c.seq_len), str(c.kernel_N or ""), str(c.conv_kernel or ""))
        step = (measured or {}).get(key)
        return (
            scaling_cell(c, preset.timing) if step is None else CELL_S + step * (2 + timed_steps(step, preset.timing))
        )

    return [sum(seconds(c) for c in group) for group in groups_of(layer_cells(preset))]
