"""How often findings.csv's 95% intervals cover the truth, on planted scaling runs (numpy + pandas, no torch).

    python -m bench.analysis.coverage --runs 300     # the table of docs/measurement.md (minutes)

A planted run is the quick preset's sweep with known medians (TRUTH: the CPU reference of 474812c's, each cell with
its repeat count), timed as the suite times it: group after group (one per mode and length, the lengths
ascending), each group in rounds, the drift gauge first in every round and the members' order rotated from round to
round (bench.core.timing.measure_group). Every timed step, the gauge's included, takes its true median times
exp(drift + noise): `noise` independent (NOISE, lognormal), `drift` an AR(1) over wall order, one step after another,
shared by whatever runs at that moment (Scenario: phi and the innovation's sd). With `refine`, the four cells around
each gss/attention crossover run REFINE_ROUNDS more rounds after the sweep, as the suite's refinement does, their
groups cut by refine.aligned_rounds. The findings are the project's own (findings.compute, with fewer resamples),
and each planted truth (slopes and their differences over the planted medians, crossovers interpolated between
them, speed-ups as their ratios) is covered when its row's interval holds it; a missing row or a withheld interval
covers nothing. The undone variant reads the same timings as runs did before issue 28: no gauge times (each cell's
repeats bootstrapped on its own), conditional crossover intervals, and position pairing after a refinement
(refine.aligned_rounds(whole_group=False)).
"""

import sys
from dataclasses import dataclass

import numpy as np
import pandas as pd

from bench import analysis
from bench.analysis import findings, refine
from bench.analysis.load import with_numbers
from bench.schema import CROSSOVER_PAIR, REFERENCE_MODEL, TABLES
from bench.stats import crossover, format_times
from bench.usage import Parser, UsageError, fail, positive_int, value_of

# median ms and repeats of each sweep cell of the CPU reference made at commit 474812c
TRUTH = {
    "fwd": {
        "gss": {
            256: (16.0293, 61),
            512: (30.9665, 31),
            1024: (54.1383, 17),
            2048: (106.892, 10),
            4096: (226.672, 10),
            8192: (464.961, 10),
        },
        "gss-fast": {
            256: (9.75784, 12),
            512: (18.8284, 30),
            1024: (34.6181, 29),
            2048: (68.7985, 14),
            4096: (135.636, 10),
            8192: (272.762, 10),
        },
        "gss-direct": {512: (31.6801, 31), 1024: (56.6138, 18), 2048: (121.033, 10)},
        "dss": {
            256: (38.8385, 22),
            512: (59.1302, 17),
            1024: (79.8539, 13),
            2048: (135.876, 10),
            4096: (252.535, 10),
            8192: (523.947, 10),
        },
        "conv": {256: (9.66118, 10), 512: (21.4374, 45), 1024: (34.5056, 29), 2048: (68.677, 15), 4096: (147.99, 10)},
        "attention": {
            256: (12.9102, 77),
            512: (26.3811, 37),
            1024: (48.6726, 21),
            2048: (107.175, 10),
            4096: (283.121, 10),
        },
        "attention-chunked": {
            256: (13.1575, 77),
            512: (25.114, 33),
            1024: (45.9561, 22),
            2048: (89.3205, 11),
            4096: (192.522, 10),
        },
    },
    "fwdbwd": {
        "gss": {
            256: (38.9198, 15),
            512: (72.8123, 14),
            1024: (141.679, 10),
            2048: (288.934, 10),
            4096: (632.573, 10),
            8192: (1500.87, 5),
        },
        "gss-fast": {
            256: (34.0104, 15),
            512: (61.5461, 17),
            1024: (119.367, 10),
            2048: (256.839, 10),
            4096: (544.509, 10),
            8192: (1154.68, 5),
        },
        "dss": {
            256: (52.7168, 10),
            512: (92.3715, 10),
            1024: (167.687, 10),
            2048: (311.789, 10),
            4096: (662.054, 10),
            8192: (1403.85, 5),
        },
        "conv": {256: (29.3042, 20), 512: (55.1628, 15), 1024: (105.844, 10), 2048: (234.304, 10), 4096: (484.458, 10)},
        "attention": {
            256: (33.7427, 17),
            512: (70.1485, 10),
            1024: (149.357, 10),
            2048: (354.981, 10),
            4096: (898.951, 10),
        },
        "attention-chunked": {
            256: (34.368, 17),
            512: (71.1614, 10),
            1024: (138.739, 10),
            2048: (284.537, 10),
            4096: (569.42, 10),
        },
    },
}

NOISE = 0.04  # sd of a timed step's own log noise
GAUGE_MS = 1.0
REFINE_ROUNDS = 20  # the refinement's rounds of its four cells: four of the suite's REFINE_ROUND
RESAMPLES = 400
# findings the undone variant is known to get wrong: the crossover just above the shortest length (262 tokens), and
# a speed-up of a cell the refinement does not re-measure over one it does, at a refined length
NAMED = (("crossover", "fwdbwd", "gss-fast", "attention", ""), ("speedup", "fwdbwd", "gss-fast", "gss", 512))


@dataclass(frozen=True)
class Scenario:
    name: str
    phi: float = 0.0  # the drift's AR(1) coefficient, per timed step
    sd: float = 0.0  # its innovation's sd (log), per timed step
    refine: bool = False  # the gss/attention brackets re-measured after the sweep

    @property
    def level_sd(self):
        """The drift's stationary sd (log)."""
        return self.sd / np.sqrt(1 - self.phi**2) if self.sd else 0.0


SCENARIOS = (
    Scenario("no drift"),
    Scenario("mild drift", phi=0.995, sd=0.002),
    Scenario("strong drift", phi=0.995, sd=0.006),
    Scenario("strong drift, refined", phi=0.995, sd=0.006, refine=True),
)


def rotated(members, r):
    """The order of a round, as bench.core.timing.rotated: round r starts at member r mod k."""
    return members[r % len(members) :] + members[: r % len(members)]


class Plan:
    """The cells of a planted run and its wall order: each timed step's cell (-1: the gauge) and its round's gauge
    step, the sweep's groups one after another, then the refinement's."""

    def __init__(self, truth, *, refine_brackets=False):
        self.cells = [
            (m, model, L, t, n) for m, sweeps in truth.items() for model, s in sweeps.items() for L, (t, n) in s.items()
        ]
        self.events, self.gauge = [], []
        for mode in truth:
            for length in sorted({c[2] for c in self.cells if c[0] == mode}):
                self.group([i for i, c in enumerate(self.cells) if c[:1] + c[2:3] == (mode, length)])
        self.sweep = len(self.events)
        self.refined = [i for mode in truth for i in self.bracket(truth, mode)] if refine_brackets else []
        for mode in truth:
            if refine_brackets and (cells := self.bracket(truth, mode)):
                self.group(cells, rounds=REFINE_ROUNDS)
        self.events, self.gauge = np.array(self.events), np.array(self.gauge)

    def group(self, members, rounds=None):
        counts = {i: rounds or self.cells[i][4] for i in members}
        for r in range(max(counts.values())):
            self.events.append(-1)
            self.gauge.append(g := len(self.gauge))
            for i in rotated([i for i in members if counts[i] > r], r):
                self.events.append(i)
                self.gauge.append(g)

    def bracket(self, truth, mode):
        """The four cells around the planted gss/attention crossover of `mode` (none without one)."""
        fast, slow = (truth[mode].get(m, {}) for m in CROSSOVER_PAIR)
        common = sorted(set(fast) & set(slow))
        ratio = np.log([fast[L][0] / slow[L][0] for L in common])
        if len(common) < 2 or np.isnan(crossover(common, ratio)[0]):
            return []
        last = max(i for i, r in enumerate(ratio) if r >= 0)
        keys = {(mode, m, L) for m in CROSSOVER_PAIR for L in common[last : last + 2]}
        return [i for i, c in enumerate(self.cells) if c[:3] in keys]

    def timed(self, scenario, rng):
        """Each timed step's time, ms, in wall order."""
        true = np.array([GAUGE_MS if i < 0 else self.cells[i][3] for i in self.events])
        return true * np.exp(drift(scenario, len(true), rng) + rng.normal(0, NOISE, len(true)))


def drift(scenario, n, rng):
    """An AR(1) in log time over n steps, started from its stationary law."""
    out, shocks = np.empty(n), rng.normal(0, scenario.sd, n) if scenario.sd else np.zeros(n)
    level = rng.normal(0, scenario.level_sd) if scenario.sd else 0.0
    for w in range(n):
        out[w] = level = scenario.phi * level + shocks[w]
    return out


def rows_of(plan, times, *, undone=False):
    """The planted run's scaling.csv rows (dicts of text), as the suite writes them (undone: as before issue 28)."""
    rows = []
    for i, (mode, model, length, _, _) in enumerate(plan.cells):
        at = np.flatnonzero(plan.events[: plan.sweep] == i)
        rows.append(row(mode, model, length, times[at], times[plan.gauge[at]]))
    if plan.refined:
        kept = refine.aligned_rounds(rows, [refine.label(rows[i]) for i in plan.refined], whole_group=not undone)
        for i, r in enumerate(rows):
            if (label := refine.label(r)) in kept:
                t, g = kept[label]
                at = np.flatnonzero(plan.events[plan.sweep :] == i) + plan.sweep
                rows[i] = row(*plan.cells[i][:3], [*t, *times[at]], [*g, *times[plan.gauge[at]]])
    return [{**r, "gauge_times_ms": ""} for r in rows] if undone else rows


def row(mode, model, length, times, gauge):
    columns = dict.fromkeys(TABLES["scaling.csv"].columns, "")
    return {
        **columns,
        **dict(model=model, mode=mode, dtype="float32", device="cpu", batch="1", seq_len=str(length), dim="256"),
        **dict(compiled="false", status="ok", time_ms=f"{np.median(times):.6g}", repeats=str(len(times))),
        **dict(times_ms=format_times(times), gauge_times_ms=format_times(gauge)),
    }


def truths(truth):
    """{key: planted value} of every finding findings.compute reports, keyed as key() keys its rows."""
    out = {}
    for mode, sweeps in truth.items():
        log = {m: pd.Series({L: np.log(t) for L, (t, _) in s.items()}) for m, s in sweeps.items()}
        ref = log.get(REFERENCE_MODEL)
        for model, y in log.items():
            if lengths := analysis.fitted_lengths(y.index):
                out["slope", mode, model, "", ""] = float(findings.slope(lengths, y[lengths]))
            common = [] if ref is None or model == REFERENCE_MODEL else sorted(set(y.index) & set(ref.index))
            if lengths := analysis.fitted_lengths(common):
                out["slope_diff", mode, model, REFERENCE_MODEL, ""] = float(findings.slope(lengths, (y - ref)[lengths]))
            for other, z in log.items():
                both = sorted(set(y.index) & set(z.index))
                if other != model and len(both) > 1 and not np.isnan(at := crossover(both, (y - z)[both])[0]):
                    out["crossover", mode, model, other, ""] = float(at)
            speedups = [(REFERENCE_MODEL, False), *((o, True) for m, o in findings.EVERY_LENGTH if m == model)]
            for other, every in speedups:
                both = sorted(set(y.index) & set(log.get(other, {}).keys())) if other != model else []
                for length in both if every else both[-1:]:
                    out["speedup", mode, model, other, length] = float(np.exp(log[other][length] - y[length]))
    return out


def key(r):
    length = int(r.span.split()[-1]) if r.finding == "speedup" else ""
    return r.finding, r.mode, r.model, r.other, length


def covered(found, truth):
    """{key: "covered" | "missed" | "withheld" | "absent"} of each planted finding in one run's findings."""
    rows = {key(r): r for r in found.itertuples()}
    out = {}
    for k, value in truth.items():
        r = rows.get(k)
        if r is None:
            out[k] = "absent"
        elif pd.isna(r.ci_low):
            out[k] = "withheld"
        else:
            out[k] = "covered" if r.ci_low <= value <= r.ci_high else "missed"
    return out


def simulate(scenario, runs, *, seed=1, truth=TRUTH, resamples=RESAMPLES):
    """Per planted finding and variant ("fixed": today's findings; "undone": as before issue 28), the share of
    `runs` planted runs in each outcome of covered(): a frame with columns variant, finding, mode, model, other,
    length, truth, covered, missed, withheld, absent."""
    plan, planted = Plan(truth, refine_brackets=scenario.refine), truths(truth)
    counts = {}
    for run in range(runs):
        times = plan.timed(
            scenario, np.random.default_rng([seed, SCENARIOS.index(scenario) if scenario in SCENARIOS else 9, run])
        )
        for variant, undone in (("fixed", False), ("undone", True)):
            frame = with_numbers(pd.DataFrame(rows_of(plan, times, undone=undone)))
            found = findings.compute(frame, resamples=resamples, conditional=undone)
            for k, outcome in covered(found, planted).items():
                counts.setdefault((variant, *k), {}).setdefault(outcome, 0)
                counts[(variant, *k)][outcome] += 1
    out = [
        dict(variant=k[0], finding=k[1], mode=k[2], model=k[3], other=k[4], length=k[5], truth=planted[k[1:]])
        | {o: c.get(o, 0) / runs for o in ("covered", "missed", "withheld", "absent")}
        for k, c in counts.items()
    ]
    return pd.DataFrame(out)


def summary(scenario, table):
    """One line per variant and kind: findings, mean and lowest coverage, shares withheld and absent."""
    lines = []
    for (variant, kind), g in table.groupby(["variant", "finding"], sort=False):
        worst = g.loc[g.covered.idxmin()]
        lines.append(
            dict(
                scenario=scenario.name,
                variant=variant,
                kind=kind,
                findings=len(g),
                mean=g.covered.mean(),
                lowest=worst.covered,
                at=" ".join(str(v) for v in (worst["mode"], worst.model, worst.other, worst.length) if v != ""),
                withheld=g.withheld.mean(),
                absent=g.absent.mean(),
            )
        )
    return lines


def table_lines(lines):
    """The summaries as a Markdown table."""
    header = "| scenario | variant | kind | findings | mean coverage | lowest (finding) | withheld | absent |"
    out = [header, "|" + "---|" * 8]
    for r in lines:
        out.append(
            f"| {r['scenario']} | {r['variant']} | {r['kind']} | {r['findings']} | {r['mean']:.3f} | "
            f"{r['lowest']:.3f} ({r['at']}) | {r['withheld']:.3f} | {r['absent']:.3f} |"
        )
    return out


def make_parser():
    p = Parser(prog="python -m bench.analysis.coverage", description="Coverage of the findings' 95% intervals.")
    p.add_argument("--runs", type=value_of(positive_int, "runs"), default=300, help="planted runs a scenario")
    p.add_argument("--resamples", type=value_of(positive_int, "resamples"), default=RESAMPLES, help="bootstrap's")
    p.add_argument("--seed", type=value_of(positive_int, "seed"), default=1, help="the planted runs' (default 1)")
    return p


def main(argv=None):
    try:
        args = make_parser().parse_args(argv)
    except UsageError as error:
        return fail(error)
    lines, named = [], []
    for scenario in SCENARIOS:
        table = simulate(scenario, args.runs, seed=args.seed, resamples=args.resamples)
        lines += summary(scenario, table)
        for r in table.itertuples():
            if (r.finding, r.mode, r.model, r.other, r.length) in NAMED:
                what = f"{r.finding} {r.mode} {r.model} / {r.other}" + (f" at {r.length}" if r.length != "" else "")
                shares = f"{r.truth:.3f} | {r.covered:.3f} | {r.withheld:.3f} | {r.absent:.3f}"
                named.append(f"| {scenario.name} | {r.variant} | {what} | {shares} |")
    print(
        f"{args.runs} planted runs per scenario, {args.resamples} resamples; repeat noise {NOISE:.0%} (lognormal); "
        "drift AR(1) per timed step: "
        + "; ".join(f"{s.name}: phi {s.phi}, sd {s.sd} (stationary {s.level_sd:.1%})" for s in SCENARIOS if s.sd)
    )
    print("\n".join(table_lines(lines)))
    print("\n| scenario | variant | finding | truth | covered | withheld | absent |\n|---|---|---|---|---|---|---|")
    print("\n".join(named))
    return 0


if __name__ == "__main__":
    sys.exit(main())
