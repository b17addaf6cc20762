"""Bracketed learning rates (issue 28): a selection whose best rate is the smallest or largest tried extends the grid
by a step of its ratio that way, on the selection seed, until the best has a tried neighbour on both sides or two
extensions a side were tried; the same code for language modelling and recall, with planted scores instead of
trainings; the extension rates are ordinary rows, the other seeds train at the chosen rate (also on --resume), and
rates given with --lr are never extended."""

import math
from dataclasses import replace

import pytest

from bench import perplexity
from bench.perplexity import grid, lm, mqar, rates
from bench.perplexity.training import TrainResult
from bench.results import read_rows

TINY = ["--preset", "smoke", "--device", "cpu"]


def planted(best_rate):
    """A score peaked at best_rate in log(rate): every fit records its rate."""
    calls = []

    def fit(rate):
        calls.append(rate)
        return rates.Tried(rate, -abs(math.log(rate / best_rate)), [dict(lr=rate)], kept=f"model at {rate:g}")

    return fit, calls


@pytest.mark.parametrize(
    "grid, best, tried, chosen",
    [
        ((0.006, 0.012, 0.024), 0.012, [0.006, 0.012, 0.024], 0.012),  # bracketed: nothing added
        ((0.006, 0.012, 0.024), 0.048, [0.006, 0.012, 0.024, 0.048, 0.096], 0.048),  # one step up brackets it
        ((0.006, 0.012, 0.024), 0.003, [0.0015, 0.003, 0.006, 0.012, 0.024], 0.003),  # below, the same
        ((0.006, 0.012, 0.024), 1.0, [0.006, 0.012, 0.024, 0.048, 0.096], 0.096),  # two a side, then the edge
        ((0.006, 0.012, 0.024), 1e-6, [0.0015, 0.003, 0.006, 0.012, 0.024], 0.0015),
        ((0.001, 0.003), 0.001, [0.000333333333333, 0.001, 0.003], 0.001),  # a ratio of 3
        ((0.001, 0.003), 1e-9, [0.000111111111111, 0.000333333333333, 0.001, 0.003], 0.000111111111111),
        ((0.006, 0.012), 0.012, [0.006, 0.012, 0.024], 0.012),  # two rates bracket nothing: one step up
    ],
)
def test_the_selection_extends_past_an_edge_by_the_grids_ratio_at_most_twice_a_side(grid, best, tried, chosen):
    fit, calls = planted(best)
    out, winner = rates.select(grid, fit)
    assert [t.rate for t in out] == tried == sorted(calls) and len(calls) == len(set(calls))
    assert winner.rate == chosen and winner.kept == f"model at {chosen:g}"
    assert [t.kept for t in out if t is not winner] == [None] * (len(out) - 1)  # one trained model kept at a time


def test_extensions_zero_trains_the_rates_as_given_and_ties_keep_the_smaller_rate():
    fit, calls = planted(1.0)
    out, winner = rates.select((0.002, 0.004), fit, extensions=0)
    assert calls == [0.002, 0.004] and winner.rate == 0.004
    flat = lambda rate: rates.Tried(rate, 0.5, [])  # noqa: E731  a tie everywhere: the smallest, extended down twice
    out, winner = rates.select((0.002, 0.004), flat)
    assert [t.rate for t in out] == [0.0005, 0.001, 0.002, 0.004] and winner.rate == 0.0005
    nan = lambda rate: rates.Tried(rate, math.nan if rate < 0.004 else 0.1, [])  # noqa: E731  a NaN never wins
    assert rates.select((0.002, 0.004), nan, extensions=0)[1].rate == 0.004
    with pytest.raises(ValueError, match="at least two rates"):
        rates.select((0.002,), flat)


class FakeLM:
    def __init__(self, rate):
        self.rate = rate

    def num_params(self):
        return 1


@pytest.fixture
def best_at(monkeypatch):
    """Trainings replaced by planted scores peaked at a rate: LM bits/byte and recall accuracy as functions of the
    rate trained at; returns the setter and the rates trained, in order, per task."""
    state = {"best": 1.0, "lm": [], "recall": []}

    def score(rate):
        return abs(math.log(rate / state["best"]))

    def fit(cell, corpus, rate, device):
        state["lm"].append((cell.seed, rate))
        return FakeLM(rate), TrainResult(losses=(1.0,), train_loss=1.0, time_s=0.0)

    def evaluate(model, cell, corpus, split, multiple, device):
        bpb = 1.0 + score(model.rate)
        return dict(split=split, eval_seq_len=multiple * cell.seq_len, bits_per_byte=bpb, eval_loss=bpb, status="ok")

    def train(model, next_batch, *, lr, **kwargs):
        state["recall"].append(lr)
        model.trained_at = lr
        return TrainResult(losses=(1.0,), train_loss=1.0, time_s=0.0)

    smoke = grid.PERPLEXITY_PRESETS["smoke"]  # its recall grid with the LM grid's two rates
    grids = tuple(replace(g, lrs=(2e-3, 4e-3)) for g in smoke.grids)
    monkeypatch.setitem(grid.PERPLEXITY_PRESETS, "smoke", replace(smoke, grids=grids))
    monkeypatch.setattr(lm, "fit", fit)
    monkeypatch.setattr(lm, "evaluate", evaluate)
    monkeypatch.setattr(mqar, "train", train)
    monkeypatch.setattr(mqar, "recall_accuracy", lambda model, *data: 1 / (1 + score(model.trained_at)))
    return state


def selected(rows):
    return sorted({(r["seed"], float(r["lr"])) for r in rows if r["lr_selected"] == "true"})


def test_both_tasks_extend_on_the_selection_seed_and_the_other_seeds_train_at_the_extension(tmp_path, best_at):
    best_at["best"] = 0.05  # the grids' rates are 0.002 and 0.004: two steps up reach 0.016, still short
    argv = [*TINY, "--models", "gss", "--seeds", "0,1", "--out", str(tmp_path)]
    assert perplexity.main([*argv, "--task", "lm,recall"]) == 0
    lm_rows = read_rows(tmp_path / "perplexity.csv")
    val = [(r["seed"], float(r["lr"]), r["lr_selected"]) for r in lm_rows if r["split"] == "val"]
    assert val == [("0", 0.002, "false"), ("0", 0.004, "false"), ("0", 0.008, "false"), ("0", 0.016, "true")]
    assert selected([r for r in lm_rows if r["split"] == "test"]) == [("0", 0.016), ("1", 0.016)]
    assert [(s, r) for s, r in best_at["lm"] if s == 1] == [(1, 0.016)]  # the other seed: the chosen rate only
    recall = read_rows(tmp_path / "recall.csv")
    assert [(r["seed"], float(r["lr"]), r["lr_selected"]) for r in recall] == [
        ("0", 0.002, "false"),
        ("0", 0.004, "false"),
        ("0", 0.008, "false"),
        ("0", 0.016, "true"),
        ("1", 0.016, "true"),
    ]


def test_a_resumed_run_reads_the_extended_selection_back(tmp_path, best_at):
    best_at["best"] = 0.008
    argv = [*TINY, "--task", "recall", "--models", "gss", "--out", str(tmp_path)]
    assert perplexity.main([*argv, "--seeds", "0"]) == 0
    assert selected(read_rows(tmp_path / "recall.csv")) == [("0", 0.008)]
    best_at["recall"].clear()
    best_at["best"] = 0.002  # a selection run again would now choose 0.002
    assert perplexity.main([*argv, "--seeds", "0,1", "--resume"]) == 0
    assert best_at["recall"] == [0.008]  # only seed 1, at the rate read back
    assert selected(read_rows(tmp_path / "recall.csv")) == [("0", 0.008), ("1", 0.008)]


def test_rates_given_with_lr_are_trained_as_given(tmp_path, best_at):
    best_at["best"] = 0.05
    argv = [*TINY, "--task", "recall", "--models", "gss", "--lr", "0.002,0.004", "--out", str(tmp_path)]
    assert perplexity.main(argv) == 0
    assert [(float(r["lr"]), r["lr_selected"]) for r in read_rows(tmp_path / "recall.csv")] == [
        (0.002, "false"),
        (0.004, "true"),
    ]
    smoke = grid.PERPLEXITY_PRESETS["smoke"]
    assert {c.lr_extensions for c in perplexity.build_cells(smoke, lr=(0.002, 0.004))} == {0}
    assert {c.lr_extensions for c in perplexity.build_cells(smoke)} == {rates.EXTENSIONS}
