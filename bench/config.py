"""Sweeps as data: frozen cells and grids, the named presets, and the CLI parsing helpers every suite uses.

A preset is a few named grids (a length sweep, a kernel_N x lambda_imag_exp ablation, a conv_kernel
ablation), never one huge product. A grid multiplies out only the options that apply to each model.
"""

import itertools
from dataclasses import asdict, dataclass, field

import models

DTYPES = ("float32", "bfloat16", "float16")
DEVICES = ("cpu", "cuda", "auto")
FULL = None  # conv_kernel None: every seq_len tap ("full" on command lines)


class UsageError(ValueError):
    """Bad input a user can cause: the CLI prints one line and exits 2."""


def parse_list(text, name, convert):
    items = [item.strip() for item in str(text).split(",")]
    if not text or any(not item for item in items):
        raise UsageError(f"--{name} needs a comma-separated list, got {text!r}")
    return tuple(convert(item) for item in items)


def positive_int(text, name="value"):
    try:
        value = int(text)
    except (TypeError, ValueError):
        raise UsageError(f"--{name}: {text!r} is not an integer") from None
    if value <= 0:
        raise UsageError(f"--{name}: {value} is not positive")
    return value


def boolean(text, name="value"):
    lowered = str(text).lower()
    if lowered not in ("true", "false"):
        raise UsageError(f"--{name}: {text!r} is not true or false")
    return lowered == "true"


def conv_kernel(text, name="conv-kernel"):
    return FULL if str(text).lower() == "full" else positive_int(text, name)


def choice(text, name, valid):
    if text not in valid:
        raise UsageError(f"--{name}: unknown {name} {text!r}; valid: {', '.join(valid)}")
    return text


def parse_shard(text):
    """'I/N' -> (I, N) with 0 <= I < N."""
    try:
        index, count = (int(part) for part in str(text).split("/"))
    except ValueError:
        raise UsageError(f"--shard needs I/N (e.g. 0/4), got {text!r}") from None
    if count <= 0 or not 0 <= index < count:
        raise UsageError(f"--shard {text}: I must be in 0..N-1 with N >= 1")
    return index, count


@dataclass(frozen=True)
class Cell:
    """One measured configuration of the scaling suite; options that do not apply are None."""
    model: str
    mode: str
    dtype: str
    batch: int
    seq_len: int
    dim: int
    kernel_N: int | None = None
    kernel_H: int | None = None
    lambda_imag_exp: bool | None = None
    conv_kernel: int | None = None  # None: not applicable, or every seq_len tap for gss-direct
    compiled: bool = False

    def layer_options(self):
        """The options to pass to models.build_layer: only those the model takes."""
        values = dict(kernel_N=self.kernel_N, kernel_H=self.kernel_H, lambda_imag_exp=self.lambda_imag_exp,
                      conv_kernel=self.conv_kernel)
        return {k: v for k, v in values.items() if k in models.options_of(self.model) and v is not None}

    def series(self):
        """Everything but seq_len: after an OOM, the longer cells of the same series are skipped."""
        return (self.model, self.mode, self.dtype, self.batch, self.dim, self.kernel_N, self.kernel_H,
                self.lambda_imag_exp, self.conv_kernel, self.compiled)


@dataclass(frozen=True)
class Grid:
    """A product of values; for each model only the options it takes are multiplied out.
    An option left None takes the model's default."""
    name: str
    models: tuple
    seq_lens: tuple
    modes: tuple = ("fwd", "fwdbwd")
    dtypes: tuple = ("float32",)
    batch: int = 1
    dim: int = 512
    kernel_N: tuple | None = None
    kernel_H: tuple | None = None
    lambda_imag_exp: tuple | None = None
    conv_kernel: tuple | None = None  # may hold FULL
    compiled: bool = False

    def __post_init__(self):
        for name in self.models:
            models.spec(name)  # unknown names fail here, loudly

    def _option_values(self, model):
        taken = models.options_of(model)
        defaults = models.SPECS[model].defaults
        for option in ("kernel_N", "kernel_H", "lambda_imag_exp", "conv_kernel"):
            if option not in taken:
                yield option, (None,)
            elif getattr(self, option) is None:
                yield option, (defaults[option],)
            else:  # full taps exist only where the model's default is full (gss-direct)
                yield option, tuple(v for v in getattr(self, option) if v is not FULL or defaults[option] is FULL)

    def cells(self):
        out = []
        for model in self.models:
            names, values = zip(*self._option_values(model))
            for mode, dtype, combo in itertools.product(self.modes, self.dtypes, itertools.product(*values)):
                options = dict(zip(names, combo))
                for seq_len in sorted(self.seq_lens):
                    out.append(Cell(model=model, mode=mode, dtype=dtype, batch=self.batch, seq_len=seq_len,
                                    dim=self.dim, compiled=self.compiled, **options))
        return out


@dataclass(frozen=True)
class Preset:
    name: str
    grids: tuple
    timing: dict = field(default_factory=dict)  # keyword arguments for bench.timing.measure

    def cells(self):
        seen, out = set(), []
        for grid in self.grids:  # a cell shared by two grids is measured once
            for cell in grid.cells():
                if cell not in seen:
                    seen.add(cell)
                    out.append(cell)
        return out

    def describe(self):
        return {"name": self.name, "grids": [asdict(g) for g in self.grids], "timing": self.timing}


SCALING_PRESETS = {
    # CPU, 2 cores: lengths to 8192 so that the gss/attention crossover falls inside the range.
    "quick": Preset("quick", (
        Grid("length", ("gss", "attention", "conv"), (512, 1024, 2048, 4096, 8192)),
        Grid("length", ("gss-direct",), (512, 1024, 2048)),
        Grid("kernel_N", ("gss",), (1024,), kernel_N=(64, 256, 1024), lambda_imag_exp=(True, False)),
        Grid("conv_kernel", ("conv", "gss-direct"), (2048,), conv_kernel=(16, 64, 256, 1024)),
    ), timing=dict(warmup=1, min_repeats=5, budget_s=1.0)),
    # One GPU: the GSS paper's 4K setting scaled to one device, lengths to 65536 or the first OOM.
    "full": Preset("full", (
        Grid("length", ("gss", "attention", "conv"), tuple(2 ** k for k in range(10, 17)),
             dtypes=("float32", "bfloat16"), batch=4, dim=1024),
        Grid("length", ("gss-direct",), tuple(2 ** k for k in range(10, 15)), dtypes=("float32", "bfloat16"),
             batch=4, dim=1024),
        Grid("kernel_N", ("gss",), (4096,), kernel_N=(64, 256, 512, 1024, 2048), lambda_imag_exp=(True, False),
             batch=4, dim=1024),
        Grid("conv_kernel", ("conv", "gss-direct"), (4096,), conv_kernel=(16, 64, 256, 1024, 4096), batch=4,
             dim=1024),
    ), timing=dict(warmup=3, min_repeats=10, budget_s=2.0)),
    # Seconds, for tests and smoke runs.
    "smoke": Preset("smoke", (
        Grid("length", tuple(models.NAMES), (32, 64), batch=1, dim=32),
    ), timing=dict(warmup=1, min_repeats=3, budget_s=0.05)),
}
