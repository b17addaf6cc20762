"""Graph-replayed timing on CUDA: a step captured into a CUDA graph, enough calls in one graph for about TARGET_MS,
the graph replayed between CUDA events; a call's time is a replay's over its calls (Triton's do_bench_cudagraph).
Free of the host launching kernels one by one, it is the device's work alone: on CUDA a row's `gpu_ms`, beside the
eager `time_ms` (bench.core.timing) that a user's own loop sees. Never used on the CPU.

The CUDA primitives (torch.cuda's CUDAGraph, graph, Stream, stream, current_stream, synchronize, device) come from
one namespace and the replays from one timer, both replaceable: the tests run this path on the CPU with fakes."""

import contextlib
import statistics
from dataclasses import dataclass

import torch

from bench.core.timing import timer_for
from bench.stats import format_times

TARGET_MS = 20.0  # the calls in one graph take about this long (do_bench_cudagraph's rep)
REPLAYS = 10  # timed replays of the graph: a cell's gpu_times_ms
WARMUP = 3  # eager calls on the capture stream before capturing, as torch's CUDA graph docs require
ESTIMATE_REPLAYS = 3  # timed replays of a one-call graph, whose median sizes the graph
MAX_CALLS = 1000  # a bound on the graph's size for the tiniest steps
# A bound on the host time a capture takes, at the warm-ups' time per eager call: a launch-bound step (its eager
# call far longer than its replayed one) gets fewer calls than TARGET_MS would give, its replays shorter but as
# free of launches
MAX_CAPTURE_MS = 250.0
# "thread_local": an unsafe call (a cudaMalloc, a sync) of this thread invalidates the capture, one of another
# thread (a progress bar, a Ray worker's own threads) does not
CAPTURE_ERROR_MODE = "thread_local"
CLOCK = "cuda_graph"  # PairedTiming.clock of graph-replayed rounds (bench.core.timing.CLOCKS: the eager ones)


@dataclass(frozen=True)
class GraphTiming:
    median_ms: float  # the median of times_ms: a row's gpu_ms
    times_ms: tuple  # each timed replay's time per call, in the order run: gpu_times_ms
    calls: int  # calls of the step in the graph


class Captured:
    """A step captured `calls` times, one after the other, into one graph: a replay runs them all. `times_ms`: the
    per-call times of the replays already timed on it (the sizing replays, when the one-call graph is kept)."""

    def __init__(self, graph, calls, times_ms=()):
        self.graph, self.calls, self.times_ms = graph, calls, tuple(times_ms)

    def replay(self):
        self.graph.replay()

    def release(self):
        """Free the graph (its memory pool goes when the tensors made in it do)."""
        self.graph.reset()


class GraphError(Exception):
    """A step that could not be captured or replayed; its message is the reason (stage: exception: message)."""


def calls_for(one_ms, target_ms=TARGET_MS, max_calls=MAX_CALLS, eager_ms=None):
    """The calls one graph holds: round(target_ms / one replayed call's time), at least 1 and at most max_calls,
    and at most MAX_CAPTURE_MS of eager calls (`eager_ms` each, where known) to capture."""
    if eager_ms:
        max_calls = max(1, min(max_calls, int(MAX_CAPTURE_MS / eager_ms)))
    if not one_ms > 0:
        return max_calls
    return max(1, min(max_calls, round(target_ms / one_ms)))


@contextlib.contextmanager
def autocast_cache_off():
    """Autocast's cast cache off: torch requires it under graph capture (a cast cached in one capture would be
    reused outside it). An autocast made without cache_enabled (bench.core.timing.autocast, in every step) takes
    the setting current when it is made."""
    was = torch.is_autocast_cache_enabled()
    torch.set_autocast_cache_enabled(False)
    try:
        yield
    finally:
        torch.set_autocast_cache_enabled(was)


def capture(step, *, device, target_ms=TARGET_MS, warmup=WARMUP, max_calls=MAX_CALLS, cuda=None, timer=None):
    """The step captured into a graph of calls_for(one call's time) calls: up to `warmup` eager calls on a side
    stream (the capture's own, so that what a library keeps per stream, a cuBLAS workspace, exists before capture;
    one when a call takes longer than target_ms; the last one's time bounds the capture's), one call captured and
    replayed to size the graph (once untimed: the first replay uploads the graph; then ESTIMATE_REPLAYS timed),
    then the graph of that many calls (the one-call graph itself, its timed replays kept, when that is 1). The
    step is captured as bench.core.timing.make_step makes it, the work of an eager step: fwd under
    inference_mode; fwdbwd sets its gradients to None and backward makes them again, in the graph's pool, at the
    same addresses every replay (no gradient accumulates). GraphError names the stage and the exception where the
    step cannot be captured."""
    cuda, device = cuda or torch.cuda, torch.device(device)
    timer = timer or timer_for(device)
    stage, probe, entry = "warm-up", None, cuda.current_stream(device)
    try:
        stream = cuda.Stream(device=device)
        with autocast_cache_off():
            stream.wait_stream(cuda.current_stream(device))
            with cuda.stream(stream):
                eager_ms = None
                for _ in range(warmup):
                    start_s = timer.now()
                    step()
                    timer.sync()
                    eager_ms = (timer.now() - start_s) * 1e3
                    if eager_ms > target_ms:
                        break
            cuda.current_stream(device).wait_stream(stream)
            cuda.synchronize(device)
            stage = "capture"
            probe = _captured(step, 1, stream, cuda)
            stage = "replay"
            probe.replay()
            timer.sync()
            times = [timer.time_ms(probe.replay) for _ in range(ESTIMATE_REPLAYS)]
            calls = calls_for(statistics.median(times), target_ms, max_calls, eager_ms)
            if calls == 1:
                return Captured(probe.graph, 1, times)
            probe.release()
            probe, stage = None, "capture"
            return _captured(step, calls, stream, cuda)
    except Exception as error:
        # a capture whose end raises leaves its stream current (torch.cuda.graph's exit stops there): restore ours
        cuda.set_stream(entry)
        if probe is not None:
            probe.release()
        raise GraphError(f"{stage}: {describe(error)}") from error


def _captured(step, calls, stream, cuda):
    graph = cuda.CUDAGraph()
    with cuda.graph(graph, stream=stream, capture_error_mode=CAPTURE_ERROR_MODE):
        for _ in range(calls):
            step()
    return Captured(graph, calls)


def describe(error):
    """An exception as a reason: the first raised of a chain (a failed capture's end raises again, the first says
    why), "Type: first line of its message"."""
    for _ in range(8):
        if error.__context__ is None or error.__suppress_context__:
            break
        error = error.__context__
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def graph_time(step, *, device, replays=REPLAYS, cuda=None, timer=None, **how):
    """The step's graph-replayed time on a CUDA device: captured (capture(); `how`: its target_ms, warmup,
    max_calls), replayed once untimed, then `replays` times between CUDA events (a one-call graph's sizing replays
    among them), each replay's time over its calls.
    A GraphTiming, or the reason (a str) where the step cannot be captured or replayed: its eager time stands.
    `cuda` and `timer` replace torch.cuda and the device's event timer (tests)."""
    device = torch.device(device)
    if device.type != "cuda":
        raise ValueError(f"graph_time needs a CUDA device, got {device}")
    if replays < 1:
        raise ValueError(f"need replays >= 1, got {replays}")
    cuda = cuda or torch.cuda
    timer = timer or timer_for(device)
    graph = None
    with cuda.device(device):
        try:
            graph = capture(step, device=device, cuda=cuda, timer=timer, **how)
            if not graph.times_ms:
                graph.replay()
                timer.sync()
            times = graph.times_ms[:replays]
            times += tuple(timer.time_ms(graph.replay) / graph.calls for _ in range(replays - len(times)))
        except GraphError as error:
            return str(error)
        except Exception as error:
            return f"replay: {describe(error)}"
        finally:
            if graph is not None:
                graph.release()
    return GraphTiming(statistics.median(times), times, graph.calls)


def estimate_s(eager_ms, replayed_ms=None):
    """About how long graph_time takes, in seconds (for bench.core.estimate), for a step whose eager call takes
    eager_ms and whose replayed call replayed_ms (at most eager_ms: the work without the launches; unknown, as
    long): its warm-ups, the one-call graph's replays, and where that call is shorter than TARGET_MS the full
    graph's capture (its eager calls' host time, at most MAX_CAPTURE_MS) and REPLAYS + 1 replays of it. Graph
    set-up (a capture's synchronisation, instantiation) is not in it."""
    replayed_ms = min(eager_ms, replayed_ms or eager_ms)
    warmups_ms = (1 if eager_ms > TARGET_MS else WARMUP) * eager_ms
    calls = calls_for(replayed_ms, eager_ms=eager_ms)
    if calls == 1:  # the one-call graph: one untimed replay, then the timed ones (the sizing replays among them)
        return (warmups_ms + (1 + max(REPLAYS, ESTIMATE_REPLAYS)) * replayed_ms) / 1e3
    sizing_ms = (1 + ESTIMATE_REPLAYS) * replayed_ms
    return (warmups_ms + sizing_ms + calls * eager_ms + (1 + REPLAYS) * calls * replayed_ms) / 1e3


def graph_columns(result):
    """A scaling row's gpu_ms, gpu_times_ms and gpu_note from graph_time's result: a GraphTiming's median and
    replays, or a reason's note; None (a CPU cell, where no graph is timed): all empty."""
    if isinstance(result, GraphTiming):
        return dict(gpu_ms=result.median_ms, gpu_times_ms=format_times(result.times_ms), gpu_note="")
    return dict(gpu_ms="", gpu_times_ms="", gpu_note=result or "")
