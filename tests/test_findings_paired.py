"""findings.csv, continued: the findings that compare two models at a length (the GSS paper's gss over dss, the
paired rounds of a crossover), on planted runs (tests/test_findings.py's) and the committed reference."""

import re

import numpy as np
import pytest

from bench import report
from bench.analysis import findings
from bench.report import paper
from tests.test_findings import BASELINE, LENGTHS, one, plant, power_laws


def test_gss_over_dss_is_a_speedup_at_every_common_length_and_over_attention_only_at_the_longest(tmp_path):
    # dss = 2.5 gss at every length (the GSS paper reports 2-3x); dss measured at four of gss's six lengths
    laws = {**power_laws(), ("dss", "fwd"): {L: 5.0 * L for L in LENGTHS[:4]}}
    found = findings.of_run(plant(tmp_path, laws))
    over_dss = found[(found.finding == "speedup") & (found.other == "dss")]
    assert list(over_dss.model) == ["gss"] * 4 and list(over_dss.detail) == [f"at seq_len {L}" for L in LENGTHS[:4]]
    assert over_dss.value.tolist() == pytest.approx([2.5] * 4)
    assert ((over_dss.ci_low < 2.5) & (over_dss.ci_high > 2.5)).all()
    over_attention = found[(found.finding == "speedup") & (found.other == "attention")]
    assert dict(zip(over_attention.model, over_attention.detail)) == {
        "gss": "at seq_len 8192",
        "dss": "at seq_len 2048",
    }


def test_the_report_sets_gss_over_dss_beside_the_papers_2_to_3x(tmp_path):
    laws = {**power_laws(), ("dss", "fwd"): {L: 5.0 * L for L in LENGTHS[:2]}}
    path = report.write_report(plant(tmp_path / "run", laws), plots_dir=tmp_path / "figs")
    text = path.read_text(encoding="utf-8")
    assert "## The GSS paper's comparison: GSS, DSS and GSS-Hybrid" in text
    section = text[text.index("## The GSS paper's comparison") :]
    assert re.search(r"\| fwd \| float32 \| 256 \| 2\.50x \| 2\.4\d\.\.2\.5\d \| within 2-3x \|", section), section
    assert "- GSS vs DSS, fwd float32: gss 2.50x faster at seq_len 512" in text
    assert [paper.claim(*ci) for ci in ((1.1, 1.3), (3.5, 4.0), (1.8, 2.2), (2.1, 2.9))] == [
        "below 2x",
        "above 3x",
        "overlaps the 2-3x edge",
        "within 2-3x",
    ]


def test_pooled_runs_keep_gss_over_dss_apart_per_length(tmp_path, capsys):
    runs = [
        plant(tmp_path / f"r{i}", {**power_laws(), ("dss", "fwd"): {L: c * L for L in LENGTHS[:3]}})
        for i, c in enumerate((5.0, 6.0))
    ]
    pooled = findings.pool({run: findings.of_run(run) for run in runs})
    over_dss = pooled[(pooled.finding == "speedup") & (pooled.other == "dss")]
    assert list(over_dss.detail) == [f"at seq_len {L}" for L in LENGTHS[:3]] and (over_dss.runs == 2).all()
    assert over_dss[["low", "median", "high"]].to_numpy().ravel().tolist() == pytest.approx(
        [2.5, 2.75, 3.0] * 3, rel=1e-5
    )  # the repeats as written: 6 significant digits


def test_a_drift_shared_by_the_cells_of_a_round_cancels_in_the_interval(tmp_path):
    """The cells of an interleaved group run round by round, so a drift of the machine falls on the same round of
    each: the crossover pairs rounds, and its interval stays narrow where the same repeats, attention's rounds
    shuffled (no longer paired with gss's), give one several times wider."""
    drift = np.exp(np.random.default_rng(0).normal(scale=0.3, size=30))  # round i of every cell: +-30%

    def edit(paired):
        def f(row):
            rng = np.random.default_rng([len(row["model"]), int(row["seq_len"])])
            times = float(row["time_ms"]) * drift * np.exp(rng.normal(scale=0.01, size=drift.size))  # +-1%: its own
            if not paired and row["model"] == "attention":
                times = rng.permutation(times)
            return {
                **row,
                "time_ms": f"{np.median(times):.6g}",
                "times_ms": " ".join(f"{t:.6g}" for t in times),
                "repeats": len(times),
            }

        return f

    found = {
        paired: findings.of_run(plant(tmp_path / str(paired), power_laws(), repeats=30, edit=edit(paired)))
        for paired in (True, False)
    }
    r, shuffled = (one(found[paired], finding="crossover") for paired in (True, False))
    assert r.value == pytest.approx(2000, rel=0.02) and 0.98 * r.value < r.ci_low < r.value < r.ci_high < 1.02 * r.value
    assert shuffled.ci_high - shuffled.ci_low > 4 * (r.ci_high - r.ci_low)
    speedups = [one(found[paired], finding="speedup", model="gss") for paired in (True, False)]
    assert speedups[0].ci_high - speedups[0].ci_low < 0.04 * speedups[0].value
    assert speedups[1].ci_high - speedups[1].ci_low > 4 * (speedups[0].ci_high - speedups[0].ci_low)


def test_the_committed_references_gss_attention_crossovers_are_within_15_percent():
    """The uncertainty issue's criterion, on the committed CPU reference: each gss/attention crossover's 95%
    interval lies within +-15% of its value."""
    found = findings.of_run(BASELINE)
    for mode in ("fwd", "fwdbwd"):
        r = one(found, finding="crossover", mode=mode, model="gss", other="attention")
        assert 0.85 * r.value <= r.ci_low < r.value < r.ci_high <= 1.15 * r.value, (mode, r.value, r.ci_low, r.ci_high)


def test_gss_fast_over_gss_at_every_length_its_memory_and_both_crossovers_with_attention(tmp_path):
    # gss = 2 L, gss-fast = 1.25 L (1.6x faster, 0.8x the memory), attention L^2 / 1000: crossovers 2,000 and 1,250
    def memory(row):
        return {**row, "peak_mem_mb": 0.8 if row["model"] == "gss-fast" else 1.0}

    laws = {**power_laws(), ("gss-fast", "fwd"): {L: 1.25 * L for L in LENGTHS}}
    run = plant(tmp_path / "run", laws, edit=memory)
    found = findings.of_run(run)
    over_gss = found[(found.finding == "speedup") & (found.other == "gss")]
    assert list(over_gss.model) == ["gss-fast"] * 6 and list(over_gss.detail) == [f"at seq_len {L}" for L in LENGTHS]
    assert over_gss.value.tolist() == pytest.approx([1.6] * 6)
    # planted with the same rounds (gss's order): every round's ratio is 1.6, so is the paired interval
    assert np.allclose(over_gss[["ci_low", "ci_high"]], 1.6, rtol=1e-5)  # times written to 6 significant digits
    crossings = found[(found.finding == "crossover") & (found.other == "attention")]
    assert dict(zip(crossings.model, crossings.value.round())) == {"gss": 2000, "gss-fast": 1250}
    text = report.write_report(run, plots_dir=tmp_path / "figs").read_text(encoding="utf-8")
    assert "| mode | dtype | gss vs attention | gss-fast vs attention |" in text
    assert re.search(
        r"\| fwd \| float32 \| gss faster than attention above seq_len ≈ 2,000 \| "
        r"gss-fast faster than attention above seq_len ≈ 1,250 \|",
        text,
    ), text
    section = text[text.index("## gss-fast: gss's function, implemented faster") :]
    assert re.search(r"\| fwd \| float32 \| 8,192 \| 1\.60x \| 1\.60\.\.1\.60 \| 0\.80 \|", section), section
    assert "- gss-fast vs gss, fwd float32 (the same function): 1.60x at 256 (1.60..1.60), 1.60x at 512" in text


def test_an_older_run_without_repeat_times_reports_gss_over_dss_without_an_interval(tmp_path):
    """scaling.csv from before times_ms: the speed-ups have no interval, so the paper's claim is left open."""
    laws = {**power_laws(), ("dss", "fwd"): {L: 5.0 * L for L in LENGTHS[:2]}}
    text = report.write_report(plant(tmp_path / "run", laws, times=False), plots_dir=tmp_path / "figs").read_text()
    section = text[text.index("## The GSS paper's comparison") :]
    assert re.search(r"\| fwd \| float32 \| 256 \| 2\.50x \|  \|  \|", section), section
    assert "- GSS vs DSS, fwd float32: gss 2.50x faster at seq_len 512 (95% no interval;" in text


def test_a_slope_relative_to_the_gauge_carries_a_drift_that_moves_a_whole_length(tmp_path):
    """The groups of different lengths run one after another: a machine 30% slower while 8192's group ran slows
    every cell there and the gauge timed in its rounds alike. Relative to the gauge, gss's slope stays the planted
    1.0 with an interval around it; from the cells' own repeats (a run without gauge times) it is 1.19 with an
    interval that misses 1.0, and detail says it does not carry drift. The difference of slopes pairs each
    length's rounds: -1.0 either way."""

    def slowed(row):
        if row["seq_len"] == 8192:
            scaled = {
                c: " ".join(f"{float(t) * 1.3:.6g}" for t in row[c].split()) for c in ("times_ms", "gauge_times_ms")
            }
            return {**row, **scaled, "time_ms": f"{float(row['time_ms']) * 1.3:.6g}"}
        return row

    gauged, older = (
        findings.of_run(plant(tmp_path / str(gauge), power_laws(), spread=0.1, gauge=gauge, edit=slowed))
        for gauge in (True, False)
    )
    r = one(gauged, finding="slope", model="gss")
    assert r.value == pytest.approx(1.0, abs=1e-4) and r.ci_low < 1.0 < r.ci_high
    assert r.detail == "secant of seq_len 2048..8192"
    r = one(older, finding="slope", model="gss")
    assert r.value == pytest.approx(1 + np.log(1.3) / np.log(4), rel=1e-4) and r.ci_low > 1.05
    assert r.detail == "secant of seq_len 2048..8192; no drift gauge: the interval does not carry drift between lengths"
    for found in (gauged, older):
        diff = one(found, finding="slope_diff", model="gss", other="attention")
        assert diff.value == pytest.approx(-1.0, abs=1e-4) and diff.ci_low < -1.0 < diff.ci_high
        assert diff.detail.startswith("secant of seq_len 2048..8192; gss ") and diff.unit == "exponent"


def test_the_report_shows_medians_as_medians_and_every_ratio_paired(tmp_path):
    """REPORT.md's times table is headed as medians, its exponents are findings.csv's slopes with their intervals,
    and an ablation's largest / smallest is the median of the paired rounds' ratios, not a ratio of medians: here
    both cells' medians are 3 ms, while round by round kernel_N=512 took 4/3 of kernel_N=64's time."""
    rounds = {"64": [5.0, 1.0, 2.0, 3.0, 4.0], "512": [1.0, 2.0, 3.0, 4.0, 5.0]}

    def ablated(row):
        if row["seq_len"] == 512 and row["model"] == "gss":
            times = rounds[row["kernel_N"]]
            return {**row, "times_ms": " ".join(map(str, times)), "time_ms": "3", "repeats": 5}
        return row

    laws = {("gss", "fwd", "512"): {L: 2.0 * L for L in LENGTHS}, ("gss", "fwd", "64"): {512: 3.0}}
    run = plant(tmp_path / "run", laws, repeats=5, edit=ablated)
    text = report.write_report(run, plots_dir=tmp_path / "figs").read_text(encoding="utf-8")
    assert "Median time per step (ms) at the longest length all models reached" in text
    slope = one(findings.of_run(run), finding="slope")
    assert f"| gss | 1.00 [{slope.ci_low:.2f}..{slope.ci_high:.2f}] (2,048..8,192) |" in text
    assert re.search(r"\| gss \| fwd \| float32 \| 512 \|  \| 3\.0 \| 3\.0 \| 1\.33× \|", text), text
