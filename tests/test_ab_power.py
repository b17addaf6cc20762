"""The power procedure of bench.ab: the planted slow-down on a fake clock (it waits its fraction of the layer's own
forward and backward), the planted copy of models/, the schedule, the counts of power.csv and the figure's shares;
a smoke of the whole procedure (slow)."""

import pytest
import torch
from torch import nn

import models
from bench.ab import plant, power, sides
from bench.plots.power import shares
from bench.results import REPO_ROOT, read_rows


class Work(torch.autograd.Function):
    """x * 2 whose forward takes 1 s and backward 2 s of the fake clock."""

    clock = None

    @staticmethod
    def forward(ctx, x):
        Work.clock[0] += 1.0
        return x * 2

    @staticmethod
    def backward(ctx, grad):
        Work.clock[0] += 2.0
        return grad * 2


class Layer(nn.Module):
    def forward(self, x):
        return Work.apply(x)


@pytest.fixture
def clock(monkeypatch):
    """A perf_counter that moves 1 us a call, and by whatever the layer's work adds."""
    now = [0.0]

    def perf_counter():
        now[0] += 1e-6
        return now[0]

    monkeypatch.setattr(plant.time, "perf_counter", perf_counter)
    monkeypatch.setattr(Work, "clock", now)
    return now


@pytest.mark.parametrize("fraction", [0.05, 0.25])
def test_a_planted_layer_waits_its_fraction_of_its_own_forward_and_backward(clock, fraction):
    specs = {"toy": models.ModelSpec(lambda: Layer(), {}, "toy"), "other": models.ModelSpec(lambda: Layer(), {}, "")}
    plant.slow_down(specs, "toy", fraction)
    layer, other = specs["toy"].build(), specs["other"].build()
    with torch.inference_mode():
        assert torch.equal(layer(torch.ones(3)), torch.full((3,), 2.0))
    assert clock[0] == pytest.approx(1.0 * (1 + fraction), abs=1e-3)
    x = torch.ones(3, requires_grad=True)
    clock[0] = 0.0
    layer(x).sum().backward()
    assert clock[0] == pytest.approx(3.0 * (1 + fraction), abs=1e-3)  # forward 1 s, backward 2 s, both slowed
    assert torch.equal(x.grad, torch.full((3,), 2.0))
    clock[0] = 0.0
    other(x).sum().backward()
    assert clock[0] == pytest.approx(3.0, abs=1e-3)


class FakeCuda:
    """torch.cuda as the plant sees it, on the fake clock (seconds): _sleep(cycles) moves it by cycles at
    CYCLES_PER_MS, an event notes it, capturing is a flag; events made and synchronisations are counted."""

    CYCLES_PER_MS = 1000.0

    def __init__(self, now):
        self.now, self.capturing, self.events, self.syncs = now, False, 0, 0
        cuda = self

        class Event:
            def __init__(self, enable_timing=False):
                assert enable_timing
                cuda.events += 1

            def record(self):
                assert not cuda.capturing
                self.at = cuda.now[0]

            def synchronize(self):
                cuda.syncs += 1

            def elapsed_time(self, end):
                return (end.at - self.at) * 1e3

        self.Event = Event

    def _sleep(self, cycles):
        assert isinstance(cycles, int) and cycles > 0
        self.now[0] += cycles / self.CYCLES_PER_MS / 1e3

    def is_current_stream_capturing(self):
        return self.capturing


@pytest.fixture
def device(clock, monkeypatch):
    """The plant's CUDA path on the fake clock: every tensor is taken for a CUDA one."""
    cuda = FakeCuda(clock)
    monkeypatch.setattr(plant, "_cuda", cuda)
    monkeypatch.setattr(plant, "_on_device", lambda tensor: True)
    monkeypatch.setattr(plant, "_CYCLES_PER_MS", [])
    return cuda


def planted(fraction):
    specs = {"toy": models.ModelSpec(lambda: Layer(), {}, "toy")}
    plant.slow_down(specs, "toy", fraction)
    return specs["toy"].build()


def forward(layer):
    with torch.inference_mode():
        return layer(torch.ones(3))


@pytest.mark.parametrize("fraction", [0.05, 0.25])
def test_on_cuda_a_planted_layer_spins_its_fraction_of_its_own_device_time_even_under_capture(clock, device, fraction):
    layer = planted(fraction)
    forward(layer)  # the first call measures the spin's clock too
    assert plant._CYCLES_PER_MS == [FakeCuda.CYCLES_PER_MS]
    for _ in range(plant.CALIBRATION_CALLS - 1):  # measured: the guard, the layer's 1 s, then the spin
        clock[0] = 0.0
        forward(layer)
        assert clock[0] == pytest.approx(plant.GUARD_MS / 1e3 + 1.0 * (1 + fraction))
    events, syncs = device.events, device.syncs
    for capturing in (False, True):  # calibrated: eager or captured, the same spin, nothing measured
        device.capturing, clock[0] = capturing, 0.0
        assert torch.equal(forward(layer), torch.full((3,), 2.0))
        assert clock[0] == pytest.approx(1.0 * (1 + fraction)) and (device.events, device.syncs) == (events, syncs)


def test_on_cuda_the_backward_spins_its_fraction_of_the_layers_backward(clock, device):
    layer, fraction = planted(0.1), 0.1
    for _ in range(plant.CALIBRATION_CALLS):
        layer(torch.ones(3, requires_grad=True)).sum().backward()
    for capturing in (False, True):
        device.capturing, clock[0], events = capturing, 0.0, device.events
        x = torch.ones(3, requires_grad=True)
        layer(x).sum().backward()
        assert clock[0] == pytest.approx(3.0 * (1 + fraction))  # forward 1 s, backward 2 s, both slowed
        assert torch.equal(x.grad, torch.full((3,), 2.0)) and device.events == events


def test_on_cuda_a_layer_captured_before_any_eager_call_is_not_slowed(clock, device):
    layer = planted(0.1)
    device.capturing = True
    forward(layer)
    assert clock[0] == pytest.approx(1.0) and device.events == 0


def test_the_planted_copy_slows_one_model_and_leaves_the_others(tmp_path):
    clean = power.clean_tree(sides.resolve(None, "head", REPO_ROOT), tmp_path / "clean")
    planted = power.planted_tree(clean, tmp_path / "planted", "conv", 0.1)
    assert "_plant.py" in {p.name for p in (planted / "models").iterdir()}
    source = sides.Source("head", "planted", directory=planted)
    with sides.opened([source]) as (side,):
        assert side.models.build_layer("conv", dim=8).forward.__name__ == "slowed"
        assert side.models.build_layer("gss", dim=8).forward.__name__ == "forward"
    assert models.build_layer("conv", dim=8).forward.__name__ == "forward"


def test_runs_alternate_aa_and_plants():
    assert power.schedule(2, (5.0, 10.0), 1) == [(0.0, 1), (5.0, 1), (10.0, 1), (0.0, 2)]
    assert power.schedule(1, (5.0,), 2) == [(0.0, 1), (5.0, 1), (5.0, 2)]


def row(model, ratio, low, high):
    """An ab.csv row whose second measurement read as its first (tests/test_ab_confirm.py varies them)."""
    first = dict(ratio=str(ratio), ci_low=str(low), ci_high=str(high))
    return dict(model=model, **first, **{f"confirm_{c}": v for c, v in first.items()})


def test_counts_remake_the_verdict_at_each_threshold():
    rows = [
        row("conv", 1.06, 1.04, 1.08),
        row("conv", 1.03, 1.01, 1.05),
        row("gss", 1.04, 1.02, 1.06),
        row("gss", 1.1, 0.95, 1.2),
        dict(model="conv", ratio="", ci_low="", ci_high=""),  # one-sided: not counted
    ]
    at_5 = power.counts(rows, "conv", 5)
    assert (at_5["cells"], at_5["flagged"], at_5["other_cells"], at_5["other_flagged"]) == (2, 1, 2, 0)
    at_2 = power.counts(rows, "conv", 2)
    assert (at_2["flagged"], at_2["other_flagged"]) == (2, 1) and at_2["median_ratio"] == pytest.approx(1.045)


def test_the_figure_pools_runs_into_shares():
    rows = [
        dict(threshold_pct="3", planted_pct="0", flagged="0", cells="4"),
        dict(threshold_pct="3", planted_pct="0", flagged="1", cells="4"),
        dict(threshold_pct="3", planted_pct="10", flagged="4", cells="4"),
        dict(threshold_pct="5", planted_pct="10", flagged="2", cells="4"),
    ]
    assert shares(rows, "flagged", "cells") == {3.0: [(0.0, 1 / 8), (10.0, 1.0)], 5.0: [(10.0, 0.5)]}


@pytest.mark.slow
def test_the_power_procedure_smoke(tmp_path):
    out = tmp_path / "power"
    argv = ["--out", str(out), "--models", "conv,gss", "--seq-lens", "64", "--dim", "32", "--modes", "fwd"]
    assert power.main([*argv, "--aa-runs", "1", "--plants", "50", "--budget", "0.2", "--thresholds", "3,5"]) == 0
    rows = read_rows(out / "power.csv", columns=power.POWER_COLUMNS)
    assert [(r["threshold_pct"], r["planted_pct"]) for r in rows] == [("3", "0"), ("3", "50"), ("5", "0"), ("5", "50")]
    assert all((r["cells"], r["other_cells"]) == ("1", "1") for r in rows)
    assert (out / "power.png").stat().st_size > 0 and (out / "runs" / "plant-50pct-1" / "ab.csv").is_file()


@pytest.mark.parametrize("argv", [["--plants", "0"], ["--model", "gss-hybrid"], ["--revision", "nosuchrev"], ["runs"]])
def test_power_bad_input_is_one_line_exit_2(argv, tmp_path, capsys):
    (tmp_path / "runs").mkdir()  # a power run's directory already
    argv = ["--out", str(tmp_path)] if argv == ["runs"] else [*argv, "--out", str(tmp_path / "new")]
    assert power.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and not (tmp_path / "new").exists()


def test_the_documented_power_table_is_the_committed_power_csv():
    """docs/regression-gate.md's table, cell by cell, from results/baselines/ab-power/power.csv (and each run's
    ab.csv under it re-counted: power.csv is what counts() makes of them)."""
    committed = REPO_ROOT / "results" / "baselines" / "ab-power"
    rows = read_rows(committed / power.POWER_CSV, columns=power.POWER_COLUMNS)
    for row in rows:
        name = "aa-" + row["run"] if row["planted_pct"] == "0" else f"plant-{row['planted_pct']}pct-{row['run']}"
        found = power.counts(read_rows(committed / "runs" / name / "ab.csv"), "conv", float(row["threshold_pct"]))
        assert (found["flagged"], found["other_flagged"]) == (int(row["flagged"]), int(row["other_flagged"]))
    plants = sorted({float(r["planted_pct"]) for r in rows} - {0.0})
    doc = (REPO_ROOT / "docs" / "regression-gate.md").read_text()
    table = [
        line for line in doc.splitlines() if line.startswith("| ") and line.split("|")[1].strip(" *")[:1].isdigit()
    ]
    assert len(table) == len({r["threshold_pct"] for r in rows})
    for line in table:
        threshold, aa, *detected, others = (c.strip(" *").split(" ")[0] for c in line.strip("|").split("|"))
        mine = [r for r in rows if float(r["threshold_pct"]) == float(threshold.rstrip("%"))]
        aa_rows = [r for r in mine if r["planted_pct"] == "0"]
        assert int(aa) == sum(int(r["flagged"]) + int(r["other_flagged"]) for r in aa_rows), line
        for pct, text in zip(plants, detected, strict=True):
            planted = [r for r in mine if float(r["planted_pct"]) == pct]
            assert text == f"{sum(int(r['flagged']) for r in planted)}/{sum(int(r['cells']) for r in planted)}", line
        assert int(others) == sum(int(r["other_flagged"]) for r in mine if r["planted_pct"] != "0"), line
