"""Peak memory of one step above what was allocated before it (MiB)."""

from __future__ import annotations

import gc
import weakref
from typing import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.weak import WeakIdKeyDictionary

MIB = 2**20


class StorageTracker(TorchDispatchMode):
    """Counts bytes of tensor storages first produced by an op while active.

    Storages that already existed (parameters, inputs) are first seen as op
    inputs and are never counted, even when an op returns a view of them or
    writes into them in place. A counted storage is subtracted when it is
    freed. Storage Python objects are preserved by torch for the storage's
    lifetime, so a weakref finalizer on one fires exactly when it is freed.
    Allocations that bypass the dispatcher (kernel scratch space) are not seen.
    """

    def __init__(self) -> None:
        super().__init__()
        self.live_bytes = 0
        self.peak_bytes = 0
        self._seen = WeakIdKeyDictionary()  # storage -> counted (bool)
        self._finalizers: list[weakref.finalize] = []

    def _free(self, nbytes: int) -> None:
        self.live_bytes -= nbytes

    def _storages(self, tree: object):
        for t in tree_flatten(tree)[0]:
            if not isinstance(t, torch.Tensor) or t.device.type == "meta":
                continue
            try:
                yield t.untyped_storage()
            except (NotImplementedError, RuntimeError):
                continue  # sparse / wrapper tensors without a plain storage

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        for storage in self._storages((args, kwargs)):
            if storage not in self._seen:
                self._seen[storage] = False
        out = func(*args, **kwargs)
        for storage in self._storages(out):
            if storage in self._seen:
                continue
            nbytes = storage.nbytes()
            self._seen[storage] = True
            self._finalizers.append(weakref.finalize(storage, self._free, nbytes))
            self.live_bytes += nbytes
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
