"""The coverage simulation (bench.analysis.coverage): findings.csv's 95% intervals on planted runs whose truth is
known, timed under a drift shared by whatever runs at one moment, with issue 28's fixes and with each undone."""

import numpy as np
import pytest

from bench.analysis import coverage

# The quick reference's fwdbwd medians of gss, gss-fast and attention up to 4096, 20 rounds a cell, but at 512 (the
# shorter length of the gss/attention bracket the refinement re-measures) gss and attention 10 and gss-fast 30, as
# the cells of one group differ (the reference's fwd 256 group: 12 to 77 rounds).
ROUNDS = {("gss", 512): 10, ("attention", 512): 10, ("gss-fast", 512): 30}
MODELS = ("gss", "gss-fast", "attention")
TRUTH = {
    "fwdbwd": {
        m: {L: (t, ROUNDS.get((m, L), 20)) for L, (t, _) in coverage.TRUTH["fwdbwd"][m].items() if L <= 4096}
        for m in MODELS
    }
}
DRIFT = coverage.SCENARIOS[-1]  # strong drift, the bracket refined after the sweep
EDGE, REFINED = coverage.NAMED  # gss-fast/attention's crossover at 266 tokens; gss-fast over gss at 512


@pytest.fixture(scope="module")
def table():
    return coverage.simulate(DRIFT, 40, seed=1, truth=TRUTH, resamples=200).set_index(
        ["variant", "finding", "mode", "model", "other", "length"]
    )


def test_the_planted_truths():
    truths = coverage.truths(TRUTH)
    assert truths["slope", "fwdbwd", "attention", "", ""] == pytest.approx(np.log(898.951 / 149.357) / np.log(4))
    assert truths[EDGE] == pytest.approx(266.3, abs=0.1) and truths[REFINED] == pytest.approx(72.8123 / 61.5461)
    assert truths["slope_diff", "fwdbwd", "gss", "attention", ""] == pytest.approx(
        np.log(632.573 / 141.679 / (898.951 / 149.357)) / np.log(4)
    )
    assert sorted({k[0] for k in truths}) == ["crossover", "slope", "slope_diff", "speedup"]
    assert len(truths) == 3 + 2 + 2 + 7  # gss/attention, gss-fast/attention; over attention at 4096, over gss x5
    assert DRIFT.refine and 0.05 < DRIFT.level_sd < 0.07


def test_the_wall_order_rotates_each_round_with_the_gauge_first_and_the_refinement_last():
    plan = coverage.Plan({"fwd": {"a": {8: (1.0, 2)}, "b": {8: (2.0, 3)}}})
    assert plan.events.tolist() == [-1, 0, 1, -1, 1, 0, -1, 1] and plan.gauge.tolist() == [0, 0, 0, 3, 3, 3, 6, 6]
    plan = coverage.Plan(TRUTH, refine_brackets=True)
    bracket = sorted((plan.cells[i][1], plan.cells[i][2]) for i in plan.refined)
    assert bracket == [("attention", 512), ("attention", 1024), ("gss", 512), ("gss", 1024)]
    assert len(plan.events) - plan.sweep == coverage.REFINE_ROUNDS * 5 and set(plan.events[plan.sweep :]) == {
        -1,
        *plan.refined,
    }


def test_the_refinement_cuts_a_group_to_the_rounds_its_refined_cells_ran_or_before_issue_28_only_them():
    plan = coverage.Plan(TRUTH, refine_brackets=True)
    times = plan.timed(coverage.Scenario("none"), np.random.default_rng(0))
    rounds = {
        undone: {
            (r["model"], r["seq_len"]): len(r["times_ms"].split()) for r in coverage.rows_of(plan, times, undone=undone)
        }
        for undone in (False, True)
    }
    assert [rounds[False][m, "512"] for m in MODELS] == [30, 10, 30]  # gss-fast cut to the 10 sweep rounds both ran
    assert [rounds[True][m, "512"] for m in MODELS] == [30, 30, 30]  # the rule before: gss-fast kept its 30
    assert rounds[False]["gss", "1024"] == 40 and rounds[False]["gss-fast", "2048"] == 20


def test_under_a_shared_drift_the_intervals_cover_the_truth(table):
    fixed = table.loc["fixed"]
    for kind in ("slope", "crossover", "speedup"):
        assert fixed.loc[kind].covered.mean() >= 0.85, fixed.loc[kind]
    assert fixed.loc[EDGE].covered >= 0.85 and fixed.loc[REFINED].covered >= 0.85
    assert fixed.absent.max() <= 0.05 and fixed.withheld.max() == 0


def test_with_the_fixes_undone_they_do_not(table):
    """Each cell's repeats bootstrapped on its own (no gauge), the conditional crossover interval, and position
    pairing after the refinement."""
    undone = table.loc["undone"]
    assert undone.loc["slope"].covered.mean() <= 0.75, undone.loc["slope"]
    assert undone.loc[EDGE].covered <= 0.75 and undone.loc[REFINED].covered <= 0.75


def test_the_command_prints_the_table_for_the_docs(capsys):
    assert coverage.main(["--runs", "1", "--resamples", "40"]) == 0
    out = capsys.readouterr().out
    assert "| strong drift, refined | fixed | slope |" in out and "phi 0.995, sd 0.006 (stationary 6.0%)" in out
    for bad in (["--runs", "0"], ["--resamples", "x"], ["--seed", "-1"]):
        assert coverage.main(bad) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: --") and len(err.splitlines()) == 1
