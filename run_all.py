#!/usr/bin/env python3
"""GSS Bench in one command: the device's preset (quick on CPU, full on CUDA) through every suite into
one fresh run directory results/<run_id>/, then the figures (plots/<run_id>/) and REPORT.md.

    python run_all.py                                   # everything, default preset
    python run_all.py --only scaling                    # one suite
    python run_all.py --out results/X --resume          # continue a killed run
    python run_all.py --only scaling --check results/baselines/cpu-quick --relative   # CI gate
    python run_all.py --preset gpu-check --device cpu --dry-run   # the GPU command's steps and device time
    python run_all.py --preset gpu-check --out results/<gpu> --pack <gpu>.tar.gz   # the GPU command

--preset gpu-check (one CUDA GPU, one command within GPU_BUDGET_S, docs/gpu.md): the CUDA paths are checked first
(bench.core.cuda_checks, recorded in env.json) and the machine's limits measured once (RUN/limits.json); then each
step runs under a time limit from its estimated device time (bench.core.estimate): every suite, the scaling suite
a second time over its short cells into RUN/repeat/ (the two passes' time-ratio spread, which the CUDA time
tolerance is three times, into RUN/ratio_spread.json), bench.ab.power's A/A and 10% planted runs into
RUN/ab-power/, and the KV-cache checks into RUN/kv_checks.json (bench.gpu_steps). Figures are drawn elsewhere,
from the packed run.
"""

import contextlib
import sys
import tarfile
import time
import traceback
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run from any working directory

from bench import decode, gpu_steps, numerics, perplexity, plots, profiling, regress, scaling, usage
from bench.core import cli, config, cuda_checks, env, estimate, executor, limits
from bench.gpu_steps import REPEAT
from bench.results import RESULTS_DIR, atomic_path, new_run_id
from bench.schema import REFERENCE_MODEL
from bench.usage import Parser, UsageError, fail

SUITES = {
    "scaling": scaling,
    "perplexity": perplexity,
    "profiling": profiling,
    "decode": decode,  # in this order
    "numerics": numerics,
}
STEPS = (*SUITES, *gpu_steps.STEPS, "plots")  # plots: the figures and REPORT.md from the CSVs
GPU_CHECK = "gpu-check"
GPU_BUDGET_S = 420  # the whole GPU command: checks, limits, suites, the second scaling pass, A/A and plant, KV checks
GPU_CHECK_DEVICES = ("cuda",)


def make_parser():
    p = Parser(prog="python run_all.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", help="quick (CPU default) or full (CUDA default); smoke for a seconds-long check")
    p.add_argument("--out", help="run directory (default: a fresh results/<run_id>/)")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument(
        "--only",
        type=usage.list_of(usage.one_of(STEPS, "step"), "only"),
        help=f"comma-separated steps, from: {', '.join(STEPS)} (default: every suite and plots; with --preset "
        f"{GPU_CHECK}, every step but plots, which any machine draws from the packed run; "
        f"{' and '.join(gpu_steps.STEPS)} are {GPU_CHECK}'s)",
    )
    p.add_argument("--check", metavar="BASELINE_DIR", help="then gate the run against a baseline run (bench.regress)")
    p.add_argument("--relative", action="store_true", help="with --check: compare times as ratios between models")
    p.add_argument(
        "--tolerance",
        type=_tolerance,
        help="with --check: relative time tolerance (default: bench.regress's per device)",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="build every cell, rehearse the CUDA checks on this machine, "
        "print the estimated device time of one H100/H200; measures nothing",
    )
    p.add_argument("--pack", metavar="PATH", help="then pack the run directory into one .tar.gz at PATH")
    p.add_argument(
        "--limits",
        metavar="FILE",
        help="the machine's limits from this file (python -m bench.limits's JSON) instead of measuring them once "
        "for the run directory",
    )
    executor.add_flags(p)
    return p


def _tolerance(text):
    try:
        tolerance = float(text)
    except ValueError:
        raise UsageError(f"--tolerance: {text!r} is not a number") from None
    if not 0 < tolerance < float("inf"):
        raise UsageError(f"--tolerance: {tolerance} is not a positive number")
    return tolerance


def parse(argv):
    """The command line, its values converted and checked together (UsageError)."""
    args = make_parser().parse_args(argv)
    if args.only is None:
        gpu = args.preset == GPU_CHECK
        args.only = tuple(s for s in STEPS if (s != "plots" if gpu else s not in gpu_steps.STEPS))
    elif args.preset != GPU_CHECK and (gpu_only := [s for s in args.only if s in gpu_steps.STEPS]):
        raise UsageError(f"--only {','.join(gpu_only)}: a step of --preset {GPU_CHECK} only")
    if args.check and not Path(args.check).is_dir():
        raise UsageError(f"--check {args.check}: no such baseline run directory")
    if args.resume and not args.out:
        raise UsageError("--resume needs --out: the run directory to continue")
    if args.pack and not Path(args.pack).resolve().parent.is_dir():
        raise UsageError(f"--pack {args.pack}: no such directory to write the archive into")
    if args.limits:
        limits.read(args.limits)  # a malformed file stops the run before anything is written
    executor.Placement(args.executor, args.ray_address, args.cell_timeout)  # checked as every suite checks it
    if args.executor == "ray" and args.preset == GPU_CHECK:
        raise UsageError("--preset gpu-check runs on one GPU with the local executor (docs/gpu.md)")
    return args


def main(argv=None):
    try:
        args = parse(sys.argv[1:] if argv is None else argv)
    except UsageError as error:
        return fail(error)
    out_dir = Path(args.out) if args.out else RESULTS_DIR / new_run_id()
    placement = {name: getattr(args, name) for name in ("executor", "ray_address", "cell_timeout")}
    common = cli.Common(
        preset=args.preset, device=args.device, out=str(out_dir), resume=args.resume, limits=args.limits, **placement
    )
    try:  # a limits file must hold a rate for each dtype its suites use: checked before any suite runs
        if args.limits:
            limit_dtypes(args, common)
    except UsageError as error:
        return fail(error)
    if args.dry_run:
        return dry_run(args, common)
    if args.preset == GPU_CHECK:
        code = gpu_check(args, out_dir, common)
    else:
        code = 0
        with executor.session(args.ray_address) if args.executor == "ray" else contextlib.nullcontext():
            for name in (name for name in SUITES if name in args.only):
                code = run_step(name, common)
                if code:
                    break
    if code not in (0, 1):
        return code
    if any(name in args.only for name in SUITES):
        env.record_command(out_dir, ["run_all.py", *(sys.argv[1:] if argv is None else argv)])
    print(f"run directory: {out_dir}")
    if "plots" in args.only:
        print("== plots and report", file=sys.stderr, flush=True)
        code = plots.main([str(out_dir)])
        if code:
            return code
    if args.pack:
        print(f"packed: {pack(out_dir, args.pack)}")
    if args.check:  # a failed CUDA check (1) fails the run even when the gate passes
        return check(args, out_dir) or code
    return code


def run_step(name, common):
    """One suite on the run's common settings (cli.launch): its exit code."""
    print(f"== {name}", file=sys.stderr, flush=True)
    suite = SUITES[name]
    return cli.launch(lambda: suite.make_spec(common), suite.run)


def planned(args, common):
    """The Steps of the requested suites (gpu_steps.Step); gpu-check's with the GPU command's own steps around them.
    Bad input raises UsageError."""
    steps = []
    for name in (name for name in SUITES if name in args.only):
        spec = SUITES[name].make_spec(common)
        seconds = estimate.suite_seconds(name, spec.cells, spec.preset.timing)
        steps.append(
            gpu_steps.Step(name, len(spec.cells), seconds, lambda settings, name=name: run_step(name, settings))
        )
    if args.preset != GPU_CHECK:
        return steps
    if "scaling" in args.only:
        spec = scaling.make_spec(common)
        cells = gpu_steps.repeat_cells(spec.cells)
        seconds = estimate.suite_seconds("scaling", cells, spec.preset.timing)
        steps.append(gpu_steps.Step(f"scaling ({REPEAT})", len(cells), seconds, lambda s: run_repeat(s, cells)))
    return [*gpu_steps.first_steps(args.only, bool(args.limits)), *steps, *gpu_steps.last_steps(args.only)]


def limit_dtypes(args, common):
    """The dtypes of the requested suites whose rows are set against the machine's limits (bench.core.limits.SUITES),
    sorted: their specs made, which reads and checks a --limits file for each (UsageError)."""
    return sorted({d for name in limits.SUITES if name in args.only for d in SUITES[name].make_spec(common).dtypes})


def run_repeat(settings, cells):
    """The scaling suite again over `cells` (gpu_steps.repeat_cells), into RUN/repeat/."""
    print(f"== scaling ({REPEAT})", file=sys.stderr, flush=True)
    settings = replace(settings, out=str(Path(settings.out) / REPEAT))
    return cli.launch(lambda: replace(scaling.make_spec(settings), cells=tuple(cells)), scaling.run)


def dry_run(args, common):
    """Every cell built, the CUDA checks' logic rehearsed on this machine, the device time estimated."""
    try:
        steps = planned(args, common)
    except UsageError as error:
        return fail(error)
    print(f"{'step':<20}{'cells':>7}{'estimated s':>13}   (one H100/H200; bench.core.estimate)")
    for step in steps:
        print(f"{step.name:<20}{step.cells or '':>7}{step.seconds:>13.0f}")
    total = sum(step.seconds for step in steps)
    budget = f" of the {GPU_BUDGET_S} s budget" if args.preset == GPU_CHECK else ""
    print(f"{'total':<20}{sum(step.cells for step in steps):>7}{total:>13.0f}{budget}")
    problems = cuda_checks.rehearse()
    for problem in problems:
        print(f"CUDA check rehearsal: {problem}", file=sys.stderr)
    print("CUDA checks rehearsed on the CPU: " + ("FAILED" if problems else "logic as required"))
    return 1 if problems else 0


def gpu_check(args, out_dir, common):
    """The GPU command (planned): the CUDA checks, the limits, then each step under a time limit within
    GPU_BUDGET_S (its estimate's twice plus 15 s, less what the steps after it need), then the scaling passes'
    spread. Returns 0; 1 when a CUDA check failed or a step broke (the others are still measured and recorded, the
    failures listed in env.json); 2 on bad input."""
    try:
        device = cli.resolve_device(args.device)
        if device.type not in GPU_CHECK_DEVICES:
            raise UsageError(f"--preset {GPU_CHECK} measures a CUDA device; on a CPU, --dry-run rehearses it")
        steps = planned(args, common)
    except UsageError as error:
        return fail(error)
    start = time.monotonic()
    report, failures = cuda_checks.check(device)
    for failure in failures:
        print(f"CUDA check FAILED: {failure}", file=sys.stderr, flush=True)
    walls, time_limits = {"cuda checks": time.monotonic() - start}, {}
    if any(step.name == "limits" for step in steps):
        common = gpu_steps.measured_limits(common, device, limit_dtypes(args, common), failures)
        walls["limits"] = time.monotonic() - start - walls["cuda checks"]
    for i, step in enumerate(steps):
        if step.run is None:  # the checks and the limits, run above
            continue
        reserve = sum(s.seconds for s in steps[i + 1 :])
        left = GPU_BUDGET_S - (time.monotonic() - start) - reserve
        time_limits[step.name] = max(10.0, min(2 * step.seconds + 15, left))
        began = time.monotonic()
        try:  # one GPU lease, one run: a step that breaks is reported, and the others still measure
            code = step.run(replace(common, time_limit=round(time_limits[step.name])))  # whole seconds, as recorded
        except Exception:
            traceback.print_exc()
            code = f"crashed: {traceback.format_exc(limit=-1).strip().splitlines()[-1]}"
        walls[step.name] = time.monotonic() - began
        if code:
            failures.append(f"{step.name}: exit code {code}" if isinstance(code, int) else f"{step.name}: {code}")
    report.update(failures=failures, nvidia_smi_after=cuda_checks.nvidia_smi())
    plan = dict(
        budget_s=GPU_BUDGET_S,
        estimate_s={s.name: s.seconds for s in steps},
        time_limit_s=time_limits,
        wall_s=walls,
        planned_cells={s.name: s.cells for s in steps},
    )
    env.record(out_dir, cuda_check=report, gpu_check=plan)
    return gpu_steps.spread(out_dir, scaling.CSV) or (1 if failures else 0)


def check(args, out_dir):
    """The regression gate; when it flags times alone, those cells (and their reference) are measured once
    more and gated again: on a shared machine one disturbed median is not a regression, a slow-down that
    reproduces is."""
    print(f"== regression gate against {args.check}", file=sys.stderr, flush=True)
    code, gate = gated(args, out_dir)
    flagged = gate.time_only_regressions() if code == 1 and "scaling" in args.only else []
    if not flagged:
        return code
    again = out_dir / "remeasured"
    print(
        f"== {len(flagged)} cell(s) flagged for time alone: measuring them again into {again}",
        file=sys.stderr,
        flush=True,
    )
    cells = []
    for key_row in flagged:
        cells.append(config.Cell.from_key_row(key_row))
        if args.relative:
            cells.append(cells[-1].of_model(REFERENCE_MODEL))
    common = cli.Common(preset=args.preset, device=args.device, out=str(again), resume=(again / scaling.CSV).exists())
    recorded = cli.recorded_limits(out_dir)  # the run's own, not measured again: the cells' floors as in the run

    def spec():
        return replace(scaling.make_spec(common), cells=tuple(config.ordered(cells)), limits=recorded)

    code = cli.launch(spec, scaling.run)
    if code:
        return code
    print(f"== regression gate of the re-measured cells against {args.check}", file=sys.stderr, flush=True)
    return gated(args, again, one_sided=False)[0]


def gated(args, current, *, one_sided=True):
    """bench.regress's verdict on `current` against --check, printed: (exit code, the Gate; None when the runs
    cannot be compared, exit code 2)."""
    try:
        gate = regress.compare(args.check, current, relative=args.relative, time_tol=args.tolerance)
    except UsageError as error:  # a CompareError too
        return fail(error), None
    print(regress.render(gate, one_sided=one_sided))
    return int(any(f.kind == "regression" for f in gate.findings)), gate


def pack(run_dir, path):
    """The whole run directory as one .tar.gz at `path`, its members under the directory's name; written
    beside `path` and renamed, so a reader never finds a torn archive."""
    with atomic_path(path) as tmp, tarfile.open(tmp, "w:gz") as archive:
        archive.add(run_dir, arcname=Path(run_dir).resolve().name)
    return Path(path)


if __name__ == "__main__":
    sys.exit(main())
