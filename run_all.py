#!/usr/bin/env python3
"""GSS Bench in one command: the device's preset (quick on CPU, full on CUDA) through every suite into
one fresh run directory results/<run_id>/, then the figures (plots/<run_id>/) and REPORT.md.

    python run_all.py                                   # everything, default preset
    python run_all.py --only scaling                    # one suite
    python run_all.py --out results/X --resume          # continue a killed run
    python run_all.py --only scaling --check results/baselines/cpu-quick --relative   # CI gate
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run from any working directory

from bench import decode, env, numerics, perplexity, plots, profiling, regress, scaling, usage
from bench.results import RESULTS_DIR, new_run_id
from bench.usage import Parser, UsageError, fail

SUITES = {"scaling": scaling.main, "perplexity": perplexity.main, "profiling": profiling.main,  # in this order
          "decode": decode.main, "numerics": numerics.main}
STEPS = (*SUITES, "plots")  # plots: the figures and REPORT.md from the CSVs


def make_parser():
    p = Parser(prog="python run_all.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", help="quick (CPU default) or full (CUDA default); smoke for a seconds-long check")
    p.add_argument("--out", help="run directory (default: a fresh results/<run_id>/)")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--only", help=f"comma-separated steps, from: {', '.join(STEPS)}")
    p.add_argument("--check", metavar="BASELINE_DIR", help="then gate the run against a baseline run (bench.regress)")
    p.add_argument("--relative", action="store_true", help="with --check: compare times as ratios between models")
    p.add_argument("--tolerance", help="with --check: relative time tolerance (default: bench.regress's per device)")
    return p


def parse(argv):
    args = make_parser().parse_args(argv)
    args.only = usage.parse_list(args.only, "only", lambda s: usage.choice(s, "step", STEPS)) \
        if args.only is not None else STEPS
    if args.tolerance is not None:
        try:
            args.tolerance = float(args.tolerance)
        except ValueError:
            raise UsageError(f"--tolerance: {args.tolerance!r} is not a number") from None
        if not 0 < args.tolerance < float("inf"):
            raise UsageError(f"--tolerance: {args.tolerance} is not a positive number")
    if args.check and not Path(args.check).is_dir():
        raise UsageError(f"--check {args.check}: no such baseline run directory")
    if args.resume and not args.out:
        raise UsageError("--resume needs --out: the run directory to continue")
    return args


def main(argv=None):
    try:
        args = parse(sys.argv[1:] if argv is None else argv)
    except UsageError as error:
        return fail(error)
    out_dir = Path(args.out) if args.out else RESULTS_DIR / new_run_id()
    common = ["--out", str(out_dir), "--device", args.device]
    common += ["--preset", args.preset] if args.preset else []
    common += ["--resume"] if args.resume else []
    for name in SUITES:
        if name in args.only:
            print(f"== {name}", file=sys.stderr, flush=True)
            code = SUITES[name](common)
            if code:
                return code
    if any(name in args.only for name in SUITES):
        env.record_command(out_dir, ["run_all.py", *(sys.argv[1:] if argv is None else argv)])
    print(f"run directory: {out_dir}")
    if "plots" in args.only:
        print("== plots and report", file=sys.stderr, flush=True)
        code = plots.main([str(out_dir)])
        if code:
            return code
    if args.check:
        return check(args, out_dir, ["--device", args.device, *(["--preset", args.preset] if args.preset else [])])
    return 0


def check(args, out_dir, suite_flags):
    """The regression gate; when it flags times alone, those cells (and their reference) are measured once
    more and gated again: on a shared machine one disturbed median is not a regression, a slow-down that
    reproduces is."""
    gate = ["--baseline", args.check, *(["--relative"] * args.relative),
            *(["--tolerance", str(args.tolerance)] if args.tolerance else [])]
    print(f"== regression gate against {args.check}", file=sys.stderr, flush=True)
    code, findings = regress.run([*gate, "--current", str(out_dir)])
    flagged = findings.time_only_regressions() if code == 1 and "scaling" in args.only else []
    if not flagged:
        return code
    again = out_dir / "remeasured"
    print(f"== {len(flagged)} cell(s) flagged for time alone: measuring them again into {again}", file=sys.stderr,
          flush=True)
    for key_row in flagged:
        flags = scaling.flags_of(key_row, also=[regress.REFERENCE_MODEL] if args.relative else [])
        resume = ["--resume"] if (again / scaling.CSV).exists() else []
        code = scaling.main([*flags, *suite_flags, "--out", str(again), *resume])
        if code:
            return code
    print(f"== regression gate of the re-measured cells against {args.check}", file=sys.stderr, flush=True)
    return regress.main([*gate, "--current", str(again), "--no-one-sided"])


if __name__ == "__main__":
    sys.exit(main())
