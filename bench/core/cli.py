"""What every suite's command line shares: flags, the device and preset, the run directory, env.json,
sharding, and the rule that bad input is one line on stderr and exit code 2 (bench.usage)."""

import json
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

import models
from bench import usage
from bench.core import config
from bench.core.env import write_env
from bench.results import (
    ENV_FILE,
    RESULTS_DIR,
    ResultsError,
    ensure_writable_dir,
    format_value,
    new_run_id,
    pending_in_flight,
    read_rows,
)
from bench.schema import TABLES
from bench.usage import Parser, UsageError, fail

# The value flags suites share, with their help; a suite names those it takes.
FLAGS = {
    "--models": f"comma-separated, from: {', '.join(models.LM_NAMES)} (LM-level, {', '.join(models.LM_SPECS)}: "
    "trainings and decoding only)",
    "--seq-lens": "comma-separated positive integers",
    "--kernel-n": "DSS state sizes kernel_N (GSS family)",
    "--kernel-h": "DSS channels kernel_H (GSS family, conv)",
    "--lambda-imag-exp": "true,false (GSS family)",
    "--conv-kernel": "taps (conv, gss-direct); 'full' = seq_len taps (gss-direct)",
    "--modes": "fwd,fwdbwd",
    "--dtype": "float32, bfloat16 (autocast), float16 (autocast, CUDA)",
    "--batch": "batch size",
    "--dim": "model width",
    "--depth": "layers",
}
LAYER_FLAGS = (
    "--models",
    "--seq-lens",
    "--kernel-n",
    "--kernel-h",
    "--lambda-imag-exp",
    "--conv-kernel",
    "--modes",
    "--dtype",
    "--batch",
    "--dim",
)  # and --compile: the scaling and profiling suites' layer cells


def parser(module_doc, prog, flags=(), **own):
    """A suite's parser: its description is the first paragraph of its module docstring; the common flags, the
    shared `flags` it takes (FLAGS), and its own flags `own` (name -> help; a shared flag's help may be
    replaced there too)."""
    p = Parser(prog=prog, description=module_doc.split("\n\n")[0])
    p.add_argument("--preset", help="named preset (default: quick on CPU, full on CUDA)")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    p.add_argument("--threads", help="torch CPU threads (default: torch's choice)")
    p.add_argument("--out", help="run directory (default: results/<run_id>/)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out, skipping recorded cells")
    p.add_argument("--shard", help="I/N: run the I-th of N deterministic slices of the cells")
    p.add_argument("--list", action="store_true", help="print the cells and exit")
    p.add_argument(
        "--time-limit",
        metavar="SECONDS",
        help="start no cell after this many seconds (the cells left are not recorded: --resume runs them)",
    )
    own = {"--" + name.replace("_", "-"): text for name, text in own.items()}
    for flag in flags:
        p.add_argument(flag, help=own.pop(flag, FLAGS[flag]))
    for flag, text in own.items():
        p.add_argument(flag, help=text)
    if flags == LAYER_FLAGS:
        p.add_argument("--compile", action="store_true", help="torch.compile the layer")
    return p


def convert_lists(args, **parsers):
    """Each named flag's comma-separated text -> a tuple of parse(item, flag) values; unset flags stay None."""
    for name, parse in parsers.items():
        raw = getattr(args, name, None)
        if raw is not None:
            flag = name.replace("_", "-")
            setattr(args, name, usage.parse_list(raw, flag, lambda item, parse=parse, flag=flag: parse(item, flag)))


def convert_ints(args, *names):
    """Each named flag's text -> a positive int; unset flags stay None."""
    for name in names:
        if getattr(args, name, None) is not None:
            setattr(args, name, usage.positive_int(getattr(args, name), name.replace("_", "-")))


def convert_flags(args):
    """Turn the raw strings of the shared flags into values, or raise UsageError naming the flag."""
    convert_lists(
        args,
        models=lambda t, n: usage.choice(t, "model", models.LM_NAMES),
        seq_lens=usage.positive_int,
        kernel_n=usage.positive_int,
        kernel_h=usage.positive_int,
        lambda_imag_exp=usage.boolean,
        conv_kernel=config.conv_kernel,
        modes=lambda t, n: usage.choice(t, "mode", ("fwd", "fwdbwd")),
        dtype=lambda t, n: usage.choice(t, "dtype", config.DTYPES),
    )
    convert_ints(args, "batch", "dim", "threads")
    if getattr(args, "time_limit", None) is not None:
        args.time_limit = usage.positive_number(args.time_limit, "time-limit")
    args.shard = usage.parse_shard(args.shard) if args.shard is not None else None
    return args


def resolve_device(text):
    usage.choice(text, "device", config.DEVICES)
    if text == "auto":
        text = "cuda" if torch.cuda.is_available() else "cpu"
    if text == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available")
    return torch.device(text)


def shard(cells, spec):
    """The I-th of N round-robin slices: deterministic, disjoint, and balanced across lengths."""
    if spec is None:
        return cells
    index, count = spec
    return [cell for i, cell in enumerate(cells) if i % count == index]


def cell_fields(cell):
    """A cell's settings as the strings --list prints (a tuple, such as eval_lengths, comma-joined)."""
    return {
        k: ",".join(map(format_value, v)) if isinstance(v, (tuple, list)) else format_value(v)
        for k, v in cell.__dict__.items()
        if v is not None
    }


@dataclass
class Context:
    """What a suite's run gets: the device, the preset, the run directory and id, and the cells (this shard's)."""

    device: torch.device
    preset: config.Preset
    out_dir: Path
    run_id: str
    cells: list
    deadline: float | None = None  # time.monotonic() after which no cell starts (--time-limit)


def resolve(args, *, presets, build_cells, convert=None, shard=shard):
    """The flags converted and checked; returns (device, preset, this shard's cells). Writes nothing."""
    convert_flags(args)
    if convert is not None:
        convert(args)
    device = resolve_device(args.device)
    if args.dtype and "float16" in args.dtype and device.type != "cuda":
        raise UsageError("--dtype float16 needs a CUDA device; use bfloat16 on CPU")
    name = args.preset or ("full" if device.type == "cuda" else "quick")
    preset = presets.get(name) or _unknown_preset(name, presets)
    return device, preset, shard(build_cells(args, preset), args.shard)


def plan(p, argv, **how):
    """A suite's (preset, cells) for a command line, validated, nothing written (run_all.py --dry-run); `how`
    as resolve takes it. Bad input raises UsageError."""
    _, preset, cells = resolve(p.parse_args(list(argv)), **how)
    return preset, cells


def prepare(args, *, presets, csv_names, build_cells, convert=None, shard=shard):
    """Validate everything before anything is written; returns the run context (or None for --list).
    csv_names: the suite's CSVs; a run directory holding one already needs --resume."""
    device, preset, cells = resolve(args, presets=presets, build_cells=build_cells, convert=convert, shard=shard)
    if args.list:
        for cell in cells:
            print(" ".join(f"{k}={v}" for k, v in cell_fields(cell).items()))
        print(f"{len(cells)} cells", file=sys.stderr)
        return None
    # The run id is the run directory's name, so results/<run_id>/ and plots/<run_id>/ always match.
    out_dir = Path(args.out) if args.out else RESULTS_DIR / new_run_id()
    for name in csv_names:
        if (out_dir / name).exists() and not args.resume:
            raise UsageError(f"{out_dir / name} exists; pass --resume to continue it, or another --out")
        if (out_dir / name).exists():
            read_rows(out_dir / name)  # a malformed CSV stops here (ResultsError), before anything is written
    for marker in out_dir.glob("*.inflight.json") if out_dir.is_dir() else ():
        pending_in_flight(out_dir, stem=marker.name.removesuffix(".inflight.json"))  # likewise
    ensure_writable_dir(out_dir)
    if args.threads:
        torch.set_num_threads(args.threads)
    deadline = time.monotonic() + args.time_limit if args.time_limit else None
    return Context(
        device=device, preset=preset, out_dir=out_dir, run_id=out_dir.resolve().name, cells=cells, deadline=deadline
    )


def _unknown_preset(name, presets):
    raise UsageError(f"unknown preset {name!r}; valid presets: {', '.join(presets)}")


def record_env(ctx, args, argv, *, suite):
    """env.json beside the CSVs: the environment, plus each suite's resolved config and command line."""
    path = ctx.out_dir / ENV_FILE
    try:
        suites = json.loads(path.read_text())["config"]["suites"] if path.exists() else {}
    except (ValueError, KeyError, TypeError):
        suites = {}  # an unreadable env.json is replaced, never appended to
    settings = {
        k: [format_value(i) for i in v] if isinstance(v, (list, tuple)) else format_value(v)
        for k, v in vars(args).items()
    }
    suites[suite] = {
        "device": str(ctx.device),
        "preset": ctx.preset.describe(),
        "args": settings,
        "command": shlex.join(argv),
    }
    write_env(ctx.out_dir, argv=argv, config={"run_id": ctx.run_id, "suites": suites})


def run_suite(p, argv, *, presets, build_cells, run, convert=None, shard=shard):
    """A suite's main: parse, validate (exit 2 on bad input), run(args, ctx) -> the path of its main CSV,
    print where the rows are. The suite's CSVs are the bench.schema tables of its name (the prog's module)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    suite = p.prog.split()[-1].removeprefix("bench.")
    csv_names = [name for name, t in TABLES.items() if t.suite == suite]
    try:
        args = p.parse_args(argv)
        ctx = prepare(args, presets=presets, csv_names=csv_names, build_cells=build_cells, convert=convert, shard=shard)
    except (UsageError, ResultsError, ValueError) as error:  # ValueError: the registry's option checks
        return fail(error)
    if ctx is None:
        return 0
    record_env(ctx, args, [p.prog, *argv], suite=suite)
    try:
        path = run(args, ctx)
    except ResultsError as error:  # e.g. a CSV whose header is another version's: nothing was appended to it
        return fail(error)
    print(path)
    return 0
