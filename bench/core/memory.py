"""Peak memory of one step above what was allocated before it (MiB)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.weak import WeakIdKeyDictionary

MIB = 2**20


class StorageTracker(TorchDispatchMode):
    """Counts the bytes of tensor storages allocated by ops while active.

    A storage an op produces is counted whole. A storage that already existed (parameters, inputs) is
    first seen as an op input at its size then, which is not counted, even when an op returns a view of
    it or writes into it in place; what an op grows it by (`resize_`, an `out=` tensor) is. Counted bytes
    are subtracted when the storage is freed. Storage Python objects are preserved by torch for the
    storage's lifetime, so a weakref finalizer on one fires exactly when it is freed. Allocations that
    bypass the dispatcher (kernel scratch space) are not seen.
    """

    def __init__(self) -> None:
        super().__init__()
        self.live_bytes = 0
        self.peak_bytes = 0
        self._seen = WeakIdKeyDictionary()  # storage -> [bytes not counted (its size when first seen), counted]
        self._finalizers: list[weakref.finalize] = []

    def _free(self, record: list[int]) -> None:
        self.live_bytes -= record[1]

    def _storages(self, tree: object):
        for t in tree_flatten(tree)[0]:
            if not isinstance(t, torch.Tensor) or t.device.type == "meta":
                continue
            try:
                yield t.untyped_storage()
            except (NotImplementedError, RuntimeError):
                continue  # sparse / wrapper tensors without a plain storage

    def _count(self, storage) -> None:
        """Count what a storage holds beyond what was already counted or pre-existed."""
        record = self._seen.get(storage)
        if record is None:  # produced by this op
            record = self._seen[storage] = [0, 0]
        grown = storage.nbytes() - record[0] - record[1]
        if grown > 0:
            if record[1] == 0:
                self._finalizers.append(weakref.finalize(storage, self._free, record))
            record[1] += grown
            self.live_bytes += grown

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        inputs = list(self._storages((args, kwargs)))
        for storage in inputs:
            if storage not in self._seen:
                self._seen[storage] = [storage.nbytes(), 0]
        out = func(*args, **kwargs)
        for storage in (*inputs, *self._storages(out)):
            self._count(storage)
        self.peak_bytes = max(self.peak_bytes, self.live_bytes)
        return out

    def __exit__(self, *exc):
        # Storages outliving the step must not keep calling into this tracker.
        for finalizer in self._finalizers:
            finalizer.detach()
        self._finalizers.clear()
        return super().__exit__(*exc)


def _cuda_peak_bytes(fn: Callable[[], object], device: torch.device) -> int:
    with torch.cuda.device(device):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base_bytes = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base_bytes


def _cpu_peak_bytes(fn: Callable[[], object]) -> int:
    tracker = StorageTracker()
    with tracker:
        fn()
    return tracker.peak_bytes


def peak_memory_mb(fn: Callable[[], object], *, device: torch.device | str) -> float:
    """Run fn() once; peak MiB (2**20 bytes) allocated during it above the start.

    CUDA: the caching allocator's max_memory_allocated minus memory_allocated
    before fn, so frees of older tensors during fn (e.g. zero_grad with
    set_to_none) lower the result. CPU: StorageTracker, which only counts
    storages created during fn and gives no credit for freeing older ones;
    it is deterministic. Garbage collection is paused during fn so that
    cycle collection cannot move the peak between runs.
    """
    device = torch.device(device)
    gc.collect()
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        if device.type == "cuda":
            peak_bytes = _cuda_peak_bytes(fn, device)
        else:
            peak_bytes = _cpu_peak_bytes(fn)
    finally:
        if gc_was_enabled:
            gc.enable()
    return peak_bytes / MIB
