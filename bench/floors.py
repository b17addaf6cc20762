"""A step's roofline floor from the machine's limits (the object bench.core.limits.measure makes and env.json keeps
under `limits`): torch-free, so the measuring core (scaling rows, profiled stages) and the read side (the binding
roof of a finding, the figure) take it from one place."""

import math


def positive(value):
    """A positive finite number (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < math.inf


def rate(limits, dtype):
    """The dtype's measured matrix-product rate in FLOP/s, or None."""
    value = ((limits or {}).get("matmul_flops_per_s") or {}).get(dtype)
    return value if positive(value) else None


def roofs_ms(flops, min_bytes, dtype, limits):
    """(compute ms, memory ms): a step's FLOPs at the dtype's measured matrix-product rate and its minimum bytes at
    the measured bandwidth; None without the dtype's rate or either count."""
    peak = rate(limits, dtype)
    if peak is None or flops is None or min_bytes is None or not (flops >= 0 and min_bytes >= 0):
        return None
    return flops / peak * 1e3, min_bytes / limits["bandwidth_bytes_per_s"] * 1e3


def floor_ms(flops, min_bytes, dtype, limits):
    """A step's roofline floor in ms, the longer of its two roofs (roofs_ms); None where one is unknown."""
    roofs = roofs_ms(flops, min_bytes, dtype, limits)
    return None if roofs is None else max(roofs)
