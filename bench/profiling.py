"""Profiling suite: a torch.profiler trace of each cell, and the step's time split by the models' ranges.

    python -m bench.profiling                          # the device's default preset (quick on CPU, full on CUDA)
    python -m bench.profiling --models gss,attention --seq-lens 4096 --modes fwdbwd --out results/X
    tensorboard --logdir results/X/traces              # torch-tb-profiler; the same .pt.trace.json open in Perfetto

Per cell, DIR/traces/<model>_L<seq_len>_<mode>[_<dtype>][_<option><value>]/ holds one trace of the
profiled steps (after one profiler warm-up step), and DIR/op_breakdown.csv one row per category:

* the ranges of models/ (dss_kernel, fft_conv, direct_conv, projection, norm, attention), each the
  union in time of its record_function events, a range nested in another counted only for the inner
  one (the innermost open range owns each instant), so nothing is counted twice;
* backward: the union of the autograd engine's `autograd::engine::evaluate_function: <Node>` events
  (torch 2.13 records one around every backward node, on CPU in the calling thread, on CUDA in the
  engine's device thread), which hold every op the backward pass runs;
* other: the profiled step (a `step` range around bench.core.timing's step) minus all of the above.

Times are averaged over the profiled steps; each cell's fractions sum to 1. Basis `cpu_wall` (CPU):
the categories share the step's CPU wall time. Basis `cuda_kernels` (CUDA): each kernel's device time
goes to the category open on the CPU when the op that launched it started (kernels are async, so CPU
ranges alone would time launches), and the step ends with a synchronisation, so `other` is kernels
launched outside every range plus the time the GPU sat idle. Without kernel records (no CUPTI) a
CUDA cell falls back to `cpu_wall`.

Each category's distance from its roof, per step, from one more (eager, unprofiled) step of the same layer and
input counted by bench.core.stages, each op going to the category that owns its instant as above:
* flops: its FLOPs by the suite's counter (bench.core.flops), summing over the categories to the step's;
  tflops_per_s = flops / time_ms, and peak_frac = that rate over the limits' matrix-product rate of the cell's
  dtype (both empty where the category counts no FLOPs, peak_frac also without limits);
* min_bytes (the model ranges only): what enters each of the range's instances and what leaves it, each once
  (bench.core.stages says exactly what is counted), summed; bandwidth_frac = min_bytes at the limits' bandwidth
  over time_ms: the share of its bandwidth floor the stage reached (empty without limits).
The limits are the run's (bench.core.limits: --limits FILE, env.json's, or measured at launch).
"""

import bisect
import sys
import tempfile
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile, record_function, schedule, tensorboard_trace_handler

import models
from bench import floors
from bench.core import cli
from bench.core.config import Grid, Preset, layer_cells
from bench.core.stages import BACKWARD, OTHER, StageCounts, count_stages
from bench.core.sweep import Rows, Sweep, device_name, run_jobs
from bench.core.timing import make_step
from bench.results import format_value

CSV = "op_breakdown.csv"
TRACES = "traces"
STEP = "step"
BACKWARD_PREFIX = "autograd::engine::evaluate_function: "
RANGES = ("dss_kernel", "fft_conv", "direct_conv", "projection", "norm", "attention")
CATEGORIES = (*RANGES, BACKWARD, OTHER)

_MODELS = ("gss", "gss-fast", "gss-direct", "conv", "attention", "dss", "attention-chunked")
PROFILE_PRESETS = {
    # CPU, 2 cores: one length where every model's stages are visible, in well under a minute.
    "quick": Preset("quick", (Grid("profile", _MODELS, (2048,), batch=1, dim=512),), timing=dict(warmup=1, active=2)),
    # One GPU: the scaling suite's full width at the paper's 4K length and a long one, in both dtypes.
    "full": Preset(
        "full",
        (Grid("profile", _MODELS, (4096, 16384), dtypes=("float32", "bfloat16"), batch=4, dim=1024),),
        timing=dict(warmup=1, active=2),
    ),
    # One H100/H200 within the device budget: gss, gss-fast (its transforms against gss's) and attention at 8K,
    # one profiled step, small traces.
    "gpu-check": Preset(
        "gpu-check",
        (Grid("profile", ("gss", "gss-fast", "attention"), (8192,), dtypes=("bfloat16",), batch=4, dim=1024),),
        timing=dict(warmup=1, active=1, record_shapes=False, profile_memory=False),
    ),
    # Seconds, for tests and smoke runs.
    "smoke": Preset(
        "smoke",
        (
            Grid(
                "profile", tuple(models.NAMES), (64,), batch=1, dim=16, kernel_N=(8,), kernel_H=(16,), conv_kernel=(8,)
            ),
        ),
        timing=dict(warmup=1, active=1),
    ),
}


@dataclass(frozen=True)
class Breakdown:
    """One cell's split: category -> milliseconds (averaged over the profiled steps), fractions summing to 1;
    `counts`, a step's FLOPs and minimum bytes by category (bench.core.stages), where they were counted."""

    times_ms: dict
    step_ms: float
    steps: int
    basis: str
    counts: StageCounts | None = None

    def fractions(self):
        total = sum(self.times_ms.values())
        return {c: (t / total if total > 0 else 1.0 * (c == "other")) for c, t in self.times_ms.items()}


def segments(intervals, window):
    """Cut `window` at every interval boundary; each piece goes to the innermost interval open over it
    (latest start, then earliest end), or None. Returns sorted (start, end, category) pieces."""
    lo, hi = window
    clipped = sorted((max(s, lo), min(e, hi), c) for s, e, c in intervals if min(e, hi) > max(s, lo))
    bounds = sorted({lo, hi, *(s for s, _, _ in clipped), *(e for _, e, _ in clipped)})
    pieces, active, i = [], [], 0
    for a, b in zip(bounds, bounds[1:]):
        while i < len(clipped) and clipped[i][0] <= a:
            active.append(clipped[i])
            i += 1
        active = [iv for iv in active if iv[1] > a]
        inner = max(active, key=lambda iv: (iv[0], -iv[1]), default=None)
        pieces.append((a, b, inner[2] if inner else None))
    return pieces


def category_of(name):
    if name in RANGES:
        return name
    return BACKWARD if name.startswith(BACKWARD_PREFIX) else None


def split_step(events, window, *, on_cuda):
    """(category -> microseconds, basis) of one step window from the profiler's FunctionEvents."""
    intervals, launches = [], []
    for e in events:
        category = category_of(e.name)
        if category is not None:
            intervals.append((e.time_range.start, e.time_range.end, category))
        # A range's own GPU-side annotation would count its kernels twice: take kernels from ops only.
        if on_cuda and e.kernels and not e.is_user_annotation and window[0] <= e.time_range.start < window[1]:
            launches.append((e.time_range.start, sum(k.duration for k in e.kernels)))
    pieces = segments(intervals, window)
    totals = defaultdict(float, {c: 0.0 for _, _, c in pieces if c is not None})
    if launches and pieces:
        starts = [a for a, _, _ in pieces]
        for t, device_us in launches:
            category = pieces[bisect.bisect_right(starts, t) - 1][2]
            if category is not None:
                totals[category] += device_us
        return totals, "cuda_kernels"
    for a, b, category in pieces:
        if category is not None:
            totals[category] += b - a
    return totals, "cpu_wall"


def breakdown(events, *, on_cuda):
    """The averaged Breakdown of every `step` range among `events` (prof.events() of one trace)."""
    events = [e for e in events if e.device_type == DeviceType.CPU and not e.is_async]
    windows = sorted((e.time_range.start, e.time_range.end) for e in events if e.name == STEP)
    if not windows:
        raise RuntimeError(f"the profiler recorded no {STEP!r} range")
    sums, bases = defaultdict(float), set()
    for window in windows:
        totals, basis = split_step(events, window, on_cuda=on_cuda)
        bases.add(basis)
        for category, us in totals.items():
            sums[category] += us
        sums[OTHER] += max(0.0, (window[1] - window[0]) - sum(totals.values()))
    n = len(windows)
    step_ms = sum(b - a for a, b in windows) / n / 1e3
    times = {c: sums[c] / n / 1e3 for c in CATEGORIES if c in sums}
    return Breakdown(times_ms=times, step_ms=step_ms, steps=n, basis="+".join(sorted(bases)))


def trace_name(cell):
    """Directory (and worker) name of a cell's trace: no dots, which the plugin reads as span stamps."""
    name = f"{cell.model}_L{cell.seq_len}_{cell.mode}" + (f"_{cell.dtype}" if cell.dtype != "float32" else "")
    defaults = models.SPECS[cell.model].defaults
    for option, value in cell.layer_options().items():
        if value != defaults.get(option):
            name += f"_{option}{format_value(value)}"
    return name + ("_compiled" if cell.compiled else "")


def profile_cell(cell, device, trace_dir, *, warmup=1, active=2, record_shapes=True, profile_memory=True):
    """Profile `warmup` + `active` steps of one cell; the trace goes to trace_dir. Returns its Breakdown, with the
    counts of one more step of the eager layer (after the profiled ones, which it would slow).
    Shapes and memory events make the trace several times larger; the breakdown needs neither."""
    torch.manual_seed(0)
    layer = models.build_layer(cell.model, dim=cell.dim, device=device, **cell.layer_options())
    x = torch.randn(cell.batch, cell.seq_len, cell.dim, device=device)
    step = make_step(torch.compile(layer) if cell.compiled else layer, x, mode=cell.mode, autocast_dtype=cell.dtype)
    eager = make_step(layer, x, mode=cell.mode, autocast_dtype=cell.dtype) if cell.compiled else step
    on_cuda = device.type == "cuda"

    def profiled_step():
        with record_function(STEP):
            step()
            if on_cuda:  # the step range then ends when its kernels do
                torch.cuda.synchronize(device)

    write_trace = tensorboard_trace_handler(str(trace_dir), worker_name=trace_dir.name)
    found = []

    def ready(prof):  # events are only readable here: the profiler clears them when the cycle ends
        write_trace(prof)
        found.append(breakdown(prof.events(), on_cuda=on_cuda))

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_cuda else [])
    with profile(
        activities=activities,
        record_shapes=record_shapes,
        profile_memory=profile_memory,
        with_stack=False,
        schedule=schedule(wait=0, warmup=warmup, active=active, repeat=1),
        on_trace_ready=ready,
    ) as prof:
        for _ in range(warmup + active):
            profiled_step()
            prof.step()
    if len(found) != 1:
        raise RuntimeError(f"expected one profiler trace, got {len(found)}")
    return replace(found[0], counts=count_stages(eager, layer, RANGES))


def roofline(time_ms, flops, min_bytes, *, peak_flops_per_s=None, bandwidth_bytes_per_s=None):
    """A category's counted columns and its distance from each roof; None where a column stays empty."""
    seconds = time_ms / 1e3
    rate = flops / seconds if flops and seconds > 0 else None
    floor_s = min_bytes / bandwidth_bytes_per_s if min_bytes is not None and bandwidth_bytes_per_s else None
    return dict(
        flops=flops,
        tflops_per_s=None if rate is None else rate / 1e12,
        peak_frac=rate / peak_flops_per_s if rate is not None and peak_flops_per_s else None,
        min_bytes=min_bytes,
        bandwidth_frac=floor_s / seconds if floor_s is not None and seconds > 0 else None,
    )


def rows_of(result, trace, limits=None, dtype="float32"):
    """A cell's measured rows, one per category, set against the machine's `limits` (None: no fractions)."""
    fractions = result.fractions()
    shared = dict(step_ms=result.step_ms, profiled_steps=result.steps, basis=result.basis, trace=trace, status="ok")
    roofs = dict(
        peak_flops_per_s=floors.rate(limits, dtype),
        bandwidth_bytes_per_s=(limits or {}).get("bandwidth_bytes_per_s"),
    )
    counts = result.counts
    rows = []
    for c, t in result.times_ms.items():
        # 12 digits, not the CSV's usual 6: a cell's fractions read back must still sum to 1 within 1e-9.
        row = {"category": c, "time_ms": t, "fraction": format(fractions[c], ".12g"), **shared}
        if counts is not None:
            row.update(roofline(t, counts.flops.get(c, 0), counts.min_bytes.get(c), **roofs))
        rows.append(row)
    return rows


def make_spec(common, **flags):
    """The run of the common settings (cli.Common) and the layer flags' values (config.layer_cells)."""
    return cli.build("profiling", common, flags, PROFILE_PRESETS, layer_cells)


def run(spec):
    """Profile the spec's cells into its run directory; returns the path of the CSV."""
    # a cell is complete once its last row (`other`) or its failure is in
    sweep = Sweep(CSV, **spec.sweep_args, completes=lambda r: r["category"] == "other" or r["status"] != "ok")
    name = device_name(spec.device)
    limits = getattr(spec, "limits", None)  # data, so that a Ray worker gets them with the cell
    jobs = [sweep.job(lambda c=c: (c.key_row(name), (measure, (c, spec.preset.timing, limits)))) for c in spec.cells]
    run_jobs(jobs, spec, desc="profiling")
    return spec.out_dir / CSV


def measure(cell, timing, limits, device):
    """A cell profiled: its rows (against the machine's `limits`, or None), and its trace's files, which the sweep
    writes where the rows say."""
    trace = trace_name(cell)
    with tempfile.TemporaryDirectory() as tmp:
        result = profile_cell(cell, device, Path(tmp) / trace, **timing)
        files = {
            f"{TRACES}/{trace}/{p.relative_to(Path(tmp) / trace)}": p.read_bytes()
            for p in sorted((Path(tmp) / trace).rglob("*"))
            if p.is_file()
        }
    return Rows(rows_of(result, f"{TRACES}/{trace}", limits, cell.dtype), files=files)


def make_parser():
    return cli.parser(__doc__, "python -m bench.profiling", cli.LAYER_FLAGS)


def main(argv=None):
    return cli.main(make_parser(), argv, make_spec, run)


if __name__ == "__main__":
    sys.exit(main())
