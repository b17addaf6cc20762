"""bench.core.paired and bench.ab.verdict on fake clocks (no assertion depends on how fast anything runs): the
rounds are paired and ABBA-ordered, a drift shared by a round cancels, the stopping rule, the verdict words, and the
CUDA timer's path with fake events."""

import contextlib
import math
import random
from typing import ClassVar

import numpy as np
import pytest
import torch

from bench.ab.verdict import THRESHOLD_PCT, paired_ratio, verdict
from bench.core.paired import measure_pairs
from bench.stats import median_draws


class FakeClock:
    """A clock that advances only by the steps' durations: the n-th timed repeat of step `name` takes
    cost[name] * speed(n) ms, where n counts every timed repeat of both steps; a warm-up takes 1 ms."""

    clock = "fake"

    def __init__(self, cost, speed=lambda n: 1.0):
        self.t, self.cost, self.speed, self.timed, self.log = 0.0, cost, speed, 0, []

    def now(self):
        return self.t

    def sync(self):
        pass

    def time_ms(self, fn):
        ms = self.cost[fn.__name__] * self.speed(self.timed)
        self.timed += 1
        self.log.append(fn.__name__)
        fn(timed=True)
        self.t += ms / 1e3
        return ms

    def steps(self):
        def step(name):
            def fn(timed=False):
                if not timed:
                    self.log.append(name.lower())  # a warm-up
                    self.t += 1e-3

            fn.__name__ = name
            return fn

        return step("A"), step("B")


def pairs(clock, **how):
    return measure_pairs(*clock.steps(), device="cpu", timer=clock, **how)


def test_each_sides_warmups_then_rounds_in_abba_order():
    clock = FakeClock({"A": 10.0, "B": 10.0})
    paired = pairs(clock, warmup=2)
    assert clock.log[:4] == list("aabb")
    assert "".join(clock.log[4:]) == "ABBA" * 5
    assert paired.stop_reason == "converged" and len(paired.base_ms) == len(paired.head_ms) == 10


def unpaired_interval(base_ms, head_ms):
    """The same repeats as two unpaired samples: each side's median bootstrapped on its own."""
    draws = median_draws(head_ms, "head") / median_draws(base_ms, "base")
    return tuple(np.percentile(draws, [2.5, 97.5]))


@pytest.mark.parametrize("planted", [1.0, 1.05])
def test_a_drift_shared_by_a_round_cancels_in_the_pairs_and_widens_the_unpaired_interval(planted):
    rng = random.Random(0)
    levels = [math.exp(rng.gauss(0, 0.3)) for _ in range(200)]  # the machine's speed, round by round
    clock = FakeClock({"A": 10.0, "B": 10.0 * planted}, speed=lambda n: levels[n // 2])
    paired = pairs(clock, warmup=0, min_rounds=30, budget_s=0.0)
    ratio, low, high = paired_ratio(paired.base_ms, paired.head_ms)
    assert (ratio, low, high) == pytest.approx((planted, planted, planted))
    assert verdict(ratio, low, high) == ("same" if planted == 1.0 else "regression")
    unpaired_low, unpaired_high = unpaired_interval(paired.base_ms, paired.head_ms)
    assert unpaired_high - unpaired_low > 0.2 and unpaired_low < 1 < unpaired_high  # the 5% lost in the drift


def test_abba_cancels_a_steady_trend_that_a_fixed_order_would_read_as_a_regression():
    clock = FakeClock({"A": 10.0, "B": 10.0}, speed=lambda n: 1.03**n)  # each repeat 3% slower than the last
    paired = pairs(clock, warmup=0, min_rounds=20, max_rounds=20)
    assert sorted(set(np.round(paired.ratios, 6))) == pytest.approx([1 / 1.03, 1.03])
    ratio, low, high = paired_ratio(paired.base_ms, paired.head_ms)
    assert ratio == pytest.approx(1.0, abs=1e-3) and verdict(ratio, low, high, threshold_pct=2) == "same"
    fixed_order = [1.03] * 20  # A then B in every round: B always pays the trend
    assert verdict(*paired_ratio([1.0] * 20, fixed_order), threshold_pct=2) == "regression"


def noisy(sigma, seed=0):
    rng = random.Random(seed)
    return lambda n: math.exp(rng.gauss(0, sigma))  # independent noise per repeat: nothing shared


def test_stopping_rule_converges_once_the_ratio_is_known_to_1_5_percent():
    clock = FakeClock({"A": 10.0, "B": 10.0}, speed=noisy(0.004))
    paired = pairs(clock, warmup=0, budget_s=100.0)
    assert paired.stop_reason == "converged" and len(paired.ratios) >= 10
    ratios = sorted(paired.ratios)
    assert ratios[len(ratios) // 2] == pytest.approx(1.0, abs=0.015)


def test_stopping_rule_stops_at_the_budget_but_never_before_ten_rounds():
    clock = FakeClock({"A": 10.0, "B": 10.0}, speed=noisy(0.3))
    paired = pairs(clock, warmup=0, budget_s=1.0)
    assert paired.stop_reason == "budget" and 10 < len(paired.ratios) < 60
    assert sum(paired.base_ms) + sum(paired.head_ms) == pytest.approx(clock.t * 1e3)
    assert 1.0 <= clock.t < 1.2  # the last round started within the budget
    quick = pairs(FakeClock({"A": 10.0, "B": 10.0}, speed=noisy(0.3)), warmup=0, budget_s=1e-6)
    assert quick.stop_reason == "budget" and len(quick.ratios) == 10


def test_stopping_rule_stops_at_max_rounds():
    paired = pairs(FakeClock({"A": 10.0, "B": 10.0}, speed=noisy(0.3)), warmup=0, max_rounds=12, budget_s=100.0)
    assert paired.stop_reason == "max_repeats" and len(paired.ratios) == 12


def test_bad_rounds_are_refused():
    with pytest.raises(ValueError, match="min_rounds"):
        pairs(FakeClock({"A": 1.0, "B": 1.0}), min_rounds=10, max_rounds=5)


@pytest.mark.parametrize(
    "ratio, low, high, threshold, expected",
    [
        (1.06, 1.04, 1.08, 5, "regression"),
        (1.04, 1.02, 1.06, 5, "same"),  # wholly above 1, but not past the threshold
        (1.04, 1.02, 1.06, 3, "regression"),
        (1.10, 0.99, 1.20, 5, "same"),  # past the threshold, but the interval reaches 1
        (0.94, 0.92, 0.96, 5, "improvement"),
        (0.97, 0.96, 0.98, 5, "same"),
        (0.97, 0.96, 0.98, 2, "improvement"),
        (0.90, 0.80, 1.01, 5, "same"),
        (1.0, 1.0, 1.0, 5, "same"),
    ],
)
def test_verdict_words(ratio, low, high, threshold, expected):
    assert verdict(ratio, low, high, threshold) == expected


def test_default_threshold_is_at_most_3_percent():
    assert 0 < THRESHOLD_PCT <= 3
    assert verdict(1.035, 1.02, 1.05) == "regression" and verdict(1.025, 1.02, 1.03) == "same"


def test_the_interval_is_the_order_statistics_of_the_ratios():
    rng = random.Random(1)
    base = [10 * math.exp(rng.gauss(0, 0.05)) for _ in range(30)]
    head = [10 * math.exp(rng.gauss(0.02, 0.05)) for _ in range(30)]
    ratios = sorted(h / b for b, h in zip(base, head, strict=True))
    ratio, low, high = paired_ratio(base, head)
    # n = 30: ranks 9 and 20 (0-based) bound the median at 95% or more (P(Binomial(30, 1/2) <= 9) = 0.021)
    assert (low, high) == (ratios[9], ratios[20]) and ratio == pytest.approx((ratios[14] + ratios[15]) / 2)


class FakeEvent:
    """torch.cuda.Event on a fake device clock: record() notes it, elapsed_time() is the difference in ms."""

    device_clock: ClassVar[list] = [0.0]

    def __init__(self, enable_timing=False):
        assert enable_timing
        self.at = None

    def record(self):
        self.at = self.device_clock[0]

    def synchronize(self):
        pass

    def elapsed_time(self, end):
        return end.at - self.at


def test_the_cuda_path_times_each_repeat_with_event_pairs(monkeypatch):
    syncs = []
    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: syncs.append(device))
    monkeypatch.setattr(torch.cuda, "device", lambda device: contextlib.nullcontext())
    order = []

    def step(name, ms):
        def fn():
            order.append(name)
            FakeEvent.device_clock[0] += ms  # the device's work, seen only by the events

        return fn

    paired = measure_pairs(step("A", 4.0), step("B", 5.0), device="cuda", warmup=1, budget_s=100.0)
    assert paired.clock == "cuda_events" and paired.stop_reason == "converged"
    assert paired.base_ms == (4.0,) * 10 and paired.head_ms == (5.0,) * 10
    assert "".join(order) == "AB" + "ABBA" * 5
    assert len(syncs) == 3  # before the warm-ups and after each side's: every timed repeat syncs on its end event
