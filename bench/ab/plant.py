"""A planted slow-down, to measure what bench.ab catches (bench.ab.power). Nothing imports this module: the power
procedure copies its source into a throwaway copy of models/ as models/_plant.py and has that copy's registry
call `slow_down(SPECS, name, fraction)`, so it imports nothing but torch.

Every step of the named layer then takes `fraction` more time, calibrated on itself at every call rather than by a
table of step times measured beforehand (which would go stale as the machine's speed drifts): its forward
busy-waits fraction x the time its own forward took, and in a forward + backward step its backward busy-waits
fraction x the time the backward through the layer took (from the output's gradient arriving to the input's
gradient leaving). A step's time therefore grows by fraction x the layer's own forward and backward: what
make_step adds around them (zero_grad, the loss's mean) is not slowed, so the planted share of a whole step is a
little under `fraction`; bench.ab.power records the ratio each planted cell actually measured. On CUDA every
wait starts and ends with a synchronisation, so that the wait delays the device's work, not only the host's."""

import dataclasses
import time

import torch


def slow_down(specs, name, fraction):
    """Replace registry entry `name` of `specs` (models.SPECS) by one whose layers are slowed by `fraction`."""
    spec = specs[name]

    def build(*args, **kwargs):
        layer = spec.build(*args, **kwargs)
        layer.forward = _slowed(layer.forward, fraction)  # an instance attribute: nn.Module.__call__ calls it
        return layer

    specs[name] = dataclasses.replace(spec, build=build)


def _now(tensor):
    if tensor.is_cuda:
        torch.cuda.synchronize(tensor.device)
    return time.perf_counter()


def _wait(start, fraction, tensor):
    """Busy-wait until fraction x (now - start) more has passed."""
    now = _now(tensor)
    until = now + fraction * (now - start)
    while time.perf_counter() < until:
        pass


def _slowed(forward, fraction):
    def slowed(x, *args, **kwargs):
        timed_backward = torch.is_grad_enabled() and x.requires_grad
        if timed_backward:
            clock = {}
            x = _BackwardEnds.apply(x, clock, fraction)
        start = _now(x)
        out = forward(x, *args, **kwargs)
        _wait(start, fraction, x)
        return _BackwardStarts.apply(out, clock) if timed_backward else out

    return slowed


class _BackwardStarts(torch.autograd.Function):
    """Identity at the layer's output: its backward runs first, and notes when."""

    @staticmethod
    def forward(ctx, out, clock):
        ctx.clock = clock
        return out.view_as(out)

    @staticmethod
    def backward(ctx, grad):
        ctx.clock["start"] = _now(grad)
        return grad, None


class _BackwardEnds(torch.autograd.Function):
    """Identity at the layer's input: its backward runs once the layer's has, and waits."""

    @staticmethod
    def forward(ctx, x, clock, fraction):
        ctx.clock, ctx.fraction = clock, fraction
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        _wait(ctx.clock["start"], ctx.fraction, grad)
        return grad, None, None
