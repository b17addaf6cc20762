"""Each cell's roofline floor: the layers' minimum bytes against hand counts, the machine's limits read from
--limits FILE, measured once per run directory and recorded in env.json, and scaling.csv's floor_ms and
roofline_frac from them. Limits and timings are planted: nothing here depends on the machine's speed."""

import json
import math

import pytest
from helpers import assert_usage_error

import models
import run_all
from bench import floors, scaling
from bench.core import limits as machine
from bench.core.prepare import Prepared
from bench.core.timing import Timing
from bench.results import read_env, read_rows

TINY = ["--device", "cpu", "--dim", "16", "--kernel-n", "4", "--kernel-h", "8"]
LIMITS = {"matmul_flops_per_s": {"float32": 1e11, "bfloat16": 2e11}, "bandwidth_bytes_per_s": 2e10}


def planted_limits(tmp_path, limits=LIMITS):
    path = tmp_path / "limits.json"
    path.write_text(json.dumps(limits))
    return path


def test_min_bytes_are_input_parameters_and_output_once_and_their_gradients_backward():
    """attention at width 64, its parameters counted by hand: two LayerNorms (weight and bias), the fused QKV
    and output projections (no bias), the MLP's two biased linears (4 x 64 hidden)."""
    d, batch, seq_len = 64, 2, 128
    params = 2 * (2 * d) + 3 * d * d + d * d + (d * 4 * d + 4 * d) + (4 * d * d + d)
    layer = models.build_layer("attention", dim=d)
    assert layer.num_params() == params == 49728
    forward = 4 * (batch * seq_len * d + params + batch * seq_len * d)  # float32: x read, weights read, y written
    assert layer.min_bytes(batch, seq_len, "fwd") == forward == 329984
    assert layer.min_bytes(batch, seq_len, "fwdbwd") == 2 * forward  # dy read, dx and every dW written
    with pytest.raises(ValueError, match="fwd or fwdbwd"):
        layer.min_bytes(batch, seq_len, "bwd")


@pytest.mark.parametrize("name", models.NAMES)
def test_every_layer_states_its_min_bytes_by_the_one_rule(name):
    layer = models.build_layer(name, dim=16, kernel_N=4, kernel_H=8) if "gss" in name else None
    layer = layer or models.build_layer(name, dim=16, **({"kernel_N": 4} if name == "dss" else {}))
    forward = 4 * (2 * 3 * 32 * 16 + sum(p.numel() for p in layer.parameters()))
    assert layer.min_bytes(3, 32, "fwd") == forward and layer.min_bytes(3, 32, "fwdbwd") == 2 * forward


def test_a_floor_is_the_longer_of_its_compute_and_its_traffic():
    assert floors.floor_ms(2e9, 1e6, "float32", LIMITS) == pytest.approx(20.0)  # 2e9 / 1e11 s: compute-bound
    assert floors.floor_ms(1e6, 4e8, "float32", LIMITS) == pytest.approx(20.0)  # 4e8 / 2e10 s: memory-bound
    assert floors.floor_ms(2e9, 1e6, "bfloat16", LIMITS) == pytest.approx(10.0)
    assert floors.floor_ms(2e9, 1e6, "float16", LIMITS) is None  # no rate measured for the dtype
    assert floors.floor_ms(2e9, None, "float32", LIMITS) is None and floors.floor_ms(2e9, 1e6, "float32", None) is None


def test_a_row_carries_its_floor_and_the_share_of_it_the_median_reached():
    cell = scaling.make_spec(scaling.cli.Common(preset="smoke", device="cpu")).cells[0]
    prepared = Prepared(cell, None, params=10, flops=4e9, peak_mem_mb=1.0, min_bytes=1e6)
    row = scaling.row_of(prepared, Timing.of([50.0, 40.0, 60.0]), LIMITS)
    assert row["min_bytes"] == 1e6 and row["floor_ms"] == pytest.approx(40.0) and row["time_ms"] == 50.0
    assert row["roofline_frac"] == pytest.approx(0.8)
    bare = scaling.row_of(Prepared(cell, None, 10, 4e9, 1.0), Timing.of([50.0]), LIMITS)  # a models/ without min_bytes
    assert bare["min_bytes"] == bare["floor_ms"] == bare["roofline_frac"] == ""
    cut = scaling.cut_row(
        {**{k: str(v) for k, v in row.items()}, "batch": "1", "seq_len": "8"}, [80.0, 80.0], None
    )  # a refinement's re-summary keeps the floor and re-takes the share
    assert cut["floor_ms"] == str(row["floor_ms"]) and cut["roofline_frac"] == pytest.approx(0.5)


def test_scaling_rows_are_set_against_the_limits_of_a_file(tmp_path):
    out, path = tmp_path / "run", planted_limits(tmp_path)
    argv = ["--preset", "smoke", *TINY, "--models", "conv,attention", "--seq-lens", "16", "--modes", "fwd"]
    assert scaling.main([*argv, "--out", str(out), "--limits", str(path)]) == 0
    rows = read_rows(out / "scaling.csv")
    assert len(rows) == 2
    for row in rows:
        layer = models.build_layer(row["model"], dim=16, **({"kernel_H": 8} if row["model"] == "conv" else {}))
        min_bytes = layer.min_bytes(1, 16, "fwd") if row["batch"] == "1" else None
        assert float(row["min_bytes"]) == (min_bytes or float(row["min_bytes"]))
        floor = max(float(row["flops"]) / 1e11, float(row["min_bytes"]) / 2e10) * 1e3
        assert float(row["floor_ms"]) == pytest.approx(floor, rel=1e-5)
        assert float(row["roofline_frac"]) == pytest.approx(floor / float(row["time_ms"]), rel=1e-4)
    env = read_env(out)
    assert env["limits"] == {**LIMITS, "source": str(path)} and "--limits" in env["command"]


def test_a_smoke_run_measures_no_limits_and_leaves_the_floor_columns_empty(tmp_path, monkeypatch):
    monkeypatch.setattr(machine, "measure", lambda *a, **k: pytest.fail("smoke measured the limits"))
    out = tmp_path / "run"
    argv = ["--preset", "smoke", *TINY, "--models", "conv", "--seq-lens", "16", "--modes", "fwd", "--out", str(out)]
    assert scaling.main(argv) == 0
    (row,) = read_rows(out / "scaling.csv")
    assert row["floor_ms"] == row["roofline_frac"] == "" and float(row["min_bytes"]) > 0
    assert "limits" not in read_env(out)


def fake_cells(cells, timing, limits, device):
    """Measured rows whose floor is computed from the limits the suite passed."""
    return [
        scaling.row_of(Prepared(cell, None, 1, 1e9, 1.0, 1e6), Timing.of([20.0, 20.0, 20.0]), limits) for cell in cells
    ]


def test_the_limits_are_measured_once_per_run_directory_and_kept_in_env_json(tmp_path, monkeypatch):
    calls = []

    def measure(device, dtypes, **kwargs):
        calls.append((str(device), tuple(dtypes)))
        return {**LIMITS, "method": "planted"}

    monkeypatch.setattr(machine, "measure", measure)
    monkeypatch.setattr(scaling, "measure_cells", fake_cells)
    out = tmp_path / "run"
    argv = ["--preset", "quick", *TINY, "--models", "conv", "--seq-lens", "16,32", "--modes", "fwd", "--out", str(out)]
    assert scaling.main([*argv, "--crossover-ci", "0"]) == 0
    assert calls == [("cpu", ("float32",))]
    rows = read_rows(out / "scaling.csv")
    assert [float(r["roofline_frac"]) for r in rows] == [pytest.approx(0.5)] * 2  # 1e9 / 1e11 s = 10 ms of 20
    shard = out / "scaling.csv"
    shard.unlink()
    assert scaling.main([*argv, "--crossover-ci", "0", "--resume"]) == 0  # the run directory's limits: not again
    assert calls == [("cpu", ("float32",))] and read_env(out)["limits"]["method"] == "planted"


def test_a_failed_measurement_leaves_the_floors_empty_and_the_run_goes_on(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(machine, "measure", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("no timer")))
    monkeypatch.setattr(scaling, "measure_cells", fake_cells)
    out = tmp_path / "run"
    argv = ["--preset", "quick", *TINY, "--models", "conv", "--seq-lens", "16", "--modes", "fwd", "--out", str(out)]
    assert scaling.main([*argv, "--crossover-ci", "0"]) == 0
    assert "limits: not measured (RuntimeError: no timer)" in capsys.readouterr().err
    assert read_rows(out / "scaling.csv")[0]["floor_ms"] == "" and "limits" not in read_env(out)


@pytest.mark.parametrize(
    "limits, message",
    [
        ("not json", "not JSON"),
        ({"matmul_flops_per_s": {"bfloat16": 1e11}, "bandwidth_bytes_per_s": 1e10}, "no rate for float32"),
        ({"matmul_flops_per_s": {"float32": math.inf}, "bandwidth_bytes_per_s": 1e10}, "positive finite"),
    ],
)
def test_a_malformed_limits_file_is_one_line_and_exit_2_with_nothing_written(tmp_path, capsys, limits, message):
    path = tmp_path / "limits.json"
    path.write_text(limits if isinstance(limits, str) else json.dumps(limits))
    argv = ["--preset", "smoke", *TINY, "--limits", str(path)]
    assert_usage_error(scaling.main, argv, tmp_path / "run", capsys, message)
    assert_usage_error(run_all.main, ["--preset", "smoke", "--limits", str(path)], tmp_path / "all", capsys)


def test_run_all_hands_its_limits_file_to_the_suites(tmp_path, monkeypatch):
    monkeypatch.setattr(scaling, "measure_cells", fake_cells)
    out, path = tmp_path / "run", planted_limits(tmp_path)
    argv = ["--preset", "smoke", "--device", "cpu", "--only", "scaling", "--out", str(out), "--limits", str(path)]
    assert run_all.main(argv) == 0
    assert {round(float(r["roofline_frac"]), 6) for r in read_rows(out / "scaling.csv")} == {0.5}
    env = read_env(out)
    assert env["limits"]["source"] == str(path) and "--limits" in env["config"]["suites"]["scaling"]["command"]
