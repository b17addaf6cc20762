"""A layer cell made ready to time: its layer built, its step made, its FLOPs counted and its peak memory weighed,
the one way the scaling suite and bench.ab do it (from this tree's models/ or another revision's)."""

from dataclasses import dataclass

import torch

import models
from bench.core.config import Cell
from bench.core.flops import count_flops
from bench.core.memory import peak_memory_mb
from bench.core.timing import make_step


@dataclass
class Prepared:
    """A cell ready to be timed: its step, and what was counted and weighed on the way."""

    cell: Cell
    step: object
    params: int
    flops: float
    peak_mem_mb: float
    min_bytes: float | None = None  # the layer's min_bytes; None where its models/ states none (an older revision)


def prepare_cell(cell, device, registry=models):
    """Build the layer (of `registry`, a models/ package) and its step; count the FLOPs in a first step, then read
        the peak memory of a second. The first step of a cell pays one-time costs (lazy allocations, FFT plans, library
        workspaces), in the first cell of a process more than in later ones, so the peak is read after it: the same in
        any order. A fwd step runs once untimed before both: what a layer caches between inference calls (gss-fast's
        kernel) is then cached, as in the timed steps, so flops, peak_mem_mb and tflops_per_s describe the step as
        timed. Seed 0: two revisions draw the same weights where their code does. The layer's minimum bytes
    (models.ops.layer_min_bytes) where it states them."""
    torch.manual_seed(0)
    layer = registry.build_layer(cell.model, dim=cell.dim, device=device, **cell.layer_options(registry))
    x = torch.randn(cell.batch, cell.seq_len, cell.dim, device=device)
    eager = make_step(layer, x, mode=cell.mode, autocast_dtype=cell.dtype)
    if cell.mode == "fwd":
        eager()
    # FLOPs are counted on the eager step (the same arithmetic as the compiled one)
    flops = count_flops(eager)
    step = make_step(torch.compile(layer), x, mode=cell.mode, autocast_dtype=cell.dtype) if cell.compiled else eager
    if cell.compiled:
        step()  # compile before weighing
        layer.zero_grad(set_to_none=True)  # CUDA peak stats would credit the freeing of stale gradients
    peak = peak_memory_mb(step if cell.compiled and device.type == "cuda" else eager, device=device)
    min_bytes = layer.min_bytes(cell.batch, cell.seq_len, cell.mode) if hasattr(layer, "min_bytes") else None
    return Prepared(cell, step, layer.num_params(), flops, peak, min_bytes)
