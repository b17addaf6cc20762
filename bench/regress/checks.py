"""The regression gate's checks: a Gate compares the cells two runs share, exactly where the numbers are
deterministic (FLOP and parameter counts), noise-aware where they are not (times, against a tolerance and the
medians' standard errors, bench.stats), within tolerances for memory and a trained model's quality, and collects
its Findings. Torch-free (pandas)."""

import math
from dataclasses import dataclass

from bench.regress.load import CompareError, describe
from bench.schema import KEY_COLUMNS, OPTIONS, REFERENCE_MODEL
from bench.stats import NOISE_SIGMAS, standard_error_ms, time_beside

# Default relative time tolerance per device class: three times the largest spread of time ratios between identical
# scaling runs (`--spread`), as measured on CPU (interleaved quick runs, docs/regression-gate.md) and on CUDA
# (gpu-check passes in two processes, cells timed from MIN_TIMED_MS up, docs/gpu.md).
TIME_TOLERANCE = {"cpu": 0.49, "cuda": 0.12}
# A step (or its --relative reference) shorter than this is not time-gated: on CUDA, such steps wait on the host
# launching eager kernels, and their ratios moved far beyond the tolerance between identical passes (docs/gpu.md).
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


class Gate:
    """One comparison of a current run against a baseline: each CSV's check adds its Findings."""

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
        tb, tc = row["time_ms_b"], row["time_ms_c"]
        rel_noise = [standard_error_ms(row, "_" + s) / t for s, t in (("b", tb), ("c", tc))]  # each side's own
        if self.relative:
            if row["model"] == REFERENCE_MODEL:
                return
            refs = [ratios[side].get(tuple(row[c] for c in SHAPE)) for side in ("b", "c")]
            if any(r is None for r in refs):
                self.add("note", "scaling.csv", cell, f"no {REFERENCE_MODEL} cell to compare times against")
                return
            beside = [time_beside(r, row["repeats_" + s]) for r, s in zip(refs, "bc", strict=True)]
            tb, tc = tb / beside[0][0], tc / beside[1][0]
            rel_noise += [se / t for t, se in beside]
        change = tc / tb - 1
        steps = [row["time_ms_b"], row["time_ms_c"]]
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
