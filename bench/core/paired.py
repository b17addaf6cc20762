"""Two steps timed in paired rounds: the same computation at two revisions of the code (bench.ab), each round running
one step and then the other back to back, so that a drift of the machine falls on both steps of a round and cancels
in their ratio. The clocks and the stopping rule are bench.core.timing's; on CUDA the rounds may replay each step's
CUDA graph instead (bench.core.graphs), free of the host's launches."""

import contextlib
from dataclasses import dataclass

import torch

from bench.core import graphs
from bench.core.timing import converged, timer_for

MIN_ROUNDS = 10
TARGET_CI = 0.015  # stop once the 95% interval of the median ratio lies within +-1.5% of it


@dataclass(frozen=True)
class PairedTiming:
    base_ms: tuple  # round i of each ran back to back
    head_ms: tuple
    warmup: int  # warm-ups of each step
    stop_reason: str  # "converged" | "budget" | "max_repeats"
    clock: str  # bench.core.timing.CLOCKS, or graphs.CLOCK for graph replays: what timed the rounds
    calls: tuple = (1, 1)  # each side's calls per timed repeat (a graph's replay runs several: times are per call)
    note: str = ""  # why rounds asked to replay graphs ran eagerly: a side's capture failed (graphs.GraphError)

    @property
    def ratios(self):
        """head / base, round by round."""
        return tuple(h / b for b, h in zip(self.base_ms, self.head_ms, strict=True))


def measure_pairs(
    base,
    head,
    *,
    device,
    warmup=2,
    min_rounds=MIN_ROUNDS,
    max_rounds=200,
    budget_s=5,
    target_ci=TARGET_CI,
    timer=None,
    replay_graphs=False,
    cuda=None,
):
    """Time zero-arg steps `base` and `head` in paired rounds: base's warm-ups, head's warm-ups, then rounds of one
    timed repeat each, back to back, the order alternating A B, B A, A B, ... (ABBA) so that a steady trend of the
    machine favours neither. After at least `min_rounds` rounds, stop once the 95% interval of the median of the
    per-round ratios head / base is within +-target_ci of it (bench.core.timing.converged: distribution-free,
    from order statistics), or once the rounds have used `budget_s`, or at `max_rounds`. An exception of either
    step is raised. replay_graphs (CUDA): each step is first captured into its CUDA graph (graphs.capture: its
    own warm-ups, calls for about graphs.TARGET_MS), each graph replayed once untimed, and a round replays base's
    graph and head's, a repeat's time being its replay's over its calls; where either side cannot be captured,
    the rounds run eagerly, as without it, and the PairedTiming's note says why. `timer` and `cuda` replace the
    device's clock and torch.cuda (tests)."""
    if not (warmup >= 0 and 1 <= min_rounds <= max_rounds):
        raise ValueError(
            f"need warmup >= 0 and 1 <= min_rounds <= max_rounds, got {warmup}, {min_rounds}, {max_rounds}"
        )
    device, times, cuda = torch.device(device), ([], []), cuda or torch.cuda
    timer = timer or timer_for(device)
    with cuda.device(device) if device.type == "cuda" else contextlib.nullcontext():
        timer.sync()
        graphed, note = capture_both((base, head), device, timer, cuda) if replay_graphs else ((), "")
        try:
            steps, calls, clock = (base, head), (1, 1), timer.clock
            if graphed:
                steps, calls, clock, warmup = [g.replay for g in graphed], [g.calls for g in graphed], graphs.CLOCK, 1
            for step in steps:
                for _ in range(warmup):
                    step()
                    timer.sync()
            start_s, stop_reason = timer.now(), None
            while stop_reason is None:
                for side in (0, 1) if len(times[0]) % 2 == 0 else (1, 0):
                    times[side].append(timer.time_ms(steps[side]) / calls[side])
                rounds = len(times[0])
                if rounds >= max_rounds:
                    stop_reason = "max_repeats"
                elif rounds >= min_rounds:
                    if converged([h / b for b, h in zip(*times)], target_ci):
                        stop_reason = "converged"
                    elif timer.now() - start_s >= budget_s:
                        stop_reason = "budget"
        finally:
            for graph in graphed:
                graph.release()
    return PairedTiming(tuple(times[0]), tuple(times[1]), warmup, stop_reason, clock, tuple(calls), note)


def capture_both(steps, device, timer, cuda):
    """(each step's graphs.Captured, ""), or, where a side cannot be captured, ((), the reason naming the side),
    the graph already captured released."""
    graphed = []
    for role, step in zip(("base", "head"), steps, strict=True):
        try:
            graphed.append(graphs.capture(step, device=device, cuda=cuda, timer=timer))
        except graphs.GraphError as error:
            for graph in graphed:
                graph.release()
            return (), f"{role}: {error}"
    return tuple(graphed), ""
