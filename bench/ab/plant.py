"""A planted slow-down, to measure what bench.ab catches (bench.ab.power). Nothing imports this module: the power
procedure copies its source into a throwaway copy of models/ as models/_plant.py and has that copy's registry
call `slow_down(SPECS, name, fraction)`, so it imports nothing but torch.

Every step of the named layer then takes `fraction` more time, calibrated on itself at every call rather than by a
table of step times measured beforehand (which would go stale as the machine's speed drifts): its forward
busy-waits fraction x the time its own forward took, and in a forward + backward step its backward busy-waits
fraction x the time the backward through the layer took (from the output's gradient arriving to the input's
gradient leaving). A step's time therefore grows by fraction x the layer's own forward and backward: what
make_step adds around them (zero_grad, the loss's mean) is not slowed, so the planted share of a whole step is a
little under `fraction`; bench.ab.power records the ratio each planted cell actually measured.

On CUDA the wait is the device's, a spin kernel (torch.cuda._sleep) after the layer's kernels, which a CUDA graph
captures: the planted side's graph then replays in bench.ab's rounds as the clean side's does, and the plant is
measured on the clock the gate reads there. Nothing may synchronise under capture, so the spin's length is set
beforehand, from the layer's own device time: over its first CALIBRATION_CALLS eager calls in each direction, CUDA
events around its kernels, queued behind a GUARD_MS spin so that the device runs them back to back whatever the
host's launching (as a graph replays them), give the median kept; every later call, captured or eager, spins
fraction x that without measuring (an eager step bound by its launches hides much of it: the recorded ratio says
so). The spin's cycles per ms are measured once per process."""

import dataclasses
import statistics
import time

import torch

CALIBRATION_CALLS = 3  # eager calls a direction's device time is measured over
GUARD_MS = 2.0  # the spin that the measured kernels queue behind: the host's launches of them hide in it
_cuda = torch.cuda  # the tests' fake CUDA replaces it
_CYCLES_PER_MS = []  # the spin kernel's clock, measured once


def slow_down(specs, name, fraction):
    """Replace registry entry `name` of `specs` (models.SPECS) by one whose layers are slowed by `fraction`."""
    spec = specs[name]

    def build(*args, **kwargs):
        layer = spec.build(*args, **kwargs)
        layer.forward = _slowed(layer.forward, fraction)  # an instance attribute: nn.Module.__call__ calls it
        return layer

    specs[name] = dataclasses.replace(spec, build=build)


def _wait(start, fraction):
    """Busy-wait until fraction x (now - start) more has passed."""
    now = time.perf_counter()
    until = now + fraction * (now - start)
    while time.perf_counter() < until:
        pass


def _on_device(tensor):
    """Whether the layer's work runs on a CUDA device, where the plant spins there."""
    return tensor.is_cuda


def _slowed(forward, fraction):
    spins = _DeviceSpins(fraction)

    def slowed(x, *args, **kwargs):
        timed_backward = torch.is_grad_enabled() and x.requires_grad
        if _on_device(x):
            return spins.around(forward, x, args, kwargs, timed_backward)
        if timed_backward:  # the layer's backward runs from its output's gradient to its input's
            clock = {}
            x = _OnBackward.apply(x, lambda: _wait(clock["start"], fraction))
        start = time.perf_counter()
        out = forward(x, *args, **kwargs)
        _wait(start, fraction)
        return _OnBackward.apply(out, lambda: clock.update(start=time.perf_counter())) if timed_backward else out

    return slowed


class _OnBackward(torch.autograd.Function):
    """Identity whose backward calls hook() as the gradient passes through: at a layer's output, as the layer's
    backward begins; at its input, once it has ended."""

    @staticmethod
    def forward(ctx, x, hook):
        ctx.hook = hook
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        ctx.hook()
        return grad, None


def _cycles(ms):
    """The spin kernel's cycles for `ms` of the device's time (its clock measured at the first call: eager)."""
    if not _CYCLES_PER_MS:
        cycles, spans = 10**7, []
        _cuda._sleep(cycles)  # the kernel loaded
        for _ in range(3):
            start, end = _cuda.Event(enable_timing=True), _cuda.Event(enable_timing=True)
            start.record()
            _cuda._sleep(cycles)
            end.record()
            end.synchronize()
            spans.append(start.elapsed_time(end))
        _CYCLES_PER_MS.append(cycles / statistics.median(spans))
    return max(1, round(ms * _CYCLES_PER_MS[0]))


class _DeviceSpins:
    """A planted layer's waits on CUDA: after its forward, and after its backward, a spin of fraction x the device
    time that direction took over its first CALIBRATION_CALLS eager calls (no spin before one is measured)."""

    def __init__(self, fraction):
        self.fraction, self.measured = fraction, {"forward": [], "backward": []}

    def start(self, direction):
        """Before the layer's work in `direction`: while calibrating (and not capturing), the guard spin and a
        start event; else None."""
        if len(self.measured[direction]) >= CALIBRATION_CALLS or _cuda.is_current_stream_capturing():
            return None
        _cuda._sleep(_cycles(GUARD_MS))
        event = _cuda.Event(enable_timing=True)
        event.record()
        return event

    def finish(self, direction, start):
        """After it: the device time since `start` noted (a synchronisation), where measured; then the spin."""
        if start is not None:
            end = _cuda.Event(enable_timing=True)
            end.record()
            end.synchronize()
            self.measured[direction].append(start.elapsed_time(end))
        if self.measured[direction]:
            _cuda._sleep(_cycles(self.fraction * statistics.median(self.measured[direction])))

    def around(self, forward, x, args, kwargs, timed_backward):
        """The layer's forward with its spin, and where the step goes backward, its backward's."""
        if timed_backward:
            marks = {}
            x = _OnBackward.apply(x, lambda: self.finish("backward", marks.get("start")))
        start = self.start("forward")
        out = forward(x, *args, **kwargs)
        self.finish("forward", start)
        if timed_backward:
            out = _OnBackward.apply(out, lambda: marks.update(start=self.start("backward")))
        return out
