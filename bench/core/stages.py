"""A step's work split by stage: the FLOPs and the minimum bytes of each record_function range of models/.

count_stages(step, module, ranges) runs step() once (an extra, eager step: the dispatch mode slows it) with
bench.core.flops' counter and a TorchDispatchMode beneath it, which sees every op the counter counts, the
ranges' own enter and exit ops (torch.ops.profiler._record_function_enter_new / _record_function_exit go
through the dispatcher) and the ops the autograd engine runs (torch._C._current_autograd_node() is set).

Each op belongs where the profiling suite's time breakdown puts the instant it runs: to the innermost open
range of `ranges` (ranges of other names are transparent), to `backward` when the engine runs it outside every
range opened in the backward pass, else to `other`. Its FLOPs, by the counter's own formulas, go to that
category, so the categories sum to bench.core.flops.count_flops of the same step.

Minimum bytes, per range instance (one entry into a range; the ops of a range nested in it belong to the inner
one), what enters and what leaves it, each byte once:
* in: the memory its ops read that was not produced inside it (the step's input, parameters, the outputs of
  other stages);
* out: the memory produced inside it that an op of the same pass (the forward, or the engine's backward)
  outside it reads later, or that is the module's output (read through a forward hook).
Intermediates that live and die inside an instance are not counted: a fused kernel would keep them on chip.
Nor are a forward stage's tensors that only the backward pass reads (saved activations, which a fused kernel
may recompute), so a stage moves the same bytes in fwd and fwdbwd (but where a layer runs another path with
autograd off). A category's min_bytes sums its instances' (a tensor one stage writes and another reads counts
in both). What a read covers is its view's footprint (footprint()): the bytes its elements occupy in its
storage, a broadcast dimension once; the footprints of one storage that an instance reads (or that leave it)
are united (union_bytes()), so a tensor read whole, transposed and by halves counts once, and a slice only as
its own bytes. An op whose tensor outputs all alias its inputs' storages and that writes nothing (a view, a
transpose, detach) moves nothing; an op's fresh outputs, and the arguments its schema marks as written (in
place, out=), are produced where it runs. Storages are known by address, which a freed one gives up: a fresh
output overwrites the record, so a tensor made outside the dispatcher at a reused address (torch.tensor's
data) could be taken for a stale producer's.
"""

import math
from collections import defaultdict
from dataclasses import dataclass, field

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from bench.core.flops import flop_counter

BACKWARD, OTHER = "backward", "other"
_ENTER = torch.ops.profiler._record_function_enter_new.default
_EXIT = torch.ops.profiler._record_function_exit._RecordFunction


@dataclass(frozen=True)
class StageCounts:
    """One step's counts: category -> FLOPs (categories that ran a counted op), range category -> minimum bytes
    (categories with an instance), and the flop counter's own total over the step."""

    flops: dict
    min_bytes: dict
    total_flops: int


@dataclass
class _Instance:
    category: str
    backward: bool  # opened while the autograd engine ran
    moved: dict = field(default_factory=lambda: defaultdict(set))  # ("in" | "out", storage) -> footprints

    def bytes(self):
        return sum(union_bytes(footprints) for footprints in self.moved.values())


def _tensors(tree):
    return [t for t in tree_leaves(tree) if isinstance(t, torch.Tensor) and t.numel() > 0]


def _storage(t):
    return t.untyped_storage().data_ptr()


def footprint(t):
    """(storage address, (byte offset, dims)) of the memory a view covers: its (size, byte stride) dimensions,
    broadcast (stride-0) ones dropped, sorted outermost first and merged where contiguous, the last one a
    contiguous run (stride 1), so that views of the same bytes (a transpose, a reshape, a real view) match."""
    itemsize = t.element_size()
    dims = sorted(((n, s * itemsize) for n, s in zip(t.shape, t.stride()) if n > 1 and s != 0), key=lambda d: -d[1])
    merged = []
    for n, s in (*dims, (itemsize, 1)):
        if merged and merged[-1][1] == n * s:
            merged[-1] = (merged[-1][0] * n, s)
        else:
            merged.append((n, s))
    return _storage(t), (t.storage_offset() * itemsize, tuple(merged))


def union_bytes(footprints):
    """The bytes that (offset, dims) footprints of one storage cover together, each byte once: a footprint's
    size where there is one, else counted on a mask in units of their common divisor (a view and its slices)."""
    if len(footprints) == 1:
        return math.prod(n for n, _ in next(iter(footprints))[1])
    edges = [dims[-1][0] for _, dims in footprints] + [s for _, dims in footprints for _, s in dims[:-1]]
    unit = math.gcd(*(offset for offset, _ in footprints), *edges)
    lo = min(offset for offset, _ in footprints)
    hi = max(offset + sum((n - 1) * s for n, s in dims[:-1]) + dims[-1][0] for offset, dims in footprints)
    mask = torch.zeros((hi - lo) // unit, dtype=torch.bool)
    for offset, dims in footprints:
        size = [n for n, _ in dims[:-1]] + [dims[-1][0] // unit]
        stride = [s // unit for _, s in dims[:-1]] + [1]
        mask.as_strided(size, stride, (offset - lo) // unit).fill_(True)
    return int(mask.sum()) * unit


def _written(func, args, kwargs):
    """The tensors among an op's arguments that its schema marks as written (in-place ops, out=)."""
    found = []
    for i, arg in enumerate(func._schema.arguments):
        if arg.alias_info is not None and arg.alias_info.is_write:
            value = kwargs.get(arg.name, args[i] if i < len(args) and not arg.kwarg_only else None)
            found += _tensors(value)
    return found


class _StageMode(TorchDispatchMode):
    def __init__(self, registry, ranges):
        super().__init__()
        self.registry, self.ranges = registry, frozenset(ranges)
        self.open = []  # per range open now, innermost last: its instance's index (None: not one of `ranges`)
        self.instances = []
        self.flops = defaultdict(float)
        self.producer = {}  # storage address -> (instance index or None, produced in the backward pass)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        backward = torch._C._current_autograd_node() is not None
        if func is _ENTER:
            self.open.append(len(self.instances) if args[0] in self.ranges else None)
            if args[0] in self.ranges:
                self.instances.append(_Instance(args[0], backward))
        elif func is _EXIT:  # `with record_function` nests: the range that ends is the last one opened
            self.open.pop()
        else:
            instance = next((i for i in reversed(self.open) if i is not None), None)
            if instance is not None and self.instances[instance].backward != backward:
                instance = None  # the engine runs it outside every range opened in the backward pass
            category = self.instances[instance].category if instance is not None else (BACKWARD if backward else OTHER)
            packet = func._overloadpacket
            if packet in self.registry:
                self.flops[category] += self.registry[packet](*args, **kwargs, out_val=out)
            self.track(func, args, kwargs, out, instance, backward)
        return out

    def track(self, func, args, kwargs, out, instance, backward):
        inputs, outputs, written = _tensors((args, kwargs)), _tensors(out), _written(func, args, kwargs)
        sources = {_storage(t) for t in inputs}
        fresh = [t for t in outputs if _storage(t) not in sources]
        if outputs and not fresh and not written:
            return  # a view of its inputs: nothing moves
        for t in inputs:
            self.read(t, instance, backward)
        for t in (*fresh, *written):
            self.producer[_storage(t)] = (instance, backward)

    def read(self, t, reader, backward):
        """A read of t by an op of instance `reader` (None: outside every range) in the given pass."""
        storage, covered = footprint(t)
        source, source_backward = self.producer.get(storage, (None, backward))
        if source == reader:
            return
        if reader is not None:
            self.instances[reader].moved["in", storage].add(covered)
        if source is not None and source_backward == backward:
            self.instances[source].moved["out", storage].add(covered)

    def min_bytes(self):
        totals = defaultdict(int)
        for instance in self.instances:
            totals[instance.category] += instance.bytes()
        return dict(totals)


def count_stages(step, module, ranges):
    """Run step() once, counting; `module` is the layer step() calls (its output leaves the last stage)."""
    counter = flop_counter()
    mode = _StageMode(counter.flop_registry, ranges)
    outputs = []
    hook = module.register_forward_hook(lambda _module, _args, out: outputs.append(out))
    try:
        with mode, counter:
            step()
    finally:
        hook.remove()
    for t in _tensors(outputs):  # the step's output leaves the stage that made it
        mode.read(t, None, False)
    flops, running, rounded = {}, 0.0, 0
    for category, count in mode.flops.items():  # rounded as running sums: the integers add up to the rounded total
        running += count
        flops[category] = int(round(running)) - rounded
        rounded += flops[category]
    return StageCounts(flops=flops, min_bytes=mode.min_bytes(), total_flops=int(round(counter.get_total_flops())))
