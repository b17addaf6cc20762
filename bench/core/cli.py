"""What every suite's command line shares, and the one way a suite runs. A command line is parsed once, each
value by its flag's converter (bench.usage: bad input is one line on stderr and exit code 2), into a frozen
RunSpec, which run_all.py builds directly too; launch() then checks the run directory, records env.json and
runs the spec."""

import shlex
import sys
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import torch

import models
from bench import usage
from bench.core import config, executor
from bench.core import limits as machine
from bench.core.env import write_env
from bench.results import (
    RESULTS_DIR,
    ResultsError,
    ensure_writable_dir,
    format_value,
    new_run_id,
    pending_in_flight,
    read_env,
    read_rows,
)
from bench.schema import MODES, TABLES
from bench.usage import Parser, UsageError, fail, list_of, one_of, positive_int, value_of

# The value flags suites share: their help, and the converter of their text; a suite names those it takes.
FLAGS = {
    "--models": (
        f"comma-separated, from: {', '.join(models.LM_NAMES)} (LM-level, {', '.join(models.LM_SPECS)}: "
        "trainings and decoding only)",
        list_of(one_of(models.LM_NAMES, "model"), "models"),
    ),
    "--seq-lens": ("comma-separated positive integers", list_of(positive_int, "seq-lens")),
    "--kernel-n": ("DSS state sizes kernel_N (GSS family)", list_of(positive_int, "kernel-n")),
    "--kernel-h": ("DSS channels kernel_H (GSS family, conv)", list_of(positive_int, "kernel-h")),
    "--lambda-imag-exp": ("true,false (GSS family)", list_of(usage.boolean, "lambda-imag-exp")),
    "--conv-kernel": (
        "taps (conv, gss-direct); 'full' = seq_len taps (gss-direct)",
        list_of(config.conv_kernel, "conv-kernel"),
    ),
    "--modes": (",".join(MODES), list_of(one_of(MODES, "mode"), "modes")),
    "--dtype": (
        "float32, bfloat16 (autocast), float16 (autocast, CUDA)",
        list_of(one_of(config.DTYPES, "dtype"), "dtype"),
    ),
    "--batch": ("batch size", value_of(positive_int, "batch")),
    "--dim": ("model width", value_of(positive_int, "dim")),
    "--depth": ("layers", value_of(positive_int, "depth")),
}
# the scaling and profiling suites' layer cells: every shared flag but --depth, and --compile
LAYER_FLAGS = tuple(flag for flag in FLAGS if flag != "--depth")


def parser(module_doc, prog, flags=(), **own):
    """A suite's parser: its description is the first paragraph of its module docstring; the common flags and the
    executor's, the shared `flags` it takes (FLAGS), and its own flags `own`: name -> (help, converter), or a help
    that replaces a shared flag's."""
    p = Parser(prog=prog, description=module_doc.split("\n\n")[0])
    p.add_argument("--preset", help="named preset (default: quick on CPU, full on CUDA)")
    device = value_of(one_of(config.DEVICES, "device"), "device")
    p.add_argument("--device", default="auto", type=device, help="cpu, cuda or auto (default)")
    p.add_argument(
        "--threads", type=value_of(positive_int, "threads"), help="torch CPU threads (default: torch's choice)"
    )
    p.add_argument("--out", help="run directory (default: results/<run_id>/)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out, skipping recorded cells")
    p.add_argument("--shard", type=usage.parse_shard, help="I/N: run the I-th of N deterministic slices of the cells")
    p.add_argument("--list", action="store_true", help="print the cells and exit")
    p.add_argument(
        "--time-limit",
        metavar="SECONDS",
        type=value_of(usage.positive_number, "time-limit"),
        help="start no cell after this many seconds (the cells left are not recorded: --resume runs them)",
    )
    own = {"--" + name.replace("_", "-"): text for name, text in own.items()}
    for flag in flags:
        text, convert = FLAGS[flag]
        given = own.pop(flag, text)
        text, convert = given if isinstance(given, tuple) else (given, convert)
        p.add_argument(flag, type=convert, help=text)
    for flag, (text, convert) in own.items():
        p.add_argument(flag, type=convert, help=text)
    if flags == LAYER_FLAGS:
        p.add_argument("--compile", action="store_true", help="torch.compile the layer")
    p.add_argument(
        "--limits",
        metavar="FILE",
        help="the machine's limits from this file (python -m bench.limits's JSON) instead of measuring them",
    )
    executor.add_flags(p)
    return p


@dataclass(frozen=True)
class Common:
    """The settings every suite's command line shares, as values: parsed (main) or given (run_all.py)."""

    preset: str | None = None
    device: str = "auto"
    threads: int | None = None
    out: str | None = None
    resume: bool = False
    shard: tuple | None = None  # (I, N)
    list: bool = False
    time_limit: float | None = None
    executor: str = "local"
    ray_address: str | None = None
    cell_timeout: float | None = None
    limits: str | None = None  # a limits file (--limits): measured once elsewhere, or planted by the tests

    def argv(self):
        """The flags that give these settings: the command line env.json records for a suite run_all.py ran."""
        argv = []
        names = ("out", "device", "preset", "threads", "resume", "shard", "list", "time_limit", "limits", *_EXECUTOR)
        for name in names:
            value, flag = getattr(self, name), "--" + name.replace("_", "-")
            if value is True:
                argv.append(flag)
            elif value not in (None, False) and (name, value) != ("executor", "local"):
                argv += [flag, "/".join(map(str, value)) if name == "shard" else format_value(value)]
        return argv


_EXECUTOR = ("executor", "ray_address", "cell_timeout")


@dataclass(frozen=True)
class RunSpec:
    """One suite's run, resolved and checked: its cells (this shard's), its preset (the timing rules), the device,
    the run directory and where the cells run; what a suite's main(argv) parses and run_all.py builds."""

    suite: str
    common: Common
    device: torch.device
    preset: config.Preset
    cells: tuple
    out_dir: Path
    placement: executor.Placement
    command: tuple  # the command line env.json records
    settings: dict  # the values env.json records, by flag
    deadline: float | None = None  # time.monotonic() after which no cell starts: set when the run starts (launch)
    limits: dict | None = None  # the machine's limits (bench.core.limits): read from --limits, or set by launch

    @property
    def dtypes(self):
        """The dtypes of the spec's cells that have one, sorted: the matrix-product rates its limits need."""
        return tuple(sorted({cell.dtype for cell in self.cells if getattr(cell, "dtype", None)}))

    @property
    def run_id(self):
        """The run directory's name, so results/<run_id>/ and plots/<run_id>/ always match."""
        return self.out_dir.resolve().name

    @property
    def sweep_args(self):
        """bench.core.sweep.Sweep's keyword arguments for this run."""
        return dict(out_dir=self.out_dir, run_id=self.run_id, device=self.device, resume=self.common.resume)


def resolve_device(text):
    usage.choice(text, "device", config.DEVICES)
    if text == "auto":
        text = "cuda" if torch.cuda.is_available() else "cpu"
    if text == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available")
    return torch.device(text)


def device_for(text, dtypes):
    """The device of --device `text` for cells of `dtypes` (None: the preset's): float16 autocast needs CUDA."""
    device = resolve_device(text)
    if "float16" in (dtypes or ()) and device.type != "cuda":
        raise UsageError("--dtype float16 needs a CUDA device; use bfloat16 on CPU")
    return device


def shard(cells, spec):
    """The I-th of N round-robin slices: deterministic, disjoint, and balanced across lengths."""
    if spec is None:
        return cells
    index, count = spec
    return [cell for i, cell in enumerate(cells) if i % count == index]


def build(suite, common, flags, presets, cells, *, shard=shard, kind=RunSpec):
    """A suite's spec (a `kind` of RunSpec) from the common settings and its own flags' values
    (`flags`, None where unset): cells(preset, **flags) builds the cells, shard(cells, (I, N)) slices them. Checks
    what a command line can get wrong and writes nothing: bad input raises UsageError (or the registry's ValueError)."""
    device = device_for(common.device, flags.get("dtype"))
    placement = executor.Placement(
        **{name: getattr(common, name) for name in _EXECUTOR}, threads=common.threads, gpus=int(device.type == "cuda")
    )
    name = common.preset or ("full" if device.type == "cuda" else "quick")
    if name not in presets:
        raise UsageError(f"unknown preset {name!r}; valid presets: {', '.join(presets)}")
    spec = kind(
        suite=suite,
        common=common,
        device=device,
        preset=presets[name],
        cells=tuple(shard(cells(presets[name], **flags), common.shard)),
        out_dir=Path(common.out) if common.out else RESULTS_DIR / new_run_id(),
        placement=placement,
        command=(f"python -m bench.{suite}", *common.argv()),
        settings={**asdict(common), **flags},
    )
    if common.limits and suite in machine.SUITES:
        return replace(spec, limits={**machine.read(common.limits, spec.dtypes), "source": common.limits})
    return spec


def main(p, argv, make_spec, run):
    """A suite's main: its command line (sys.argv's when None) parsed, then launched with run."""
    argv = sys.argv[1:] if argv is None else list(argv)
    return launch(lambda: parse(p, argv, make_spec), run)


def parse(p, argv, make_spec):
    """A command line's spec: make_spec(Common, **the suite's own flags), recording the command line and its
    values for env.json. Bad input raises UsageError."""
    args = vars(p.parse_args(argv))
    settings = dict(args)
    common = Common(**{f.name: args.pop(f.name) for f in fields(Common)})
    return replace(make_spec(common, **args), command=(p.prog, *argv), settings=settings)


def launch(build_spec, run):
    """A suite's run: build_spec() -> its RunSpec; its cells listed (--list), or its run directory checked, env.json
    recorded and run(spec) -> the path of its main CSV, printed. Returns the exit code: 2 on bad input."""
    try:
        spec = build_spec()
        if spec.common.list:
            for cell in spec.cells:
                print(" ".join(f"{k}={v}" for k, v in cell_fields(cell).items()))
            print(f"{len(spec.cells)} cells", file=sys.stderr)
            return 0
        check_run_dir(spec)
    except (UsageError, ResultsError, ValueError) as error:  # ValueError: the registry's option checks
        return fail(error)
    if spec.common.threads:
        torch.set_num_threads(spec.common.threads)
    if spec.common.time_limit:
        spec = replace(spec, deadline=time.monotonic() + spec.common.time_limit)
    spec = with_limits(spec)
    record_env(spec)
    try:
        path = run(spec)
    except ResultsError as error:  # e.g. a CSV whose header is another version's: nothing was appended to it
        return fail(error)
    print(path)
    return 0


def cell_fields(cell):
    """A cell's settings as the strings --list prints (a tuple, such as eval_lengths, comma-joined)."""
    return {
        k: ",".join(map(format_value, v)) if isinstance(v, (tuple, list)) else format_value(v)
        for k, v in cell.__dict__.items()
        if v is not None
    }


def check_run_dir(spec):
    """Everything about the run directory checked before anything is written: a CSV of the suite already there
    needs --resume, and a malformed one, or a malformed in-flight marker, stops the run (ResultsError)."""
    for name in (name for name, t in TABLES.items() if t.suite == spec.suite):
        if (spec.out_dir / name).exists() and not spec.common.resume:
            raise UsageError(f"{spec.out_dir / name} exists; pass --resume to continue it, or another --out")
        if (spec.out_dir / name).exists():
            read_rows(spec.out_dir / name)
    for marker in spec.out_dir.glob("*.inflight.json") if spec.out_dir.is_dir() else ():
        pending_in_flight(spec.out_dir, stem=marker.name.removesuffix(".inflight.json"))
    ensure_writable_dir(spec.out_dir)


def with_limits(spec):
    """The spec with the machine's limits, for a suite whose rows are set against them (bench.core.limits.SUITES):
    --limits FILE's (read by build), else the run directory's (env.json's `limits`: measured once per run
    directory, by its first such suite), else measured now, in the run's threads (at most BUDGET_S); none under
    the smoke preset. A measurement that fails leaves the rows' floor columns empty, and the run goes on."""
    if spec.suite not in machine.SUITES or spec.limits is not None:
        return spec
    recorded = recorded_limits(spec.out_dir)
    if recorded is not None and machine.problem(recorded, spec.dtypes) is None:
        return replace(spec, limits=recorded)
    if spec.preset.name == "smoke" or not spec.cells:
        return spec
    measured, failed = machine.measure_for_run(spec.device, spec.dtypes)
    if failed:
        print(f"limits: not measured ({failed}); no floor columns", file=sys.stderr)
        return spec
    return replace(spec, limits=measured)


def recorded_limits(run_dir):
    """env.json's `limits` in run_dir, or None."""
    try:
        return read_env(run_dir).get("limits")
    except (AttributeError, ValueError):  # no env.json, or an unreadable one
        return None


def record_env(spec):
    """env.json beside the CSVs: the environment, plus each suite's resolved config and command line, and the
    machine's limits (the spec's, else those recorded before: kept)."""
    try:
        suites = dict(read_env(spec.out_dir)["config"]["suites"])
    except (TypeError, KeyError, ValueError):  # none, or unreadable: replaced, never appended to
        suites = {}
    suites[spec.suite] = {
        "device": str(spec.device),
        "preset": spec.preset.describe(),
        "args": {
            k: [format_value(i) for i in v] if isinstance(v, (list, tuple)) else format_value(v)
            for k, v in spec.settings.items()
        },
        "command": shlex.join(spec.command),
    }
    limits = spec.limits if spec.limits is not None else recorded_limits(spec.out_dir)
    extra = {} if limits is None else {"limits": limits}
    write_env(spec.out_dir, argv=spec.command, config={"run_id": spec.run_id, "suites": suites}, **extra)
