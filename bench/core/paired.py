"""Two steps timed in paired rounds: the same computation at two revisions of the code (bench.ab), each round running
one step and then the other back to back, so that a drift of the machine falls on both steps of a round and cancels
in their ratio. The clocks and the stopping rule are bench.core.timing's."""

import contextlib
from dataclasses import dataclass

import torch

from bench.core.timing import converged, timer_for

MIN_ROUNDS = 10
TARGET_CI = 0.015  # stop once the 95% interval of the median ratio lies within +-1.5% of it


@dataclass(frozen=True)
class PairedTiming:
    base_ms: tuple  # round i of each ran back to back
    head_ms: tuple
    warmup: int  # warm-ups of each step
    stop_reason: str  # "converged" | "budget" | "max_repeats"
    clock: str  # bench.core.timing.CLOCKS: what timed the rounds

    @property
    def ratios(self):
        """head / base, round by round."""
        return tuple(h / b for b, h in zip(self.base_ms, self.head_ms, strict=True))


def measure_pairs(
    base, head, *, device, warmup=2, min_rounds=MIN_ROUNDS, max_rounds=200, budget_s=5, target_ci=TARGET_CI, timer=None
):
    """Time zero-arg steps `base` and `head` in paired rounds: base's warm-ups, head's warm-ups, then rounds of one
    timed repeat each, back to back, the order alternating A B, B A, A B, ... (ABBA) so that a steady trend of the
    machine favours neither. After at least `min_rounds` rounds, stop once the 95% interval of the median of the
    per-round ratios head / base is within +-target_ci of it (bench.core.timing.converged: distribution-free,
    from order statistics), or once the rounds have used `budget_s`, or at `max_rounds`. An exception of either
    step is raised. `timer` replaces the device's clock (tests)."""
    if not (warmup >= 0 and 1 <= min_rounds <= max_rounds):
        raise ValueError(
            f"need warmup >= 0 and 1 <= min_rounds <= max_rounds, got {warmup}, {min_rounds}, {max_rounds}"
        )
    device, steps, times = torch.device(device), (base, head), ([], [])
    timer = timer or timer_for(device)
    with torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext():
        timer.sync()
        for step in steps:
            for _ in range(warmup):
                step()
                timer.sync()
        start_s, stop_reason = timer.now(), None
        while stop_reason is None:
            for side in (0, 1) if len(times[0]) % 2 == 0 else (1, 0):
                times[side].append(timer.time_ms(steps[side]))
            rounds = len(times[0])
            if rounds >= max_rounds:
                stop_reason = "max_repeats"
            elif rounds >= min_rounds:
                if converged([h / b for b, h in zip(*times)], target_ci):
                    stop_reason = "converged"
                elif timer.now() - start_s >= budget_s:
                    stop_reason = "budget"
    return PairedTiming(tuple(times[0]), tuple(times[1]), warmup, stop_reason, timer.clock)
