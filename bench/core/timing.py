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

    @classmethod
    def of(cls, times_ms, *, warmup=0, stop_reason="", clock="") -> Timing:
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


class _Member:
    """One step of a group: its warm-ups done, its repeats so far, and whether its stopping rule has fired."""

    def __init__(self, fn, min_repeats):
        self.fn, self.min_repeats, self.times, self.spent_s, self.warmups = fn, min_repeats, [], 0.0, 0
        self.stop_reason, self.error = None, None

    def result(self, clock):
        return Timing.of(self.times, warmup=self.warmups, stop_reason=self.stop_reason, clock=clock)


def measure_group(
    fns, *, device, warmup=2, min_repeats=10, max_repeats=200, budget_s=1.0, target_ci=TARGET_CI, timer=None
):
    """Time zero-arg steps `fns` together: each one's warm-ups first, then timed repeats round-robin (A B C A B C
    ...) so that a drift of the machine falls on every member alike. Each member keeps its own stopping rule:
    after at least `min_repeats` repeats, stop once the median's 95% interval is within +-target_ci of it
    (converged), or once its own repeats have used `budget_s` (budget), or at `max_repeats`. A member whose first
    warm-up alone exceeds the budget skips its other warm-ups and needs min(min_repeats, 5) repeats. The group
    ends when every member has stopped. Returns one Timing per step, or the exception the step raised (the
    others go on). `timer` replaces the device's clock (tests)."""
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
        for m in members:
            try:
                for _ in range(warmup):
                    start_s = timer.now()
                    m.fn()
                    timer.sync()
                    m.warmups += 1
                    if timer.now() - start_s > budget_s:
                        m.min_repeats = min(min_repeats, SLOW_STEP_MIN_REPEATS)
                        break
            except Exception as error:  # this member fails; the group goes on
                m.error = error
        running = [m for m in members if m.error is None]
        while running:
            for m in running:
                try:
                    start_s = timer.now()
                    m.times.append(timer.time_ms(m.fn))
                    m.spent_s += timer.now() - start_s
                except Exception as error:
                    m.error = error
                    continue
                if len(m.times) >= max_repeats:
                    m.stop_reason = "max_repeats"
                elif len(m.times) >= m.min_repeats:
                    if converged(m.times, target_ci):
                        m.stop_reason = "converged"
                    elif m.spent_s >= budget_s:
                        m.stop_reason = "budget"
            running = [m for m in running if m.error is None and m.stop_reason is None]
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
