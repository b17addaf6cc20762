"""The single timing path of the suite (CPU and CUDA) and the per-mode step builder."""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.utils._pytree import tree_flatten

MODES = ("fwd", "fwdbwd")

# When a single warmup step already takes longer than the budget, measuring is
# expensive: we skip the remaining warmups and accept this many repeats.
SLOW_STEP_MIN_REPEATS = 3


@dataclass(frozen=True)
class Timing:
    median_ms: float
    iqr_ms: float
    repeats: int
    times_ms: tuple[float, ...]
    warmup: int
    stop_reason: str  # "converged" | "budget" | "max_repeats"
    clock: str = ""  # CLOCKS: what timed the repeats


    @property
    def rel_iqr(self) -> float:
        return _rel_iqr(median_ms=self.median_ms, iqr_ms=self.iqr_ms)


def _rel_iqr(*, median_ms: float, iqr_ms: float) -> float:
    if median_ms > 0:
        return iqr_ms / median_ms
    return 0.0 if iqr_ms == 0 else float("inf")


def _median_iqr_ms(times_ms: list[float]) -> tuple[float, float]:
    """Median and IQR with linear-interpolation quantiles (numpy's default)."""
    median_ms = statistics.median(times_ms)
    if len(times_ms) < 2:
        return median_ms, 0.0
    q1, _, q3 = statistics.quantiles(times_ms, n=4, method="inclusive")
    return median_ms, q3 - q1


CLOCKS = {"cpu": "perf_counter", "cuda": "cuda_events"}  # the timer of each device type (Timing.clock)


class _CpuTimer:
    def sync(self) -> None:
        pass

    def time_ms(self, fn: Callable[[], object]) -> float:
        start_s = time.perf_counter()
        fn()
        return (time.perf_counter() - start_s) * 1e3


class _CudaTimer:
    """Event pairs on the current stream, synchronised after every repeat."""

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


def measure(
    fn: Callable[[], object],
    *,
    device: torch.device | str,
    warmup: int = 2,
    min_repeats: int = 5,
    max_repeats: int = 200,
    budget_s: float = 1.0,
    target_rel_iqr: float = 0.05,
) -> Timing:
    """Time the zero-arg step `fn` repeat by repeat.

    Runs `warmup` untimed calls, then timed calls until, after at least
    `min_repeats`, the relative IQR is <= `target_rel_iqr`, or the repeats have
    used `budget_s` of wall time, or `max_repeats` is reached.

    Slow steps: if the first warmup call alone exceeds `budget_s`, the other
    warmups are skipped and the minimum drops to min(min_repeats, 3), so a
    step longer than the budget costs about 1 + 3 step times.
    """
    if warmup < 0 or min_repeats < 1 or max_repeats < min_repeats:
        raise ValueError(
            f"need warmup >= 0 and 1 <= min_repeats <= max_repeats, got "
            f"warmup={warmup}, min_repeats={min_repeats}, max_repeats={max_repeats}"
        )
    device = torch.device(device)
    on_cuda = device.type == "cuda"
    timer = _CudaTimer(device) if on_cuda else _CpuTimer()
    device_ctx = torch.cuda.device(device) if on_cuda else contextlib.nullcontext()

    with device_ctx:
        timer.sync()
        warmups_done = 0
        for _ in range(warmup):
            start_s = time.perf_counter()
            fn()
            timer.sync()
            warmups_done += 1
            if time.perf_counter() - start_s > budget_s:
                min_repeats = min(min_repeats, SLOW_STEP_MIN_REPEATS)
                break

        times_ms: list[float] = []
        stop_reason = "max_repeats"
        budget_start_s = time.perf_counter()
        while len(times_ms) < max_repeats:
            times_ms.append(timer.time_ms(fn))
            if len(times_ms) < min_repeats:
                continue
            median_ms, iqr_ms = _median_iqr_ms(times_ms)
            if _rel_iqr(median_ms=median_ms, iqr_ms=iqr_ms) <= target_rel_iqr:
                stop_reason = "converged"
                break
            if time.perf_counter() - budget_start_s >= budget_s:
                stop_reason = "budget"
                break

    median_ms, iqr_ms = _median_iqr_ms(times_ms)
    return Timing(
        median_ms=median_ms,
        iqr_ms=iqr_ms,
        repeats=len(times_ms),
        times_ms=tuple(times_ms),
        warmup=warmups_done,
        stop_reason=stop_reason,
        clock=CLOCKS[device.type if on_cuda else "cpu"],
    )


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
