"""Sweeps as data: a suite's preset, and the frozen layer cells and grids of the scaling and profiling suites
with the scaling suite's presets (each other suite's cells and presets live with it).

A preset is a few named grids (a length sweep, a kernel_N x lambda_imag_exp ablation, a conv_kernel
ablation), never one huge product. A grid multiplies out only the options that apply to each model.
"""

import itertools
from dataclasses import asdict, dataclass, field, replace

import models
from bench.results import cell_key
from bench.schema import CROSSOVER_PAIR, MODES, OPTIONS, TABLES, full_taps
from bench.usage import UsageError, positive_int

DTYPES = ("float32", "bfloat16", "float16")
DEVICES = ("cpu", "cuda", "auto")
FULL = None  # conv_kernel None: every seq_len tap ("full" on command lines)
ALL = models.NAMES  # the layers
SWEPT_OPTIONS = OPTIONS  # the options a grid sweeps
_GRID_FIELD = {"kernel_n": "kernel_N", "kernel_h": "kernel_H"}  # flag -> Grid field, where they differ
LAYER_KEY = TABLES["scaling.csv"].key


def conv_kernel(text, name="conv-kernel"):
    return FULL if str(text).lower() == "full" else positive_int(text, name)


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

    def layer_options(self, registry=models):
        """The options to pass to models.build_layer (of `registry`): only those the model takes."""
        return taken_options(self.model, {o: getattr(self, o) for o in SWEPT_OPTIONS}, registry)

    def key_row(self, device_name):
        """The cell's key columns as written (scaling.csv, op_breakdown.csv); conv_kernel is the taps used."""
        takes_taps = "conv_kernel" in models.options_of(self.model)
        taps = (self.conv_kernel or self.seq_len) if takes_taps else None
        return dict(
            model=self.model,
            mode=self.mode,
            dtype=self.dtype,
            device=device_name,
            batch=self.batch,
            seq_len=self.seq_len,
            dim=self.dim,
            kernel_N=self.kernel_N,
            kernel_H=self.kernel_H,
            lambda_imag_exp=self.lambda_imag_exp,
            conv_kernel=None if taps is None else min(taps, self.seq_len),
            compiled=self.compiled,
        )

    @classmethod
    def from_key_row(cls, row):
        """The cell of a scaling.csv row's key, values as written or parsed: key_row's inverse (taps covering the
        whole length are FULL for the model whose default they are, gss-direct's)."""
        ints = {c: _int(row.get(c)) for c in ("batch", "seq_len", "dim", "kernel_N", "kernel_H", "conv_kernel")}
        if (
            full_taps(ints["conv_kernel"], ints["seq_len"])
            and models.resolve_options(row["model"])["conv_kernel"] is FULL
        ):
            ints["conv_kernel"] = FULL
        flags = dict(lambda_imag_exp=_bool(row.get("lambda_imag_exp")), compiled=_bool(row.get("compiled")) or False)
        return cls(model=row["model"], mode=row["mode"], dtype=row["dtype"], **ints, **flags)

    def of_model(self, model):
        """The same cell of another model (the reference of --relative times): of the options that model takes,
        this cell's where it has them, else the model's defaults."""
        taken, defaults = models.options_of(model), models.resolve_options(model)
        options = {o: getattr(self, o) if getattr(self, o) is not None else defaults.get(o) for o in SWEPT_OPTIONS}
        return replace(self, model=model, **{o: v if o in taken else None for o, v in options.items()})


def _int(value):
    """A key's integer as written ("64"), parsed (64, 64.0) or absent ("", None, NaN): an int or None."""
    return None if value is None or value == "" or value != value else int(float(value))


def _bool(value):
    return None if value is None or value == "" else str(value).lower() == "true"


def taken_options(model, values, registry=models):
    """The set options of `values` that `model` takes: what models.build_layer and build_lm are given (of
    `registry`, a models/ package: this one, or another revision's for bench.ab)."""
    return {k: v for k, v in values.items() if k in registry.options_of(model) and v is not None}


def layers(names):
    """Check that every name is a layer of the registry: an unknown one fails (ValueError), an LM-level one
    (gss-hybrid, trained by the perplexity suite) is a UsageError naming the layers."""
    for name in names:
        if name in models.LM_SPECS:
            raise UsageError(
                f"{name} is an LM-level model: the perplexity suite (trainings, recall) and decoding run "
                f"it; this suite measures layers: {', '.join(models.NAMES)}"
            )
        models.spec(name)


def option_combos(model, grid):
    """Every combination of the grid's option values that `model` takes (None where it takes none,
    the model's default where the grid leaves an option None). Full taps exist only where the model's
    default is full (gss-direct): `--conv-kernel full` is not multiplied into `conv`."""
    taken, defaults = models.options_of(model), models.resolve_options(model)
    names, values = [], []
    for option in SWEPT_OPTIONS:
        given = getattr(grid, option, None)
        if option not in taken:
            choices = (None,)
        elif given is None:
            choices = (defaults[option],)
        else:
            choices = tuple(v for v in given if v is not FULL or defaults[option] is FULL)
        names.append(option)
        values.append(choices)
    return [dict(zip(names, combo)) for combo in itertools.product(*values)]


@dataclass(frozen=True)
class Grid:
    """A product of values; for each model only the options it takes are multiplied out.
    An option left None takes the model's default."""

    name: str
    models: tuple
    seq_lens: tuple
    modes: tuple = MODES
    dtypes: tuple = ("float32",)
    batch: int = 1
    dim: int = 512
    kernel_N: tuple | None = None
    kernel_H: tuple | None = None
    lambda_imag_exp: tuple | None = None
    conv_kernel: tuple | None = None  # may hold FULL
    compiled: bool = False

    def __post_init__(self):
        layers(self.models)

    def cells(self):
        """Group by group (see group_key): per mode and dtype, lengths ascending (so an OOM skips the longer
        lengths of its series), and at each length every model and option set of the grid."""
        return [
            Cell(
                model=model,
                mode=mode,
                dtype=dtype,
                batch=self.batch,
                seq_len=seq_len,
                dim=self.dim,
                compiled=self.compiled,
                **options,
            )
            for mode, dtype in itertools.product(self.modes, self.dtypes)
            for seq_len in sorted(self.seq_lens)
            for model in self.models
            for options in option_combos(model, self)
        ]


@dataclass(frozen=True)
class Preset:
    name: str
    grids: tuple
    timing: dict = field(default_factory=dict)  # keyword arguments for bench.core.timing.measure
    # the scaling suite's crossover refinement (bench.analysis.refine): model pairs, the +-ci it aims at, its budget
    refine: dict = field(default_factory=dict)

    def describe(self):
        return {
            "name": self.name,
            "grids": [asdict(g) for g in self.grids],
            "timing": self.timing,
            "refine": self.refine,
        }


_REFINED = (CROSSOVER_PAIR,)  # the crossover the README quotes
_GPU_LENGTHS = tuple(2**k for k in range(10, 17))  # 1K..64K, the one-GPU presets' lengths
_ONE_GPU = dict(batch=4, dim=1024)  # the one-GPU presets' batch and width
SCALING_PRESETS = {
    # CPU, 2 cores: lengths 256..4096, so that the gss/attention crossovers fall inside the range with a length on
    # either side, and gss, gss-fast and dss also at 8192 (the GSS paper's 4K and beyond). The direct convolution
    # and the ablations forward only, 1 s a cell, 60 s to refine a crossover: the quick run_all's budget
    # (docs/cpu-reference.md). The ablations at 512, out of the forward crossover's bracket; taps up to 256 there
    # (512: gss-direct's full taps)
    "quick": Preset(
        "quick",
        (
            Grid(
                "length",
                ("gss", "gss-fast", "attention", "conv", "dss", "attention-chunked"),
                (256, 512, 1024, 2048, 4096),
            ),
            Grid("length", ("gss", "gss-fast", "dss"), (8192,)),
            Grid("length", ("gss-direct",), (512, 1024, 2048), modes=("fwd",)),
            Grid(
                "kernel_N",
                ("gss", "gss-fast"),
                (512,),
                modes=("fwd",),
                kernel_N=(64, 256, 1024),
                lambda_imag_exp=(True, False),
            ),
            Grid("conv_kernel", ("conv", "gss-direct"), (512,), modes=("fwd",), conv_kernel=(16, 64, 256)),
        ),
        timing=dict(warmup=1, min_repeats=10, budget_s=1.0),
        refine=dict(pairs=_REFINED, ci=0.15, budget_s=60.0),
    ),
    # One GPU: the GSS paper's 4K setting scaled to one device, lengths to 65536 or the first OOM.
    "full": Preset(
        "full",
        (
            Grid(
                "length",
                ("gss", "gss-fast", "attention", "conv", "dss", "attention-chunked"),
                _GPU_LENGTHS,
                dtypes=("float32", "bfloat16"),
                **_ONE_GPU,
            ),
            Grid("length", ("gss-direct",), _GPU_LENGTHS[:5], dtypes=("float32", "bfloat16"), **_ONE_GPU),
            Grid(
                "kernel_N",
                ("gss", "gss-fast"),
                (4096,),
                kernel_N=(64, 256, 512, 1024, 2048),
                lambda_imag_exp=(True, False),
                **_ONE_GPU,
            ),
            Grid("conv_kernel", ("conv", "gss-direct"), (4096,), conv_kernel=(16, 64, 256, 1024, 4096), **_ONE_GPU),
        ),
        timing=dict(warmup=3, min_repeats=10, budget_s=2.0),
        refine=dict(pairs=_REFINED, ci=0.15, budget_s=120.0),
    ),
    # One H100/H200 within the device budget (run_all.py --preset gpu-check, docs/gpu.md): every model at
    # 1K..64K in bfloat16, the dtype a GPU user trains in, but the every-tap direct convolution (L^2), to 8K; every
    # model in float32 at 1K..8K (its longer cells would pass the budget). Few eager repeats, one warm-up and a
    # short budget: on CUDA a cell is gated on its graph-replayed gpu_ms (bench.core.graphs, which warms up and
    # replays on its own), the eager time_ms being what a user's own loop sees
    "gpu-check": Preset(
        "gpu-check",
        (
            Grid("length", ALL, _GPU_LENGTHS[:4], dtypes=("float32", "bfloat16"), **_ONE_GPU),
            Grid(
                "length", tuple(m for m in ALL if m != "gss-direct"), _GPU_LENGTHS[4:], dtypes=("bfloat16",), **_ONE_GPU
            ),
        ),
        timing=dict(warmup=1, min_repeats=6, budget_s=0.05),
    ),
    # Seconds, for tests and smoke runs.
    "smoke": Preset(
        "smoke",
        (Grid("length", tuple(models.NAMES), (32, 64), batch=1, dim=32),),
        timing=dict(warmup=1, min_repeats=3, budget_s=0.05),
    ),
}


def group_key(cell):
    """The cells a finding compares with each other, measured together with their repeats interleaved: every
    model and option set at one length, mode, dtype, batch, width and compilation."""
    return cell.mode, cell.dtype, cell.batch, cell.dim, cell.compiled, cell.seq_len


def groups_of(cells):
    """Consecutive cells sharing a group_key, as lists (layer_cells emits them group by group)."""
    groups = []
    for cell in cells:
        if groups and group_key(groups[-1][0]) == group_key(cell):
            groups[-1].append(cell)
        else:
            groups.append([cell])
    return groups


def shard_groups(cells, spec):
    """The I-th of N round-robin slices of whole groups, so that a shard interleaves what a finding compares."""
    if spec is None:
        return cells
    index, count = spec
    return [cell for i, group in enumerate(groups_of(cells)) if i % count == index for cell in group]


def layer_cells(preset, *, modes=None, dtype=None, batch=None, dim=None, compile=False, **grid):
    """The layer cells of the scaling and profiling suites, from a preset and the values of the suites' layer flags
    (None: unset). With a grid flag (models, seq_lens, kernel_n, kernel_h, lambda_imag_exp, conv_kernel), one grid
    from them and the preset's defaults, else the preset's grids. modes, dtype, batch, dim and compile apply to every
    grid. In the order of ordered()."""
    grids, given = preset.grids, {_GRID_FIELD.get(k, k): v for k, v in grid.items() if v is not None}
    if given:
        grids = (
            Grid(**{**asdict(grids[0]), "name": "custom", "models": ALL, **dict.fromkeys(SWEPT_OPTIONS), **given}),
        )
    overrides = dict(modes=modes, dtypes=dtype, batch=batch, dim=dim, compiled=compile or None)
    overrides = {k: v for k, v in overrides.items() if v is not None}
    cells = ordered(c for g in grids for c in replace(g, **overrides).cells())
    if not cells:
        raise UsageError(
            "the grid is empty: no requested model takes the options given (conv_kernel 'full' is gss-direct's)"
        )
    return cells


def ordered(cells):
    """Cells as the scaling suite measures them: each once (a cell two grids share, such as gss-direct's full taps
    at 4096 and its 4096 taps, runs once), group by group (group_key), the groups of all grids merged, so that every
    model and option measured at one length is timed together; per mode, dtype, batch, width and compilation, lengths
    ascend, the series in the order the cells first name them."""
    unique = {}
    for cell in cells:
        unique.setdefault(cell_key(cell.key_row(""), LAYER_KEY), cell)
    by_group = {}
    for cell in unique.values():
        by_group.setdefault(group_key(cell), []).append(cell)
    series = list(dict.fromkeys(key[:-1] for key in by_group))
    return [cell for key in sorted(by_group, key=lambda k: (series.index(k[:-1]), k[-1])) for cell in by_group[key]]
