"""The regression gate's checks: a Gate compares the cells two runs share, exactly where the numbers are
deterministic (FLOP and parameter counts), noise-aware where they are not (times, against a tolerance and the
medians' standard errors, bench.stats), within tolerances for memory and a trained model's quality, and collects
its Findings. Torch-free (pandas)."""

import math
from dataclasses import dataclass

from bench.regress.load import CompareError, describe, replayed
from bench.schema import KEY_COLUMNS, OPTIONS, REFERENCE_MODEL
from bench.stats import NOISE_SIGMAS, median_standard_error, standard_error_ms, time_beside

# Default relative time tolerance per device class: three times the largest spread of time ratios between identical
# scaling runs (`--spread`), as measured on CPU (interleaved quick runs, docs/regression-gate.md) and on CUDA
# (gpu-check passes in two processes, cells timed from MIN_TIMED_MS up, docs/gpu.md). The CUDA value was derived
# from eager times, before gpu_ms: it stands until two passes with graph-replayed times re-derive it on a GPU.
TIME_TOLERANCE = {"cpu": 0.49, "cuda": 0.12}
# An eager step (or its --relative reference) shorter than this is not time-gated: on CUDA, such steps wait on the
# host launching eager kernels, and their ratios moved far beyond the tolerance between identical passes
# (docs/gpu.md). A cell compared on its graph-replayed gpu_ms, free of the launches, is gated whatever its length.
MIN_TIMED_MS = {"cpu": 0.0, "cuda": 10.0}
MEM_TOLERANCE = {"cpu": 0.02, "cuda": 0.01}
BPB_TOLERANCE = 0.02  # relative
ACCURACY_TOLERANCE = 0.05  # absolute
# --relative: times are ratios to REFERENCE_MODEL's time in the same run, in the cell of the same shape: the scaling
# key without the model, its options and the device
SHAPE = tuple(c for c in KEY_COLUMNS["scaling.csv"] if c not in ("model", "device", *OPTIONS))
FAILED = ("oom", "error")


@dataclass(frozen=True)
class Finding:
    kind: str  # regression | improvement | only-baseline | only-current | note
    csv: str
    cell: str
    what: str
    severity: float  # for ordering, worst first
    key: tuple = ()  # a time finding's cell: (column, value) pairs of its scaling.csv key, as written


def eager_terms(row, refs=None):
    """The eager medians a cell's time change is taken from, each with its standard error: the cell's in the
    baseline and in the current run, and (refs: --relative) its reference's over the rounds it ran beside it
    (bench.stats.time_beside)."""
    terms = [(row["time_ms_" + s], standard_error_ms(row, "_" + s)) for s in "bc"]
    return terms + [time_beside(r, row["repeats_" + s]) for r, s in zip(refs or (), "bc", strict=False)]


def replayed_terms(row, refs=None):
    """eager_terms' medians and errors from the graph-replayed times (gpu_ms, from the replays of gpu_times_ms),
    or None unless both cells (and refs) have them. A cell's replays are its own, not rounds shared with its
    reference: the reference's whole median is taken."""
    found = [replayed(row, "_" + s) for s in "bc"] + [replayed(r) for r in refs or ()]
    if any(f is None for f in found):
        return None
    return [(ms, median_standard_error(sorted(times))) for ms, times in found]


class Gate:
    """One comparison of a current run against a baseline: each CSV's check adds its Findings."""

    def __init__(self, *, relative, time_tol, mem_tol, bpb_tol, acc_tol, cls):
        self.relative, self.cls = relative, cls
        self.time_tol, self.mem_tol, self.bpb_tol, self.acc_tol = time_tol, mem_tol, bpb_tol, acc_tol
        self.findings, self.compared, self.times = [], 0, True
        self.time_changes = {}  # cell -> relative change of its time (or ratio), every cell whose time is compared
        self.untimed = []  # cells not time-gated: a step shorter than MIN_TIMED_MS
        self.graph_timed = set()  # the cells of time_changes compared on their graph-replayed gpu_ms

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
        """A count (FLOPs, parameters) that must not change, shown in full: .17g gives a count parsed as a float (its
        column has an empty cell) as the integer it is."""
        if column + "_b" in row and (b := row[column + "_b"]) != (c := row[column + "_c"]):
            self.add("regression", name, cell, f"{column} changed {b:.17g} -> {c:.17g}", 1e9)

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
        if self.graph_timed:
            what = f"{len(self.graph_timed)} cells' times gated on their graph-replayed gpu_ms (docs/measurement.md)"
            self.add("note", "scaling.csv", "", what)
        if self.untimed:
            self.add(
                "note",
                "scaling.csv",
                "",
                f"{len(self.untimed)} cells' times not gated: a step under "
                f"{MIN_TIMED_MS[self.cls]:g} ms on {self.cls} is launch-bound (docs/gpu.md)",
            )

    def memory(self, row, cell):
        mb, mc = row["peak_mem_mb_b"], row["peak_mem_mb_c"]
        if mb > 0 and mc == mc:
            change = mc / mb - 1
            if abs(change) > self.mem_tol:
                kind = "regression" if change > 0 else "improvement"
                self.add(kind, "scaling.csv", cell, f"peak_mem_mb {mb:g} -> {mc:g} ({change:+.1%})", abs(change))

    def reference_times(self, df):
        ok = df[(df["model"] == REFERENCE_MODEL) & (df["status"] == "ok")]
        return {tuple(r[c] for c in SHAPE): r for _, r in ok.iterrows()}

    def time(self, row, cell, ratios, key):
        """A cell's time (--relative: its ratio to REFERENCE_MODEL's at its shape) against the tolerance and the
        noise of the medians compared. On the graph-replayed gpu_ms where both runs' cells (and references) have it,
        every one gated; else on the eager time_ms, steps under MIN_TIMED_MS left ungated."""
        refs = None
        if self.relative:
            if row["model"] == REFERENCE_MODEL:
                return
            refs = [ratios[side].get(tuple(row[c] for c in SHAPE)) for side in ("b", "c")]
            if any(r is None for r in refs):
                self.add("note", "scaling.csv", cell, f"no {REFERENCE_MODEL} cell to compare times against")
                return
        terms = replayed_terms(row, refs)
        graphed = terms is not None
        terms = terms or eager_terms(row, refs)  # (median ms, its standard error): cell b, cell c[, ref b, ref c]
        (tb, _), (tc, _) = terms[:2]
        if self.relative:
            tb, tc = tb / terms[2][0], tc / terms[3][0]
        change = tc / tb - 1
        if not graphed and min(ms for ms, _ in terms) < MIN_TIMED_MS[self.cls]:
            self.untimed.append((cell, change))
            return
        self.time_changes[cell] = change
        if graphed:
            self.graph_timed.add(cell)
        rel_noise = [se / ms for ms, se in terms]  # each median's own
        noise = NOISE_SIGMAS * math.sqrt(sum(n * n for n in rel_noise))
        if self.relative:
            what = f"{'gpu_ms ratio' if graphed else 'time ratio'} to {REFERENCE_MODEL}"
        else:
            what = "gpu_ms" if graphed else "time_ms"
        what += f" {tb:.4g} -> {tc:.4g} ({change:+.1%}; tolerance {self.time_tol:.0%}, noise {noise:.1%})"
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
            vb, vc = row[column + "_b"], row[column + "_c"]
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
