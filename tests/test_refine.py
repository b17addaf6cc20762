"""The crossover refinement: which crossovers are too loose (bench.analysis.refine, the same interval as findings.csv),
and the scaling suite re-measuring their four bracketing cells on planted times and a fake clock."""

import math

import numpy as np
import pandas as pd
import pytest

from bench import analysis, scaling
from bench.analysis import findings, refine
from bench.core import cli, config
from bench.core.timing import Timing
from bench.results import read_rows
from tests.helpers import assert_usage_error

TINY = [
    "--preset",
    "smoke",
    "--device",
    "cpu",
    "--dim",
    "16",
    "--kernel-n",
    "4",
    "--kernel-h",
    "8",
    "--models",
    "gss,attention,conv",
    "--seq-lens",
    "8,16,32",
    "--modes",
    "fwd",
]
WIDE = (0.8, 0.85, 0.9, 0.95, 1.0, 1.0, 1.05, 1.1, 1.15, 1.2)  # +-20% around the median: a loose crossover
TIGHT = (1.0, 0.998, 1.002, 0.999, 1.001)  # one round of refined repeats: +-0.2%


def base_ms(model, seq_len):
    """gss 2 L ms; attention slower by (L / 24)^0.2: the time ratio is a power law, so gss is faster above 24;
    conv 3 L ms, crossing neither."""
    return {"gss": 2.0, "conv": 3.0}.get(model, 2.0 * (seq_len / 24) ** 0.2) * seq_len


def ordered(model, spread):
    """attention's rounds in reverse: the paired ratios of gss and attention are as noisy as the spread, with
    their median that of the base times (an involution of the rounds: the log ratios are symmetric about it)."""
    return spread[::-1] if model == "attention" else spread


def planted(cell, spread):
    return [base_ms(cell.model, cell.seq_len) * f for f in ordered(cell.model, spread)]


def row(model, seq_len, spread, **extra):
    times = [base_ms(model, seq_len) * f for f in ordered(model, spread)]
    return dict(
        run_id="r",
        model=model,
        mode="fwd",
        dtype="float32",
        device="cpu",
        batch="1",
        seq_len=str(seq_len),
        dim="16",
        kernel_N="4" if model == "gss" else "",
        kernel_H="8" if model == "gss" else "",
        lambda_imag_exp="true" if model == "gss" else "",
        conv_kernel="",
        compiled="false",
        status="ok",
        time_ms=str(float(np.median(times))),
        times_ms=" ".join(f"{t:.6g}" for t in times),
        **extra,
    )


def rows_of(spread, lengths=(8, 16, 32)):
    return [row(m, L, spread) for L in lengths for m in ("gss", "attention")]


def test_the_crossover_is_the_power_laws_meeting_point_and_its_interval_is_the_one_findings_reports():
    rows = rows_of(WIDE)
    (found,) = refine.crossovers(rows, [("gss", "attention")])
    assert (found.fast, found.slow) == ("gss", "attention")
    assert found.value == pytest.approx(24.0, rel=1e-5)  # the repeats as written: 6 significant digits
    assert [(r["model"], r["seq_len"]) for r in found.bracket] == [
        ("gss", "16"),
        ("attention", "16"),
        ("gss", "32"),
        ("attention", "32"),
    ]
    frame = pd.DataFrame(rows).astype({"seq_len": int, "time_ms": float, "batch": int, "dim": int})
    reported = findings.compute(frame).query("finding == 'crossover'").iloc[0]
    assert (found.value, found.low, found.high) == pytest.approx((reported.value, reported.ci_low, reported.ci_high))
    assert found.low < 24 * 0.85 and found.high > 24 * 1.15 and not found.within(0.15)
    assert refine.wide(rows, [("gss", "attention")], 0.15) == [found]


def test_tight_repeats_give_an_interval_within_15_percent_and_nothing_to_refine():
    rows = rows_of(TIGHT * 2)
    (found,) = refine.crossovers(rows, [("attention", "gss")])  # either way round
    assert found.low >= 24 * 0.85 and found.high <= 24 * 1.15 and found.missing == 0
    assert refine.wide(rows, [("gss", "attention")], 0.15) == []


def test_sweeps_that_never_cross_or_share_one_length_have_no_crossover():
    parallel = [row(m, L, TIGHT * 2) for L in (8, 16) for m in ("gss", "attention")]  # gss slower at 8 and 16
    assert refine.crossovers(parallel, [("gss", "attention")]) == []
    one_length = [row("gss", 16, WIDE), row("attention", 32, WIDE), row("gss", 32, WIDE)]
    assert refine.crossovers(one_length, [("gss", "attention")]) == []


def fake_sweep(monkeypatch, refined_spread, calls, *, longer=("attention", 16), later=1.0):
    """The sweep's cells timed with WIDE repeats, the gauge at 1 ms in every round; the refinement's groups with
    `refined_spread` on a machine `later` times slower (the gauge too), one group per call to measure_group, its
    steps the cells themselves. The `longer` cell ran 4 rounds after the others of its group stopped."""

    def measure_cells(cells, timing, limits, device):
        out = []
        for c in cells:
            times = planted(c, WIDE) + [base_ms(c.model, c.seq_len)] * 4 * ((c.model, c.seq_len) == longer)
            out.append(
                scaling.row_of(scaling.Prepared(c, None, 1, 1.0, 1.0), Timing.of(times, gauge_ms=[1.0] * len(times)))
            )
        return out

    def prepare_cell(cell, device):
        return scaling.Prepared(cell, cell, 1, 1.0, 1.0)

    def measure_group(steps, *, device, warmup, min_repeats, max_repeats, gauge):
        calls.append((len(steps), warmup, min_repeats, max_repeats))
        timed = [[t * later for t in planted(cell, refined_spread)] for cell in steps]
        return [Timing.of(t, gauge_ms=[later] * len(t)) for t in timed]

    monkeypatch.setattr(scaling, "measure_cells", measure_cells)
    monkeypatch.setattr(scaling, "prepare_cell", prepare_cell)
    monkeypatch.setattr(scaling, "measure_group", measure_group)


def test_a_loose_crossover_has_its_four_bracketing_cells_measured_again_until_it_is_within_15_percent(
    tmp_path, monkeypatch, capsys
):
    calls = []
    fake_sweep(monkeypatch, TIGHT, calls)
    assert scaling.main([*TINY, "--out", str(tmp_path / "wide"), "--crossover-ci", "0"]) == 0
    assert calls == []  # 0: no refinement
    before = read_rows(tmp_path / "wide" / "scaling.csv")
    assert refine.wide(before, [("gss", "attention")], 0.15)
    assert scaling.main([*TINY, "--out", str(tmp_path / "run"), "--crossover-ci", "0.15"]) == 0
    after = read_rows(tmp_path / "run" / "scaling.csv")
    # its four bracketing cells as one group, warmed up once; two rounds of tight repeats beside the sweep's ten
    # loose ones bring it within 15%
    assert calls == [(4, 1, 5, 5), (4, 0, 5, 5)]
    assert [(r["model"], r["seq_len"]) for r in after] == [(r["model"], r["seq_len"]) for r in before]
    longer = next(r for r in before if (r["model"], r["seq_len"]) == ("attention", "16"))
    assert len(longer["times_ms"].split()) == 14  # 4 rounds more than the other cells of its group
    for old, new in zip(before, after, strict=True):
        if new["seq_len"] == "8" or new["model"] == "conv":  # outside the bracket, or as long: as the sweep wrote it
            assert {**new, "run_id": ""} == {**old, "run_id": ""}
        else:  # the sweep's rounds that every cell of the group ran, then the refinement's, the gauge's alike
            base = base_ms(new["model"], int(new["seq_len"]))
            tight = [f"{base * f:.6g}" for f in ordered(new["model"], TIGHT)]
            assert new["times_ms"].split() == old["times_ms"].split()[:10] + tight * 2
            assert int(new["repeats"]) == 20 and float(new["time_ms"]) == pytest.approx(base, rel=1e-5)
            assert new["gauge_times_ms"].split() == ["1"] * 20
    (found,) = refine.crossovers(after, [("gss", "attention")])
    assert found.within(0.15) and found.value == pytest.approx(24.0, rel=1e-4)
    assert "refined fwd float32: gss faster than attention above 24 tokens" in capsys.readouterr().err


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_the_other_cells_of_a_refined_length_are_cut_to_the_rounds_the_refined_cells_ran(tmp_path, monkeypatch):
    """conv at 32, not refined, ran 4 sweep rounds more than gss and attention there; the refinement's rounds run on a
    machine 1.5x slower. Paired by position, attention's refinement rounds would meet conv's extra sweep rounds
    (conv's speed-up 16% off); cut to the sweep's 10 shared rounds, conv over attention is the planted ratio."""
    calls = []
    fake_sweep(monkeypatch, TIGHT, calls, longer=("conv", 32), later=1.5)
    assert scaling.main([*TINY, "--out", str(tmp_path), "--crossover-ci", "0.15"]) == 0
    rows = {(r["model"], int(r["seq_len"])): r for r in read_rows(tmp_path / "scaling.csv")}
    conv = rows["conv", 32]
    swept = [f"{base_ms('conv', 32) * f:.6g}" for f in WIDE]
    assert conv["times_ms"].split() == swept and conv["gauge_times_ms"].split() == ["1"] * 10
    assert int(conv["repeats"]) == 10 and float(conv["time_ms"]) == pytest.approx(base_ms("conv", 32), rel=1e-5)
    assert rows["conv", 16] == {**rows["conv", 16], "repeats": "10"}  # 10 rounds already: as the sweep wrote it
    assert rows["attention", 32]["gauge_times_ms"].split() == ["1"] * 10 + ["1.5"] * 10
    frame = findings.compute(analysis.load_scaling(tmp_path))
    speedup = frame.query("finding == 'speedup' and model == 'conv'").iloc[0]
    assert speedup.detail == "at seq_len 32"
    truth = base_ms("attention", 32) / base_ms("conv", 32)
    assert speedup.value == pytest.approx(truth, rel=1e-4) and speedup.ci_low <= truth <= speedup.ci_high


def test_aligned_rounds_cut_every_cell_of_a_refined_group_or_only_the_refined_ones():
    rows = rows_of(WIDE) + [row("conv", 16, WIDE + (1.0,) * 4, gauge_times_ms=" ".join(["1"] * 14))]
    rows[2] = {**rows[2], "times_ms": " ".join(rows[2]["times_ms"].split()[:8])}  # gss at 16: 8 rounds
    refined = [refine.label(r) for r in rows if r["model"] in ("gss", "attention") and r["seq_len"] in ("16", "32")]
    kept = refine.aligned_rounds(rows, refined)
    counts = {(k.split()[0], k.split("seq_len=")[1].split()[0]): len(t) for k, (t, g) in kept.items()}
    assert counts == {
        ("model=gss", "16"): 8,
        ("model=attention", "16"): 8,
        ("model=conv", "16"): 8,
        ("model=gss", "32"): 10,
        ("model=attention", "32"): 10,
    }
    assert kept[refine.label(rows[-1])][1] == [1.0] * 8 and kept[refine.label(rows[3])][1] is None  # no gauge
    only = refine.aligned_rounds(rows, refined, whole_group=False)
    assert refine.label(rows[-1]) not in only and len(only) == 4


def test_a_crossover_that_stays_loose_stops_at_the_budget_and_still_keeps_the_fresh_rows(tmp_path, monkeypatch):
    calls, clock = [], FakeClock()
    fake_sweep(monkeypatch, WIDE[::2], calls)  # refined repeats as loose as the sweep's
    monkeypatch.setattr(
        scaling,
        "measure_group",
        lambda steps, **how: (
            calls.append(1),
            setattr(clock, "now", clock.now + 1.0),
            [Timing.of(planted(c, WIDE[::2])) for c in steps],
        )[2],
    )
    assert scaling.main([*TINY, "--out", str(tmp_path), "--crossover-ci", "0"]) == 0
    spec = cli.parse(scaling.make_parser(), [*TINY, "--out", str(tmp_path)], scaling.make_spec)
    scaling.refine_crossovers(spec, "cpu", ci=0.15, budget_s=3.5, clock=clock)
    rows = read_rows(tmp_path / "scaling.csv")
    # rounds of 5 until the crossover's 3.5 s are spent (4 calls), then the bracket is not tried again; its four
    # cells keep the sweep's 10 paired rounds and add 20 (the other cells, conv's and the length outside it, 10)
    assert len(calls) == 4 and clock.now == 4.0
    assert sorted(int(r["repeats"]) for r in rows) == [10, 10, 10, 10, 10, 30, 30, 30, 30]
    assert not refine.crossovers(rows, [("gss", "attention")])[0].within(0.15)


@pytest.mark.parametrize("value", ["-0.1", "x", "inf"])
def test_a_bad_crossover_ci_exits_2(tmp_path, capsys, value):
    assert_usage_error(scaling.main, [*TINY, "--crossover-ci", value], tmp_path / "run", capsys, "--crossover-ci")


def test_the_quick_and_full_presets_refine_the_gss_attention_crossover_to_15_percent():
    for name in ("quick", "full"):
        how = config.SCALING_PRESETS[name].refine
        assert how["pairs"] == (("gss", "attention"),) and how["ci"] == 0.15 and math.isfinite(how["budget_s"])


def test_each_loose_crossover_gets_its_own_budget(tmp_path, monkeypatch):
    calls, clock = [], FakeClock()
    fake_sweep(monkeypatch, WIDE[::2], calls)
    monkeypatch.setattr(
        scaling,
        "measure_group",
        lambda steps, **how: (
            calls.append(len(steps)),
            setattr(clock, "now", clock.now + 1.0),
            [Timing.of(planted(c, WIDE[::2])) for c in steps],
        )[2],
    )
    argv = [*TINY[:-2], "--modes", "fwd,fwdbwd"]  # the same loose crossover in both modes
    assert scaling.main([*argv, "--out", str(tmp_path), "--crossover-ci", "0"]) == 0
    spec = cli.parse(scaling.make_parser(), [*argv, "--out", str(tmp_path)], scaling.make_spec)
    scaling.refine_crossovers(spec, "cpu", ci=0.15, budget_s=2.5, clock=clock)
    assert calls == [4, 4, 4, 4, 4, 4] and clock.now == 6.0  # 3 rounds each: the first did not spend the second's
    rows = read_rows(tmp_path / "scaling.csv")
    assert sorted({r["mode"] for r in rows if r["repeats"] == "25"}) == ["fwd", "fwdbwd"]
