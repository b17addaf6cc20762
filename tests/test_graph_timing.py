"""bench.core.graphs and the graph-replayed rounds of bench.core.paired, run on the CPU with a fake torch.cuda: a
fake device clock that a step's eager call and a graph's replay advance, a fake capture that records the calls made
under it. No assertion depends on how fast anything runs."""

import contextlib
import statistics

import pytest
import torch

from bench.core import graphs
from bench.core.graphs import GraphTiming, calls_for, graph_columns, graph_time
from bench.core.paired import measure_pairs
from bench.core.timing import autocast, make_step


class FakeCuda:
    """The torch.cuda names bench.core.graphs uses, on a fake device clock (ms). A step made by step() runs
    eagerly (advancing the clock by its eager_ms, on the current stream) or, under a capture, is recorded in the
    graph being captured; a replay advances the clock by the graph's calls times the step's replay_ms, scaled by
    speed(n) on the n-th replay of any graph. `fail`: "capture" (the step raises under capture, then the capture's
    end raises as torch's does), "replay" (a replay raises). Every event goes to `log`."""

    def __init__(self, speed=lambda n: 1.0, fail=None):
        self.ms, self.speed, self.fail, self.replays, self.log = 0.0, speed, fail, 0, []
        self.default = FakeStream(self, "default")
        self.current, self.capturing = self.default, None
        self.autocast_cache = []  # torch's autocast cache setting at each eager or captured call

    def Stream(self, device=None):
        return FakeStream(self, "side")

    def current_stream(self, device=None):
        return self.current

    def set_stream(self, stream):
        self.current = stream

    @contextlib.contextmanager
    def stream(self, stream):
        before, self.current = self.current, stream
        yield
        self.current = before

    def synchronize(self, device=None):
        self.log.append(("sync",))

    def device(self, device):
        return contextlib.nullcontext()

    def CUDAGraph(self):
        return FakeGraph(self)

    @contextlib.contextmanager
    def graph(self, graph, stream, capture_error_mode):
        assert capture_error_mode == "thread_local" and stream is not self.default
        before, self.current, self.capturing = self.current, stream, graph
        try:
            yield
        except RuntimeError:
            self.capturing = None  # torch's exit: capture_end raises in turn, and the stream is not restored
            raise RuntimeError("operation failed due to a previous error during capture")  # noqa: B904
        self.capturing, self.current = None, before

    def step(self, eager_ms, replay_ms, name="step"):
        def step():
            self.autocast_cache.append(torch.is_autocast_cache_enabled())
            if self.capturing is not None:
                if self.fail == "capture":
                    raise RuntimeError("operation not permitted when stream is capturing")
                self.capturing.calls.append(replay_ms)
                self.log.append(("captured", name))
            else:
                self.ms += eager_ms
                self.log.append(("eager", name, self.current.name))

        step.__name__ = name
        return step


class FakeStream:
    def __init__(self, cuda, name):
        self.cuda, self.name = cuda, name

    def wait_stream(self, other):
        self.cuda.log.append(("wait", self.name, other.name))


class FakeGraph:
    def __init__(self, cuda):
        self.cuda, self.calls, self.released = cuda, [], False

    def replay(self):
        assert not self.released
        if self.cuda.fail == "replay":
            raise RuntimeError("an illegal memory access was encountered\nmore lines")
        self.cuda.ms += sum(self.calls) * self.cuda.speed(self.cuda.replays)
        self.cuda.replays += 1
        self.cuda.log.append(("replay", len(self.calls)))

    def reset(self):
        self.released = True
        self.cuda.log.append(("release", len(self.calls)))


class FakeTimer:
    """The event timer on the fake device clock: time_ms is what a call advanced it by."""

    clock = "fake_events"

    def __init__(self, cuda):
        self.cuda = cuda

    def now(self):
        return self.cuda.ms / 1e3

    def sync(self):
        pass

    def time_ms(self, fn):
        start = self.cuda.ms
        fn()
        return self.cuda.ms - start


def timed(cuda, step, **how):
    return graph_time(step, device="cuda", cuda=cuda, timer=FakeTimer(cuda), **how)


def kinds(log, kind):
    return [entry for entry in log if entry[0] == kind]


def test_calls_for_fills_about_20_ms_at_least_one_at_most_max_calls_and_250_ms_of_capture():
    assert [calls_for(ms) for ms in (0.25, 0.1, 0.013, 13.0, 14.0, 30.0)] == [80, 200, 1000, 2, 1, 1]
    assert calls_for(0.0) == graphs.MAX_CALLS and calls_for(1.0, target_ms=5.0, max_calls=3) == 3
    # a launch-bound step: 2 ms an eager call, 0.02 ms replayed: 125 calls take the capture 250 ms
    assert calls_for(0.02, eager_ms=2.0) == 125 and calls_for(0.25, eager_ms=2.0) == 80
    assert calls_for(0.0, eager_ms=2.0) == 125 and calls_for(1.0, eager_ms=500.0) == 1


def test_the_estimate_counts_the_calls_graph_time_makes():
    """A step over 20 ms: a warm-up, an untimed replay, 10 timed; a shorter one: 3 warm-ups and the one-call
    graph's 4 replays, the capture of its calls at the eager time each, 11 replays of them."""
    assert graphs.estimate_s(30.0) == pytest.approx((30 + 11 * 30) / 1e3)
    assert graphs.estimate_s(2.0) == pytest.approx((3 * 2 + 4 * 2 + 10 * 2 + 11 * 10 * 2) / 1e3)
    # launch-bound: 2 ms eager, 0.05 ms replayed: 400 calls would fill 20 ms, 125 take the capture 250 ms
    assert graphs.estimate_s(2.0, 0.05) == pytest.approx((3 * 2 + 4 * 0.05 + 125 * 2 + 11 * 125 * 0.05) / 1e3)
    cuda = FakeCuda()
    timed(cuda, cuda.step(eager_ms=2.0, replay_ms=0.05))
    assert cuda.ms / 1e3 == pytest.approx(graphs.estimate_s(2.0, 0.05) - 125 * 2 / 1e3)  # the fake captures in no time


def test_a_short_step_is_warmed_up_on_the_capture_stream_sized_by_a_one_call_graph_and_replayed_ten_times():
    """Triton's do_bench_cudagraph: calls for about 20 ms in one graph, each timed replay's time over its calls."""
    speeds = [1.0, 1.3, 0.9, 1.1, 1.2, 0.8, 1.0, 1.4, 0.95, 1.05]  # of the timed replays (after the sizing graph's
    cuda = FakeCuda(speed=lambda n: speeds[n - 5] if n >= 5 else 1.0)  # 4 and the 80-call graph's untimed one)
    result = timed(cuda, cuda.step(eager_ms=2.0, replay_ms=0.25))
    # 3 eager warm-ups on the side stream, after it waited for the current one
    assert cuda.log[:5] == [("wait", "side", "default")] + [("eager", "step", "side")] * 3 + [
        ("wait", "default", "side")
    ]
    # the one-call graph: replayed once untimed, 3 timed (0.25 ms: 80 calls fill 20 ms), released; then 80 calls
    assert [n for _, n in kinds(cuda.log, "replay")] == [1] * 4 + [80] * 11
    assert [n for _, n in kinds(cuda.log, "release")] == [1, 80]
    assert len(kinds(cuda.log, "captured")) == 81 and not kinds(cuda.log, "eager")[3:]
    per_call = [0.25 * s for s in speeds]  # each timed replay's time over its 80 calls
    assert result == GraphTiming(statistics.median(per_call), pytest.approx(tuple(per_call)), 80)
    assert len(result.times_ms) == graphs.REPLAYS and result.median_ms == pytest.approx(0.25 * 1.025)
    assert cuda.current is cuda.default


def test_a_step_longer_than_the_target_warms_up_once_and_its_sizing_replays_are_timed_replays():
    cuda = FakeCuda(speed=lambda n: 1.0 + n / 100)
    result = timed(cuda, cuda.step(eager_ms=31.0, replay_ms=30.0))
    assert len(kinds(cuda.log, "eager")) == 1  # its first warm-up took over 20 ms
    assert [n for _, n in kinds(cuda.log, "replay")] == [1] * 11  # one untimed, then 10 timed: 3 sized the graph
    assert kinds(cuda.log, "release") == [("release", 1)] and result.calls == 1
    assert result.times_ms == pytest.approx(tuple(30.0 * (1 + n / 100) for n in range(1, 11)))


@pytest.mark.parametrize(
    "fail, note",
    [
        ("capture", "capture: RuntimeError: operation not permitted when stream is capturing"),
        ("replay", "replay: RuntimeError: an illegal memory access was encountered"),
    ],
)
def test_a_step_that_cannot_be_captured_or_replayed_gets_a_reason_and_its_graph_is_released(fail, note):
    cuda = FakeCuda(fail=fail)
    assert timed(cuda, cuda.step(eager_ms=1.0, replay_ms=0.5)) == note
    assert cuda.current is cuda.default  # a capture whose end raised left its stream current: restored
    assert len(kinds(cuda.log, "release")) == (fail == "replay")
    assert graph_columns(note) == dict(gpu_ms="", gpu_times_ms="", gpu_note=note)


def test_the_reason_is_the_first_exception_of_a_chain():
    def failed_capture():
        try:
            raise RuntimeError("operation not permitted when stream is capturing")
        except RuntimeError:
            raise RuntimeError("operation failed due to a previous error during capture")  # noqa: B904

    with pytest.raises(RuntimeError) as raised:
        failed_capture()
    assert graphs.describe(raised.value) == "RuntimeError: operation not permitted when stream is capturing"
    assert graphs.describe(ValueError("")) == "ValueError"


def test_autocast_caching_is_off_in_the_warm_ups_and_the_capture_and_restored_after():
    cuda = FakeCuda()

    def step():
        with autocast("bfloat16", "cpu"):  # the steps' own autocast, made at each call
            cuda.step(1.0, 0.5)()

    assert torch.is_autocast_cache_enabled()
    assert isinstance(timed(cuda, step), GraphTiming)
    assert cuda.autocast_cache and not any(cuda.autocast_cache)
    assert torch.is_autocast_cache_enabled()


def test_a_fwdbwd_step_captured_many_times_leaves_one_steps_gradients():
    """The step is captured as make_step makes it: its gradients set to None and made again by every call, so a
    graph of many calls accumulates none (here the fake capture runs the calls, on the CPU)."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(4, 4)
    x = torch.randn(2, 3, 4)
    step = make_step(layer, x, mode="fwdbwd")
    step()
    once = layer.weight.grad.clone(), step.x.grad.clone()
    cuda = FakeCuda()

    def recorded():
        step()
        cuda.step(1.0, 0.05)()

    assert timed(cuda, recorded).calls == 250  # 400 fill 20 ms, 250 of 1 ms eager calls the capture's bound
    assert torch.equal(layer.weight.grad, once[0]) and torch.equal(step.x.grad, once[1])


def test_graph_columns_and_the_cpu():
    result = GraphTiming(0.25, (0.25, 0.5, 0.125), 80)
    assert graph_columns(result) == dict(gpu_ms=0.25, gpu_times_ms="0.25 0.5 0.125", gpu_note="")
    assert graph_columns(None) == dict(gpu_ms="", gpu_times_ms="", gpu_note="")
    with pytest.raises(ValueError, match="needs a CUDA device"):
        graph_time(lambda: None, device="cpu")


def paired_steps(cuda, costs):
    return [cuda.step(eager_ms=eager, replay_ms=replay, name=name) for name, (eager, replay) in costs.items()]


def test_paired_rounds_replay_each_sides_graph_in_abba_order_per_call():
    cuda = FakeCuda()
    base, head = paired_steps(cuda, {"A": (2.0, 0.25), "B": (2.0, 0.5)})
    paired = measure_pairs(base, head, device="cuda", timer=FakeTimer(cuda), cuda=cuda, replay_graphs=True)
    assert paired.clock == graphs.CLOCK and paired.calls == (80, 40) and paired.note == ""
    # each side's warm-ups and graphs, then one untimed replay each, then ABBA rounds of replays
    replays = [n for _, n in kinds(cuda.log, "replay")]
    assert replays[:8] == [1, 1, 1, 1, 1, 1, 1, 1] and replays[8:10] == [80, 40]
    assert replays[10:] == [80, 40, 40, 80] * 5
    assert paired.base_ms == pytest.approx((0.25,) * 10) and paired.head_ms == pytest.approx((0.5,) * 10)
    assert kinds(cuda.log, "release")[-2:] == [("release", 80), ("release", 40)]


def test_paired_rounds_run_eagerly_with_a_note_when_a_side_cannot_be_captured():
    cuda = FakeCuda()
    base, head = paired_steps(cuda, {"A": (2.0, 0.25), "B": (3.0, 0.5)})

    def uncapturable():
        if cuda.capturing is not None:
            raise RuntimeError("operation not permitted when stream is capturing")
        head()

    uncapturable.__name__ = "B"
    paired = measure_pairs(base, uncapturable, device="cuda", timer=FakeTimer(cuda), cuda=cuda, replay_graphs=True)
    assert paired.note == "head: capture: RuntimeError: operation not permitted when stream is capturing"
    assert paired.clock == "fake_events" and paired.calls == (1, 1)
    assert paired.base_ms == (2.0,) * 10 and paired.head_ms == (3.0,) * 10
    assert kinds(cuda.log, "release") == [("release", 1), ("release", 80)]  # base's sizing graph, and its graph
    assert cuda.current is cuda.default
