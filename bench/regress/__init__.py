"""Performance regression gate: a run against a baseline run, exact where the numbers are deterministic,
noise-aware where they are not.

    python -m bench.regress --baseline results/baselines/cpu-quick --current results/<run_id> --relative

Exit code 0: no regression; 1: at least one; 2: the runs cannot be compared (missing or malformed
files, another device class, no cell in common). Reads CSVs only (pandas; no torch).

The gate's inputs are read and checked in load.py, compared in checks.py; here the two runs are put through the
checks (compare), two identical runs give the spread a tolerance is derived from (ratio_spread), and both are
rendered and run as the command.
"""

import math
from pathlib import Path

from bench.regress.checks import (
    ACCURACY_TOLERANCE,
    BPB_TOLERANCE,
    MEM_TOLERANCE,
    MIN_TIMED_MS,
    TIME_TOLERANCE,
    Gate,
)
from bench.regress.load import VALUE_COLUMNS, CompareError, cpu_model, load, runs_class
from bench.schema import REFERENCE_MODEL
from bench.usage import Parser, UsageError, fail


def compare(
    baseline, current, *, relative=False, time_tol=None, mem_tol=None, bpb_tol=BPB_TOLERANCE, acc_tol=ACCURACY_TOLERANCE
):
    """The gate's findings; raises CompareError when the runs cannot be compared."""
    if missing := [d for d in (baseline, current) if not Path(d).is_dir()]:
        raise CompareError(f"not a run directory: {missing[0]}")
    names = [n for n in VALUE_COLUMNS if (Path(current) / n).exists()]
    if not names:
        raise CompareError(f"{current} holds none of {', '.join(VALUE_COLUMNS)}")
    tables = {n: (load(baseline, n), load(current, n)) for n in names}
    cls = runs_class(tables)
    cpus = {cpu_model(d) for d in (baseline, current)}
    gate = Gate(
        relative=relative,
        cls=cls,
        time_tol=TIME_TOLERANCE[cls] if time_tol is None else time_tol,
        mem_tol=MEM_TOLERANCE[cls] if mem_tol is None else mem_tol,
        bpb_tol=bpb_tol,
        acc_tol=acc_tol,
    )
    if cls == "cpu" and len(cpus) > 1 and None not in cpus:  # a time ratio across CPU models measures the hardware
        gate.times = False
        models = " vs ".join(sorted(cpus))
        what = f"times not compared: the runs ran on different CPU models ({models}); counts and memory are"
        gate.add("note", "scaling.csv", "", what)
    for name, (base, cur) in tables.items():
        if base is None:
            gate.add("note", name, "", "the baseline has no such file")
            continue
        getattr(gate, name.removesuffix(".csv"))(base, cur)
    if gate.compared == 0:
        raise CompareError(f"no cell in common between {baseline} and {current}")
    return gate


def ratio_spread(first, second):
    """How far two runs of the same code on the same machine disagree, as the time tolerance is derived: each
    cell's time ratio to REFERENCE_MODEL in one run against the other, as the larger of r and 1/r, minus 1.
    Returns, over the cells the gate times (on their graph-replayed gpu_ms where both runs have it, else eager
    steps from MIN_TIMED_MS up), the cells' spreads (worst first), their largest, median and 90th percentile, and
    the tolerance that three times the largest gives; how many were graph-replayed and their largest spread; and
    the largest spread of the cells it does not time."""
    gate = compare(first, second, relative=True, time_tol=math.inf)
    spread = lambda change: max(1 + change, 1 / (1 + change)) - 1  # noqa: E731
    spreads = sorted(((spread(c), cell) for cell, c in gate.time_changes.items()), reverse=True)
    if not spreads:
        raise CompareError(f"no timed ratio to {REFERENCE_MODEL} in common between {first} and {second}")
    values = sorted(s for s, _ in spreads)
    quantile = lambda q: values[min(len(values) - 1, int(q * len(values)))]  # noqa: E731
    return dict(
        cells=len(values),
        max=values[-1],
        median=quantile(0.5),
        p90=quantile(0.9),
        tolerance=3 * values[-1],
        graph_cells=len(gate.graph_timed),
        graph_max=max((spread(gate.time_changes[cell]) for cell in gate.graph_timed), default=None),
        min_timed_ms=MIN_TIMED_MS[gate.cls],
        untimed_cells=len(gate.untimed),
        untimed_max=max((spread(c) for _, c in gate.untimed), default=None),
        per_cell={cell: s for s, cell in spreads},
    )


def render_spread(spread):
    lines = [f"{s:7.1%}  {cell}" for cell, s in list(spread["per_cell"].items())[:5]]
    untimed = (
        f"; {spread['untimed_cells']} cells under {spread['min_timed_ms']:g} ms not timed (largest spread "
        f"{spread['untimed_max']:.1%})"
        if spread["untimed_cells"]
        else ""
    )
    graphed = (
        f" ({spread['graph_cells']} on gpu_ms, largest {spread['graph_max']:.1%})" if spread.get("graph_cells") else ""
    )
    lines.append(
        f"time-ratio spread over {spread['cells']} timed cells{graphed}: largest {spread['max']:.1%}, median "
        f"{spread['median']:.1%}, 90th percentile {spread['p90']:.1%}: tolerance {spread['tolerance']:.0%}" + untimed
    )
    return "\n".join(lines)


def render(gate, *, one_sided=True):
    """The findings, worst first, and a summary line; one_sided=False leaves out the cells of one run only
    (still counted)."""
    order = {"regression": 0, "improvement": 1, "only-baseline": 2, "only-current": 3, "note": 4}
    rows = sorted(gate.findings, key=lambda f: (order[f.kind], -f.severity))
    lines = [
        f"{f.kind:<13} {f.csv:<15} {f.cell}: {f.what}" for f in rows if one_sided or not f.kind.startswith("only-")
    ]
    counts = {k: sum(f.kind == k for f in rows) for k in order}
    lines.append(
        f"{gate.compared} cells compared ({gate.cls}, {'relative' if gate.relative else 'absolute'} times, "
        f"time tolerance {gate.time_tol:.0%}): {counts['regression']} regressions, "
        f"{counts['improvement']} improvements, {counts['only-baseline'] + counts['only-current']} one-sided"
    )
    return "\n".join(lines)


def make_parser():
    p = Parser(prog="python -m bench.regress", description=__doc__.split("\n\n")[0])
    p.add_argument("--baseline", required=True)
    p.add_argument("--current", required=True)
    p.add_argument("--relative", action="store_true", help=f"compare times as ratios to {REFERENCE_MODEL}'s")
    p.add_argument(
        "--tolerance",
        type=float,
        help=f"relative time tolerance (default: {TIME_TOLERANCE['cpu']:g} CPU, {TIME_TOLERANCE['cuda']:g} CUDA)",
    )
    p.add_argument(
        "--mem-tolerance",
        type=float,
        help=f"relative peak-memory tolerance (default: {MEM_TOLERANCE['cpu']:g} CPU, {MEM_TOLERANCE['cuda']:g} CUDA)",
    )
    p.add_argument("--bpb-tolerance", type=float, default=BPB_TOLERANCE, help="relative bits-per-byte tolerance")
    p.add_argument("--accuracy-tolerance", type=float, default=ACCURACY_TOLERANCE, help="absolute recall tolerance")
    p.add_argument("--no-one-sided", action="store_true", help="do not list cells measured in one run only")
    p.add_argument(
        "--spread",
        action="store_true",
        help="instead of gating: the time-ratio spread of two runs of the same code, from which a tolerance is derived",
    )
    return p


def main(argv=None):
    return run(argv)[0]


def run(argv=None):
    """The command: prints the findings (or one error line) and returns (exit code, the Gate or None)."""
    try:
        args = make_parser().parse_args(argv)
        if args.spread:
            spread = ratio_spread(args.baseline, args.current)
            print(render_spread(spread))
            return 0, None
        gate = compare(
            args.baseline,
            args.current,
            relative=args.relative,
            time_tol=args.tolerance,
            mem_tol=args.mem_tolerance,
            bpb_tol=args.bpb_tolerance,
            acc_tol=args.accuracy_tolerance,
        )
    except UsageError as error:  # a CompareError too
        return fail(error), None
    print(render(gate, one_sided=not args.no_one_sided))
    return (1 if any(f.kind == "regression" for f in gate.findings) else 0), gate
