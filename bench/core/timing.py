"""The single timing path of the suite (CPU and CUDA) and the per-mode step builder."""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.utils._pytree import tree_flatten

from bench.schema import MODES
from bench.stats import median_interval

# A step longer than the budget already in its first warm-up is expensive to time: its other warm-ups are
# skipped and it needs this many timed repeats (a step under the budget needs min_repeats, 10 by default).
SLOW_STEP_MIN_REPEATS = 5
TARGET_CI = 0.025  # stop once the 95% interval of the median lies within +-2.5% of it
CLOCKS = {"cpu": "perf_counter", "cuda": "cuda_events"}  # the timer of each device type (Timing.clock)


@dataclass(frozen=True)
class Timing:
    median_ms: float
    iqr_ms: float
    repeats: int
    times_ms: tuple[float, ...]
    warmup: int
    stop_reason: str  # "converged" | "budget" | "max_repeats"
    clock: str = ""  # CLOCKS: what timed the repeats
    gauge_ms: tuple[float, ...] = ()  # the drift gauge's time in each round of times_ms (none: timed without one)

    @classmethod
    def of(cls, times_ms, *, warmup=0, stop_reason="", clock="", gauge_ms=()) -> Timing:
        """The Timing of these repeats: their median and IQR."""
        median_ms, iqr_ms = _median_iqr_ms(times_ms)
        return cls(
            median_ms=median_ms,
            iqr_ms=iqr_ms,
            repeats=len(times_ms),
            times_ms=tuple(times_ms),
            warmup=warmup,
            stop_reason=stop_reason,
            clock=clock,
            gauge_ms=tuple(gauge_ms),
        )

    @property
    def rel_iqr(self) -> float:
        return self.iqr_ms / self.median_ms if self.median_ms > 0 else (0.0 if self.iqr_ms == 0 else float("inf"))


def _median_iqr_ms(times_ms) -> tuple[float, float]:
    """Median and IQR, the quartiles by the exclusive (type-6) rule, whose IQR is not biased low on few repeats."""
    median_ms = statistics.median(times_ms)
    if len(times_ms) < 2:
        return median_ms, 0.0
    q1, _, q3 = statistics.quantiles(times_ms, n=4, method="exclusive")
    return median_ms, q3 - q1


def median_ci_ranks(n: int, level: float = 0.95) -> tuple[int, int] | None:
    """0-based ranks (j, n - 1 - j) of the sorted sample that bound a distribution-free `level` interval of the
    median (bench.stats.median_interval). None when n is too small for one (n < 6 at 95%)."""
    interval = median_interval(n, level)
    return None if interval is None else (interval[0], n - 1 - interval[0])


def median_ci(times_ms, level: float = 0.95) -> tuple[float, float] | None:
    """A distribution-free interval of the median from order statistics, or None for too few repeats."""
    ranks = median_ci_ranks(len(times_ms), level)
    if ranks is None:
        return None
    ordered = sorted(times_ms)
    return ordered[ranks[0]], ordered[ranks[1]]


def converged(times_ms, target: float = TARGET_CI) -> bool:
    """Whether the 95% interval of the median lies within +-target of it. Unlike a rule on the sample's own
    spread (stop once the IQR looks small), this stops on how well the median is known, so the repeats it
    keeps do not understate the noise (tests/test_timing.py simulates it)."""
    interval = median_ci(times_ms)
    if interval is None:
        return False
    median = statistics.median(times_ms)
    return median > 0 and interval[1] <= median * (1 + target) and interval[0] >= median * (1 - target)


class _CpuTimer:
    clock = CLOCKS["cpu"]

    def now(self) -> float:
        return time.perf_counter()

    def sync(self) -> None:
        pass

    def time_ms(self, fn: Callable[[], object]) -> float:
        start_s = time.perf_counter()
        fn()
        return (time.perf_counter() - start_s) * 1e3


class _CudaTimer(_CpuTimer):
    """Event pairs on the current stream, synchronised after every repeat."""

    clock = CLOCKS["cuda"]

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def sync(self) -> None:
        torch.cuda.synchronize(self.device)

    def time_ms(self, fn: Callable[[], object]) -> float:
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end)


def timer_for(device):
    """The clock a device's steps are timed on: CUDA events on a GPU, the host's perf_counter on a CPU."""
    device = torch.device(device)
    return _CudaTimer(device) if device.type == "cuda" else _CpuTimer()


# The drift gauge: a float32 product of two square matrices of this size, timed once in every round of a group
# beside the cells (about 1 ms on the development CPU; on a GPU large enough not to be bound by the launch). Its
# true time does not change during a run, so a cell's time relative to it carries no drift of the machine.
GAUGE_SIZE = {"cpu": 384, "cuda": 1792}


def gauge_step(device):
    """The drift gauge's zero-arg step on `device` (GAUGE_SIZE), run once here: its one-time costs (a library's
    handle, its workspace) are paid before it is timed."""
    device = torch.device(device)
    n = GAUGE_SIZE.get(device.type, GAUGE_SIZE["cpu"])
    generator = torch.Generator().manual_seed(0)
    a, b = (torch.randn(n, n, generator=generator).to(device) for _ in range(2))
    out = torch.empty(n, n, device=device)

    def gauge():
        torch.mm(a, b, out=out)

    gauge()
    return gauge


class _Member:
    """One step of a group: its warm-ups done, its repeats so far (with the gauge's time in each of their rounds),
    and whether its stopping rule has fired."""

    def __init__(self, fn, min_repeats):
        self.fn, self.min_repeats, self.times, self.gauge, self.spent_s, self.warmups = fn, min_repeats, [], [], 0.0, 0
        self.stop_reason, self.error = None, None

    def result(self, clock):
        return Timing.of(
            self.times, warmup=self.warmups, stop_reason=self.stop_reason, clock=clock, gauge_ms=self.gauge
        )

    def warm_up(self, timer, warmup, budget_s, min_repeats):
        try:
            for _ in range(warmup):
                start_s = timer.now()
                self.fn()
                timer.sync()
                self.warmups += 1
                if timer.now() - start_s > budget_s:
                    self.min_repeats = min(min_repeats, SLOW_STEP_MIN_REPEATS)
                    break
        except Exception as error:  # this member fails; the group goes on
            self.error = error

    def repeat(self, timer, gauge_ms, max_repeats, budget_s, target_ci):
        """One timed repeat, in a round whose gauge took gauge_ms (None: no gauge); then the stopping rule."""
        try:
            start_s = timer.now()
            self.times.append(timer.time_ms(self.fn))
            self.spent_s += timer.now() - start_s
        except Exception as error:
            self.error = error
            return
        if gauge_ms is not None:
            self.gauge.append(gauge_ms)
        if len(self.times) >= max_repeats:
            self.stop_reason = "max_repeats"
        elif len(self.times) >= self.min_repeats:
            if converged(self.times, target_ci):
                self.stop_reason = "converged"
            elif self.spent_s >= budget_s:
                self.stop_reason = "budget"


def rotated(running, round_index):
    """The members of a round in the order they run: round r starts at member r mod k of the k still running (a
    Latin square while none stops), so that what one step leaves behind (caches, clocks, heat) does not always fall
    on the same next member."""
    start = round_index % len(running)
    return running[start:] + running[:start]


def measure_group(
    fns,
    *,
    device,
    warmup=2,
    min_repeats=10,
    max_repeats=200,
    budget_s=1.0,
    target_ci=TARGET_CI,
    timer=None,
    gauge=None,
):
    """Time zero-arg steps `fns` together: each one's warm-ups first, then timed repeats in rounds, one repeat of
    every running member a round, the order rotated from round to round (rotated: A B C, B C A, C A B, ...), so
    that a drift of the machine falls on every member alike and round i of every member is one round (the pairs of
    the findings' paired ratios). Each member keeps its own stopping rule: after at least `min_repeats` repeats,
    stop once the median's 95% interval is within +-target_ci of it (converged), or once its own repeats have used
    `budget_s` (budget), or at `max_repeats`. A member whose first warm-up alone exceeds the budget skips its other
    warm-ups and needs min(min_repeats, 5) repeats. The group ends when every member has stopped. `gauge`, a
    zero-arg step (gauge_step), is warmed up like a member and timed first in every round: each Timing's gauge_ms
    holds its time in the rounds of that member's repeats. Returns one Timing per step, or the exception the step
    raised (the others go on). `timer` replaces the device's clock (tests)."""
    if warmup < 0 or min_repeats < 1 or max_repeats < min_repeats:
        raise ValueError(
            f"need warmup >= 0 and 1 <= min_repeats <= max_repeats, got warmup={warmup}, "
            f"min_repeats={min_repeats}, max_repeats={max_repeats}"
        )
    device = torch.device(device)
    on_cuda = device.type == "cuda"
    timer = timer or timer_for(device)
    members = [_Member(fn, min_repeats) for fn in fns]
    with torch.cuda.device(device) if on_cuda else contextlib.nullcontext():
        timer.sync()
        for _ in range(warmup if gauge is not None else 0):
            gauge()
        timer.sync()
        for m in members:
            m.warm_up(timer, warmup, budget_s, min_repeats)
        running, round_index = [m for m in members if m.error is None], 0
        while running:
            gauge_ms = timer.time_ms(gauge) if gauge is not None else None
            for m in rotated(running, round_index):
                m.repeat(timer, gauge_ms, max_repeats, budget_s, target_ci)
            running = [m for m in running if m.error is None and m.stop_reason is None]
            round_index += 1
    return [m.error if m.error is not None else m.result(timer.clock) for m in members]


def measure(fn: Callable[[], object], *, device: torch.device | str, **how) -> Timing:
    """Time one step: a group of one (measure_group's rules and arguments); its exception is raised."""
    (result,) = measure_group([fn], device=device, **how)
    if isinstance(result, BaseException):
        raise result
    return result


def _scalar_loss(out: object) -> torch.Tensor:
    """Mean in float32 of the output, summed over tensors if it is a pytree."""
    leaves = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor) and t.requires_grad]
    if not leaves:
        raise ValueError("fwdbwd: the module output has no tensor that requires grad")
    loss = leaves[0].float().mean()
    for t in leaves[1:]:
        loss = loss + t.float().mean()
    return loss


AUTOCAST_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


def autocast(dtype, device_type):
    """The one mixed-precision context: `dtype` (a name or a torch dtype) bfloat16 or float16 runs under
    torch.autocast with the parameters as they are; anything else (float32, float64, None) runs plainly."""
    dtype = AUTOCAST_DTYPES.get(dtype, dtype) if isinstance(dtype, str) else dtype
    if dtype not in AUTOCAST_DTYPES.values():
        return contextlib.nullcontext()
    return torch.autocast(device_type=device_type, dtype=dtype)


def make_step(
    module: torch.nn.Module,
    x: torch.Tensor,
    *,
    mode: str,
    autocast_dtype: torch.dtype | str | None = None,
) -> Callable[[], None]:
    """Zero-arg step for `mode`: "fwd" (inference_mode forward) or "fwdbwd".

    fwdbwd: forward, then backward of out.float().mean(); grads are cleared at
    the start of each step (inside the timed region) so they never accumulate.
    A floating-point x is made to require grad (a detached alias when x is not
    already a grad-requiring leaf), so the input gradient is part of the work;
    integer inputs (token ids) are used as they are. The tensor actually fed to
    the module is `step.x`.
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; valid modes: {MODES}")

    if mode == "fwd":

        def step() -> None:
            with torch.inference_mode(), autocast(autocast_dtype, x.device.type):
                module(x)

        step.x = x
        return step

    x_in = x
    if (x.is_floating_point() or x.is_complex()) and not (x.is_leaf and x.requires_grad):
        x_in = x.detach().requires_grad_(True)

    def step() -> None:
        module.zero_grad(set_to_none=True)
        x_in.grad = None
        with autocast(autocast_dtype, x.device.type):
            out = module(x_in)
        # Backward outside autocast, as autocast recommends.
        _scalar_loss(out).backward()

    step.x = x_in
    return step
