"""The machine's measured limits, what a cell's roofline is drawn against (python -m bench.limits prints them):

* matmul_flops_per_s: per dtype, the achievable matrix-product rate, MAMF-style ("maximum achievable matmul
  FLOPS"): torch.mm of (m, k) x (k, n) in the dtype itself on a few large shapes, each warmed up and timed by
  bench.core.timing.measure; a shape's rate is 2*m*n*k FLOPs over the median of its repeats, and the best shape's
  rate is the dtype's. bfloat16 and float16 are the tensors' own dtype, the kernels autocast's matmuls run; float32
  on CUDA runs with torch's TF32 setting as the suite leaves it (it sets none), recorded under "tf32".
* bandwidth_bytes_per_s: STREAM-style copy, dst.copy_(src) of copy_bytes (512 MiB, far beyond any last-level
  cache): the bytes read plus written, 2 * copy_bytes, over the median time of the repeats.
* launch_s (CUDA): the pace of back-to-back launches of a one-element kernel, LAUNCHES of them per timed repeat
  between CUDA events, per launch: the floor under any step made of kernels.

All of it in torch's threads as the run has them (recorded), within BUDGET_S of the device type in all: the copy
(and the launches) first, then the shapes smallest first, round-robin over the dtypes, each step's repeats given an
equal share of the time left. A shape whose least cost (warm-ups and minimum repeats at the dtype's slowest rate
so far) no longer fits in the time left is cut, with the dtype's larger shapes, and named under "cut", as is one
too large for the device's memory; a dtype's smallest shape is always measured (its OutOfMemoryError is raised).
Tests plant the timer, the clock and the steps.

read() loads a limits file (the JSON object measure() returns, given with --limits FILE) and checks it.
"""

import json
import sys
import time
from pathlib import Path

import torch

from bench.core.config import DTYPES
from bench.core.timing import measure as time_step
from bench.core.timing import timer_for
from bench.floors import positive
from bench.usage import UsageError
from models.ops import matmul_flops

SUITES = ("scaling", "profiling")  # the suites whose rows are set against the limits (bench.core.cli.with_limits)
# the whole measurement's plan, per device type: a step's warm-ups and its last repeat run past its share, so a
# measurement takes up to a fifth more (17.2 s of a 15 s plan once, on the 2-core CPU): at most 15 s and 20 s
BUDGET_S = {"cpu": 12.0, "cuda": 16.0}
OVERRUN = 1.25  # the most a measurement takes, over its plan
DEFAULT_DTYPES = {"cpu": ("float32",), "cuda": ("float32", "bfloat16", "float16")}
# (m, n, k) of each device type's products: large enough to be compute-bound; on CUDA multiples of 256, so that
# tensor-core tiles divide them
SHAPES = {
    "cpu": ((1024, 1024, 1024), (2048, 2048, 2048), (3072, 3072, 3072), (4096, 4096, 4096)),
    "cuda": ((4096, 4096, 4096), (6144, 6144, 6144), (8192, 8192, 8192), (16384, 8192, 8192)),
}
COPY_BYTES = 512 * 2**20
LAUNCHES = 100  # tiny kernels per timed repeat: one event pair around a single launch would time the events
TIMING = dict(warmup=2, min_repeats=5, max_repeats=50)  # bench.core.timing.measure's rules, per step
METHOD = {
    "matmul": "torch.mm of (m,k)x(k,n) in the dtype: 2*m*n*k FLOPs over the median of a shape's timed repeats "
    "after warm-up; the best shape's rate",
    "copy": "dst.copy_(src) of copy_bytes: 2 * copy_bytes (read + written) over the median of the timed repeats",
    "launch": "launches of a one-element add_ back to back, `launches` per timed repeat: the median over launches",
}


class TorchSteps:
    """The work measured, on a device: each method allocates its tensors once and returns a zero-arg step."""

    def __init__(self, device):
        self.device = torch.device(device)

    def matmul(self, dtype, m, n, k):
        dtype = getattr(torch, dtype)
        a = torch.randn(m, k, device=self.device, dtype=dtype)
        b = torch.randn(k, n, device=self.device, dtype=dtype)
        out = torch.empty(m, n, device=self.device, dtype=dtype)
        return lambda: torch.mm(a, b, out=out)

    def copy(self, nbytes):
        src = torch.ones(nbytes // 4, device=self.device)  # written once: every page is real before the warm-ups
        dst = torch.zeros_like(src)
        return lambda: dst.copy_(src)

    def launch(self, count):
        x = torch.zeros(1, device=self.device)

        def step():
            for _ in range(count):
                x.add_(1)

        return step


def least_cost_s(step_s):
    """What a step of step_s seconds costs at least under TIMING: its warm-ups and its minimum repeats."""
    return step_s * (TIMING["warmup"] + TIMING["min_repeats"])


def measure(
    device,
    dtypes=None,
    *,
    timer=None,
    clock=None,
    steps=None,
    shapes=None,
    copy_bytes=None,
    budget_s=None,
    progress=None,
):
    """The limits of `device` for `dtypes` (None: DEFAULT_DTYPES of its type), as the JSON object the module's
    docstring describes. `timer` times a step (bench.core.timing's, by default the device's), `clock` is the wall
    clock of the budget in seconds (time.perf_counter), `steps` makes the work (TorchSteps); `shapes`, `copy_bytes`
    and `budget_s` replace the device type's SHAPES, COPY_BYTES and BUDGET_S; `progress` takes a line per step."""
    device = torch.device(device)
    kind = device.type
    dtypes = tuple(dtypes or DEFAULT_DTYPES[kind])
    if unknown := [dtype for dtype in dtypes if dtype not in DTYPES]:
        raise ValueError(f"unknown dtypes {unknown}; valid: {', '.join(DTYPES)}")
    shapes = sorted((tuple(shape) for shape in shapes or SHAPES[kind]), key=lambda shape: matmul_flops(*shape))
    copy_bytes = COPY_BYTES if copy_bytes is None else copy_bytes
    budget_s = BUDGET_S[kind] if budget_s is None else budget_s
    clock = clock or time.perf_counter
    timer = timer or timer_for(device)
    steps = steps or TorchSteps(device)
    say = progress or (lambda line: None)
    start_s = clock()
    deadline_s = start_s + budget_s
    pending = 1 + (kind == "cuda") + len(shapes) * len(dtypes)  # the steps left, among which the time left is shared

    def timed(make):
        nonlocal pending
        share_s = max(deadline_s - clock(), 0.0) / pending
        pending -= 1
        fn = make()
        return time_step(fn, device=device, timer=timer, budget_s=share_s, **TIMING)

    copy = timed(lambda: steps.copy(copy_bytes))
    limits = {
        "device": str(device),
        "threads": torch.get_num_threads(),
        "matmul_flops_per_s": {},
        "bandwidth_bytes_per_s": 2 * copy_bytes / (copy.median_ms / 1e3),
    }
    say(f"limits: copy of {copy_bytes / 2**20:g} MiB: {limits['bandwidth_bytes_per_s'] / 1e9:.4g} GB/s")
    repeats = {"copy": copy.repeats}
    if kind == "cuda":
        launch = timed(lambda: steps.launch(LAUNCHES))
        limits["launch_s"] = launch.median_ms / 1e3 / LAUNCHES
        limits["tf32"] = {
            "allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
        }
        repeats["launch"] = launch.repeats
        say(f"limits: kernel launch: {limits['launch_s'] * 1e6:.3g} us")

    measured = {dtype: [] for dtype in dtypes}  # (shape, FLOP/s, repeats), in the order measured
    cut = {}
    for shape in shapes:
        for dtype in dtypes:
            flops = matmul_flops(*shape)
            slowest = min((rate for _, rate, _ in measured[dtype]), default=None)  # a cautious estimate
            if dtype in cut or (slowest and least_cost_s(flops / slowest) > deadline_s - clock()):
                cut.setdefault(dtype, []).append(list(shape))
                pending -= 1
                continue
            try:
                timing = timed(lambda: steps.matmul(dtype, *shape))  # noqa: B023  (called at once, in this iteration)
            except torch.OutOfMemoryError:  # too large for this device: left out, with the larger ones
                if not measured[dtype]:
                    raise
                cut.setdefault(dtype, []).append(list(shape))
                continue
            rate = flops / (timing.median_ms / 1e3)
            measured[dtype].append((list(shape), rate, timing.repeats))
            say(f"limits: {dtype} {'x'.join(map(str, shape))}: {rate / 1e9:.4g} GFLOP/s ({timing.repeats} repeats)")

    for dtype, rows in measured.items():
        shape, rate, _ = max(rows, key=lambda row: row[1])
        limits["matmul_flops_per_s"][dtype] = rate
        limits.setdefault("best_shape", {})[dtype] = shape
    repeats["matmul"] = {dtype: [r for _, _, r in rows] for dtype, rows in measured.items()}
    limits.update(
        shapes={dtype: [shape for shape, _, _ in rows] for dtype, rows in measured.items()},
        shape_flops_per_s={dtype: [rate for _, rate, _ in rows] for dtype, rows in measured.items()},
        repeats=repeats,
        cut=cut,
        copy_bytes=copy_bytes,
        **({"launches": LAUNCHES} if kind == "cuda" else {}),
        budget_s=budget_s,
        method=METHOD if kind == "cuda" else {name: text for name, text in METHOD.items() if name != "launch"},
        seconds=clock() - start_s,
    )
    return limits


def measure_for_run(device, dtypes):
    """The limits a run measures for itself, announced and summarised on stderr: (limits, None), or (None, the
    reason) where the measurement fails (the run is worth more than its floors: it goes on without them)."""
    print(f"== limits of {device} ({', '.join(dtypes)}): python -m bench.limits", file=sys.stderr, flush=True)
    try:
        measured = measure(device, dtypes)
    except Exception as error:
        return None, f"{type(error).__name__}: {error}"
    print(summary(measured), file=sys.stderr, flush=True)
    return measured, None


def summary(limits):
    """One line of a limits object: each dtype's matrix-product rate, the bandwidth, the launch floor."""
    rates = ", ".join(f"{d} {r / 1e9:.4g} GFLOP/s" for d, r in limits["matmul_flops_per_s"].items())
    launch = f", launch {limits['launch_s'] * 1e6:.3g} us" if "launch_s" in limits else ""
    return f"limits: {rates}; copy {limits['bandwidth_bytes_per_s'] / 1e9:.4g} GB/s{launch}"


def problem(limits, dtypes=()):
    """What is wrong with a limits object (None: nothing): the numbers a roofline needs must be positive finite
    numbers, a matrix-product rate per dtype of `dtypes` among them."""
    if not isinstance(limits, dict):
        return "not a JSON object"
    rates = limits.get("matmul_flops_per_s")
    if not isinstance(rates, dict) or not rates:
        return "matmul_flops_per_s must be an object of dtype -> FLOP/s"
    for name, rate in rates.items():
        if name not in DTYPES:
            return f"matmul_flops_per_s: unknown dtype {name!r}; valid: {', '.join(DTYPES)}"
        if not positive(rate):
            return f"matmul_flops_per_s.{name} must be a positive finite number, got {rate!r}"
    if missing := [dtype for dtype in dtypes if dtype not in rates]:
        return f"matmul_flops_per_s has no rate for {', '.join(missing)}"
    if not positive(limits.get("bandwidth_bytes_per_s")):
        return f"bandwidth_bytes_per_s must be a positive finite number, got {limits.get('bandwidth_bytes_per_s')!r}"
    if "launch_s" in limits and not positive(limits["launch_s"]):
        return f"launch_s must be a positive finite number, got {limits['launch_s']!r}"
    return None


def read(path, dtypes=()):
    """The limits in a JSON file, checked (problem()): a file that cannot be read, is not JSON or is malformed is
    a UsageError naming the file and what is wrong with it."""
    path = Path(path)
    try:
        limits = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise UsageError(f"limits file {path}: cannot read it ({error.strerror or error})") from None
    except ValueError as error:
        raise UsageError(f"limits file {path}: not JSON ({error})") from None
    if (what := problem(limits, dtypes)) is not None:
        raise UsageError(f"limits file {path}: {what}")
    return limits
