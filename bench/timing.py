"""The old import path of the timer, kept for users: `bench.timing.measure` and its neighbours live in
bench/core/timing.py."""

from bench.core.timing import Timing, autocast, make_step, measure, measure_group

__all__ = ["Timing", "autocast", "make_step", "measure", "measure_group"]
