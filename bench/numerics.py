"""Numerics suite: relative error of each model's output and input gradient in low precision vs float64.

    python -m bench.numerics                            # the device's default preset (quick on CPU, full on CUDA)
    python -m bench.numerics --models gss,attention --seq-lens 1024,8192 --dtypes float32,bfloat16

Per cell (model, dtype, seq_len): the layer is built in float64 from a fixed seed, with a fixed float64
input x (batch, seq_len, dim) and a fixed random w of the same shape. The reference is the float64
output and the gradient of (out * w).sum() with respect to x. The same weights cast to float32
(module.float()) then run the dtype under test: float32 plainly, bfloat16 / float16 as float32
parameters under torch.autocast (the way people train), the backward outside autocast. float64 runs
the float64 layer again, so its error must be exactly 0: a check of the harness, not of the model.

    out_rel_err  = ||out - out_ref|| / ||out_ref||      (Frobenius norms over the whole batch, in float64)
    grad_rel_err = ||dx - dx_ref||  / ||dx_ref||

Every layer adds its input back (out = x + branch(x), so dx = w + d(branch . w)/dx), and that identity
path is nearly exact in any dtype: where the branch is small next to x (conv and attention at init,
~0.15 ||x||; GSS ~2 ||x||) the two errors above are diluted by it. out_branch_rel_err and
grad_branch_rel_err are the same errors of the branch alone: out - x against out_ref - x, dx - w
against dx_ref - w.

On CUDA, float32 runs with torch's TF32 settings as they are (cuDNN convolutions default to TF32).
A non-finite output or gradient (e.g. float16 overflow) is an error row that keeps the numbers.
Rows go to DIR/numerics.csv one cell at a time; failures are rows, an OOM skips the longer lengths of
that series, and --resume continues a killed run.
"""

import copy
import itertools
import math
import sys
from dataclasses import dataclass, replace

import torch

import models
from bench.core import cli
from bench.core.config import Preset, layers
from bench.core.sweep import Sweep, device_name, run_jobs
from bench.core.timing import autocast
from bench.usage import UsageError, list_of, one_of

CSV = "numerics.csv"
DTYPES = ("float64", "float32", "bfloat16", "float16")
SEEDS = dict(layer=0, x=1, w=2)


@dataclass(frozen=True)
class NumericsCell:
    model: str
    dtype: str
    seq_len: int
    dim: int
    batch: int


@dataclass(frozen=True)
class NumericsGrid:
    """models x seq_lens x dtypes; a model's lengths run in order, every dtype of a length together,
    so that one float64 reference serves them all."""

    name: str
    models: tuple
    seq_lens: tuple
    dtypes: tuple = ("float32", "bfloat16")
    dim: int = 256
    batch: int = 1

    def __post_init__(self):
        layers(self.models)

    def cells(self):
        return [
            NumericsCell(model=model, dtype=dtype, seq_len=length, dim=self.dim, batch=self.batch)
            for model, length in itertools.product(self.models, sorted(self.seq_lens))
            for dtype in self.dtypes
        ]


NUMERICS_PRESETS = {
    # CPU, 2 cores: every model, within a minute together with decode's quick preset. The float64
    # reference of gss-direct's every-tap convolution grows as L^2, so it stops at 2048.
    "quick": Preset(
        "quick",
        (
            NumericsGrid(
                "length", ("gss", "gss-fast", "conv", "attention", "dss", "attention-chunked"), (256, 1024, 4096)
            ),
            NumericsGrid("length", ("gss-direct",), (256, 1024)),
        ),
    ),
    # One GPU: lengths to 64K in every autocast dtype. Attention's float64 reference runs SDPA's math
    # kernel, whose L^2 scores (16 heads) pass 78 GiB at 16K, and gss-direct's is an L^2 convolution:
    # both stop at 8K.
    "full": Preset(
        "full",
        (
            NumericsGrid(
                "length",
                ("gss", "gss-fast", "conv", "attention-chunked"),
                tuple(2**k for k in range(8, 17)),
                dtypes=("float32", "bfloat16", "float16"),
                dim=1024,
            ),
            NumericsGrid(
                "length",
                ("attention", "dss"),
                tuple(2**k for k in range(8, 14)),
                dtypes=("float32", "bfloat16", "float16"),
                dim=1024,
            ),
            NumericsGrid(
                "length",
                ("gss-direct",),
                tuple(2**k for k in range(8, 14)),
                dtypes=("float32", "bfloat16", "float16"),
                dim=1024,
            ),
        ),
    ),
    # One H100/H200 within the device budget: every model and every CUDA dtype at 1K and 8K (the every-tap
    # direct convolution at 1K only: its float64 reference is L^2).
    "gpu-check": Preset(
        "gpu-check",
        (
            NumericsGrid(
                "length",
                ("gss", "conv", "attention"),
                (1024, 8192),
                dtypes=("float32", "bfloat16", "float16"),
                dim=1024,
            ),
            NumericsGrid("length", ("gss-direct",), (1024,), dtypes=("float32", "bfloat16", "float16"), dim=1024),
        ),
    ),
    # Seconds, for tests and smoke runs.
    "smoke": Preset(
        "smoke",
        (NumericsGrid("length", tuple(models.NAMES), (16, 64), dtypes=("float64", "float32", "bfloat16"), dim=32),),
    ),
}


def _seeded(seed, shape, device):
    generator = torch.Generator().manual_seed(seed)  # drawn on the CPU: the same numbers on every device
    return torch.randn(shape, generator=generator, dtype=torch.float64).to(device)


def forward_backward(layer, x, w, *, autocast_dtype=None):
    """The output (detached) and d((out * w).sum())/dx, the backward outside autocast."""
    x = x.detach().clone().requires_grad_(True)
    with autocast(autocast_dtype, x.device.type):
        out = layer(x)
    (grad,) = torch.autograd.grad((out.to(w.dtype) * w).sum(), x)  # x's gradient only: weights' are not compared
    return out.detach(), grad


def rel_err(value, ref):
    return ((value.double() - ref).norm() / ref.norm()).item()


class References:
    """The float64 layer and its output and gradient, kept for the last (model, seq_len, dim, batch): the
    dtypes of a length, measured one after another, share it (on a Ray worker, those it happens to run)."""

    def __init__(self, device):
        self.device, self.key, self.value = device, None, None

    def get(self, cell):
        key = (cell.model, cell.seq_len, cell.dim, cell.batch)
        if key != self.key:
            self.key, self.value = None, None  # free the last one before building the next
            torch.manual_seed(SEEDS["layer"])
            layer = models.build_layer(cell.model, dim=cell.dim, device=self.device, dtype=torch.float64)
            shape = (cell.batch, cell.seq_len, cell.dim)
            x, w = _seeded(SEEDS["x"], shape, self.device), _seeded(SEEDS["w"], shape, self.device)
            out, grad = forward_backward(layer, x, w)
            self.key, self.value = key, (layer, x, w, out, grad)
        return self.value


def measure_cell(cell, device, references):
    try:
        layer64, x64, w64, out_ref, grad_ref = references.get(cell)
    except RuntimeError as error:  # an OOM stays an OOM, saying where it happened
        raise type(error)(f"float64 reference: {error}") from error
    if cell.dtype == "float64":
        layer, x, w, autocast_dtype = copy.deepcopy(layer64), x64, w64, None
    else:
        layer, x, w, autocast_dtype = copy.deepcopy(layer64).float(), x64.float(), w64.float(), cell.dtype
    out, grad = forward_backward(layer, x, w, autocast_dtype=autocast_dtype)
    out, grad = out.double(), grad.double()
    row = dict(
        out_rel_err=rel_err(out, out_ref),
        grad_rel_err=rel_err(grad, grad_ref),
        out_branch_rel_err=rel_err(out - x64, out_ref - x64),
        grad_branch_rel_err=rel_err(grad - w64, grad_ref - w64),
        status="ok",
    )
    if not all(math.isfinite(v) for v in row.values() if isinstance(v, float)):
        row.update(status="error", error=f"non-finite output or gradient in {cell.dtype}")
    return row


def build_cells(preset, **flags):
    """The preset's grids with the flags' values (models, seq_lens, dtypes, dim, batch; None: unset) replacing
    each grid's."""
    cells = dict.fromkeys(
        c for g in preset.grids for c in replace(g, **{k: v for k, v in flags.items() if v is not None}).cells()
    )
    # stable: each length's dtypes stay together, behind one reference, and lengths ascend in each series
    return sorted(cells, key=lambda c: (models.NAMES.index(c.model), c.dim, c.batch, c.seq_len))


def make_spec(common, **flags):
    """The run of the common settings (cli.Common) and this suite's flags' values (build_cells)."""
    if "float16" in (flags.get("dtypes") or ()) and cli.resolve_device(common.device).type != "cuda":
        raise UsageError("--dtypes float16 needs a CUDA device; use bfloat16 on CPU")
    return cli.build("numerics", common, flags, NUMERICS_PRESETS, build_cells)


def run(spec):
    """Measure the spec's cells into its run directory; returns the path of the CSV."""
    sweep, name = Sweep(CSV, **spec.sweep_args), device_name(spec.device)
    try:
        jobs = [sweep.job(lambda c=c: ({**c.__dict__, "device": name}, (measure, (c,)))) for c in spec.cells]
        run_jobs(jobs, spec, desc="numerics")
    finally:
        _REFERENCES.clear()  # this process's float64 references, freed with the run
    return spec.out_dir / CSV


_REFERENCES = {}  # device -> References: the last float64 reference of this process


def measure(cell, device):
    """A cell's measured columns, against this process's float64 reference of its model and length."""
    if cell.dtype == "float16" and device.type != "cuda":  # a CUDA preset run on a CPU
        return dict(status="skipped", error="float16 autocast runs on CUDA only")
    return measure_cell(cell, device, _REFERENCES.setdefault(device, References(device)))


def make_parser():
    return cli.parser(
        __doc__,
        "python -m bench.numerics",
        ("--models", "--seq-lens", "--dim", "--batch"),
        dtypes=(
            f"comma-separated, from: {', '.join(DTYPES)} (float16: CUDA only)",
            list_of(one_of(DTYPES, "dtype"), "dtypes"),
        ),
    )


def main(argv=None):
    return cli.main(make_parser(), argv, make_spec, run)


if __name__ == "__main__":
    sys.exit(main())
