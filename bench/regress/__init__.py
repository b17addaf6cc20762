"""Performance regression gate: a run against a baseline run, exact where the numbers are deterministic,
noise-aware where they are not.

    python -m bench.regress --baseline results/baselines/cpu-quick --current results/<run_id> --relative

Exit code 0: no regression; 1: at least one; 2: the runs cannot be compared (missing or malformed
files, another device class, no cell in common). Reads CSVs only (pandas; no torch).
"""

import math
from dataclasses import dataclass
from pathlib import Path

from bench.regress.load import (
    VALUE_COLUMNS,
    CompareError,
    cpu_model,
    describe,
    load,
    number,
    runs_class,
    standard_error_ms,
    time_beside,
)
from bench.schema import KEY_COLUMNS, OPTIONS
from bench.usage import Parser, UsageError, fail

# Default relative time tolerance per device class: three times the largest spread of time ratios between identical
# scaling runs. CPU: three interleaved quick runs on the development machine (16.3% over 3 pairs,
# docs/regression-gate.md); CUDA: four gpu-check passes in two processes on an H200 (4.0% over 6 pairs, cells timed
# from MIN_TIMED_MS up, docs/gpu.md).
TIME_TOLERANCE = {"cpu": 0.49, "cuda": 0.12}
# A step (or its --relative reference) shorter than this is not time-gated: on CUDA, steps under 10 ms wait on the
# host launching eager kernels, and their ratios moved by up to 160% between identical passes (docs/gpu.md).
MIN_TIMED_MS = {"cpu": 0.0, "cuda": 10.0}
MEM_TOLERANCE = {"cpu": 0.02, "cuda": 0.01}
BPB_TOLERANCE = 0.02  # relative
ACCURACY_TOLERANCE = 0.05  # absolute
NOISE_SIGMAS = 3.0
REFERENCE_MODEL = "attention"  # --relative: times are ratios to this model's time in the same run
# ... in the cell of the same shape: the scaling key without the model, its options and the device
SHAPE = tuple(c for c in KEY_COLUMNS["scaling.csv"] if c not in ("model", "device", *OPTIONS))
FAILED = ("oom", "error")


@dataclass(frozen=True)
class Finding:
    kind: str  # regression | improvement | only-baseline | only-current | note
    csv: str
    cell: str
    what: str
    severity: float  # for ordering, worst first
    key: tuple = ()  # a time finding's cell: (column, value) pairs of its scaling.csv key


class Gate:
    def __init__(self, *, relative, time_tol, mem_tol, bpb_tol, acc_tol, cls):
        self.relative, self.cls = relative, cls
        self.time_tol, self.mem_tol, self.bpb_tol, self.acc_tol = time_tol, mem_tol, bpb_tol, acc_tol
        self.findings, self.compared, self.times = [], 0, True
        self.time_changes = {}  # cell -> relative change of its time (or ratio), every cell whose time is compared
        self.untimed = []  # cells not time-gated: a step shorter than MIN_TIMED_MS

    def add(self, kind, csv, cell, what, severity=0.0, key=()):
        self.findings.append(Finding(kind, csv, cell, what, severity, key))

    def time_only_regressions(self):
        """The cells of the time regressions when every regression is one (each key a dict), else []."""
        regressions = [f for f in self.findings if f.kind == "regression"]
        return [dict(f.key) for f in regressions] if regressions and all(f.key for f in regressions) else []

    def common_rows(self, name, base, cur, key):
        merged = base.merge(cur, on=list(key), how="outer", suffixes=("_b", "_c"), indicator=True)
        for _, row in merged[merged["_merge"] != "both"].iterrows():
            side = "only-baseline" if row["_merge"] == "left_only" else "only-current"
            self.add(side, name, describe(row, key), "cell measured in one run only")
        both = merged[merged["_merge"] == "both"]
        self.compared += len(both)
        return both

    def statuses(self, name, row, cell):
        """True when both cells are ok and can be compared further."""
        sb, sc = row["status_b"], row["status_c"]
        if sb == "ok" and sc in FAILED:
            self.add("regression", name, cell, f"status ok -> {sc}: {row.get('error_c', '')}", math.inf)
        elif sb in FAILED and sc == "ok":
            self.add("improvement", name, cell, f"status {sb} -> ok", 1.0)
        elif sb != sc:
            self.add("note", name, cell, f"status {sb} -> {sc}")
        return sb == sc == "ok"

    def exact(self, name, row, cell, column):
        if column + "_b" in row and row[column + "_b"] != row[column + "_c"]:
            self.add("regression", name, cell, f"{column} changed {row[column + '_b']} -> {row[column + '_c']}", 1e9)

    def scaling(self, base, cur):
        key = [k for k in KEY_COLUMNS["scaling.csv"] if not (self.relative and k == "device")]
        both = self.common_rows("scaling.csv", base, cur, key)
        ratios = {"b": self.reference_times(base), "c": self.reference_times(cur)}
        if self.relative and not (ratios["b"] and ratios["c"]):
            raise CompareError(
                f"--relative compares times as ratios to {REFERENCE_MODEL}, and "
                f"{'the baseline' if not ratios['b'] else 'the current run'} has no ok "
                f"{REFERENCE_MODEL} cell in scaling.csv"
            )
        for _, row in both.iterrows():
            cell = describe(row, key)
            if not self.statuses("scaling.csv", row, cell):
                continue
            for column in ("params", "flops"):
                self.exact("scaling.csv", row, cell, column)
            self.memory(row, cell)
            if self.times:
                self.time(row, cell, ratios, tuple((k, row[k]) for k in key))
        if self.untimed:
            self.add(
                "note",
                "scaling.csv",
                "",
                f"{len(self.untimed)} cells' times not gated: a step under "
                f"{MIN_TIMED_MS[self.cls]:g} ms on {self.cls} is launch-bound (docs/gpu.md)",
            )

    def memory(self, row, cell):
        mb, mc = number(row["peak_mem_mb_b"]), number(row["peak_mem_mb_c"])
        if mb > 0 and mc == mc:
            change = mc / mb - 1
            if abs(change) > self.mem_tol:
                kind = "regression" if change > 0 else "improvement"
                self.add(kind, "scaling.csv", cell, f"peak_mem_mb {mb:g} -> {mc:g} ({change:+.1%})", abs(change))

    def reference_times(self, df):
        ok = df[(df["model"] == REFERENCE_MODEL) & (df["status"] == "ok")]
        return {tuple(r[c] for c in SHAPE): r for _, r in ok.iterrows()}

    def time(self, row, cell, ratios, key):
        tb, tc = number(row["time_ms_b"]), number(row["time_ms_c"])
        rel_noise = [standard_error_ms(row, "_" + s) / t for s, t in (("b", tb), ("c", tc))]  # each side's own
        if self.relative:
            if row["model"] == REFERENCE_MODEL:
                return
            refs = [ratios[side].get(tuple(row[c] for c in SHAPE)) for side in ("b", "c")]
            if any(r is None for r in refs):
                self.add("note", "scaling.csv", cell, f"no {REFERENCE_MODEL} cell to compare times against")
                return
            beside = [time_beside(r, number(row["repeats_" + s])) for r, s in zip(refs, "bc", strict=True)]
            tb, tc = tb / beside[0][0], tc / beside[1][0]
            rel_noise += [se / t for t, se in beside]
        change = tc / tb - 1
        steps = [number(row["time_ms_b"]), number(row["time_ms_c"])]
        steps += [t for t, _ in beside] if self.relative else []
        if min(steps) < MIN_TIMED_MS[self.cls]:
            self.untimed.append((cell, change))
            return
        self.time_changes[cell] = change
        noise = NOISE_SIGMAS * math.sqrt(sum(n * n for n in rel_noise))
        what = (
            "time ratio to " + REFERENCE_MODEL if self.relative else "time_ms"
        ) + f" {tb:.4g} -> {tc:.4g} ({change:+.1%}; tolerance {self.time_tol:.0%}, noise {noise:.1%})"
        if change > max(self.time_tol, noise):
            self.add("regression", "scaling.csv", cell, what, change, key)
        elif -change / (1 + change) > max(self.time_tol, noise):
            self.add("improvement", "scaling.csv", cell, what, -change)

    def trained(self, name, base, cur, column, *, tol, relative, lower_is_better, fmt):
        """A trained model's quality (bits/byte, recall accuracy) within a tolerance, on the selected rates' test rows
        (other rows: status only); the rate is in the key, so a selection that moved leaves one-sided cells."""
        key = KEY_COLUMNS[name]
        for _, row in self.common_rows(name, base, cur, key).iterrows():
            cell = describe(row, key)
            if not self.statuses(name, row, cell):
                continue
            self.exact(name, row, cell, "params")
            if (chosen := (row["lr_selected_b"], row["lr_selected_c"]))[0] != chosen[1]:
                self.add("note", name, cell, "the selection moved: lr_selected {} -> {}".format(*chosen))
            if chosen != ("true", "true") or row.get("split", "test") != "test":
                continue
            vb, vc = number(row[column + "_b"]), number(row[column + "_c"])
            change = vc / vb - 1 if relative else vc - vb
            if abs(change) > tol:
                worse = change > 0 if lower_is_better else change < 0
                shown = f" ({change:+.1%})" if relative else ""
                self.add(
                    "regression" if worse else "improvement",
                    name,
                    cell,
                    f"{column} {vb:{fmt}} -> {vc:{fmt}}{shown}",
                    abs(change),
                )

    def perplexity(self, base, cur):
        self.trained(
            "perplexity.csv",
            base,
            cur,
            "bits_per_byte",
            tol=self.bpb_tol,
            relative=True,
            lower_is_better=True,
            fmt=".4g",
        )

    def recall(self, base, cur):
        self.trained(
            "recall.csv", base, cur, "accuracy", tol=self.acc_tol, relative=False, lower_is_better=False, fmt=".3f"
        )


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
        gate.add(
            "note",
            "scaling.csv",
            "",
            "times not compared: the runs ran on different CPU models ({}); counts and memory are".format(
                " vs ".join(sorted(cpus))
            ),
        )
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
    Returns, over the cells the gate times (steps from MIN_TIMED_MS up), the cells' spreads (worst first), their
    largest, median and 90th percentile, and the tolerance that three times the largest gives; and the largest
    spread of the cells it does not time."""
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
    lines.append(
        f"time-ratio spread over {spread['cells']} timed cells: largest {spread['max']:.1%}, median "
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
