"""The profiling suite: the op breakdown of real profiled cells, the interval arithmetic behind it (CPU wall
time and CUDA kernel time), each category's counts set against planted limits, traces that torch-tb-profiler
loads, a second run, and bad input."""

import json
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch
from torch.autograd import DeviceType

import models
from bench import profiling
from bench.core.config import Cell
from bench.results import read_rows
from tests.helpers import assert_usage_error

SMOKE = ["--device", "cpu", "--preset", "smoke"]
LIMITS = dict(matmul_flops_per_s=dict(float32=2e11), bandwidth_bytes_per_s=2e10, method="planted")


def cells_of(rows):
    cells = defaultdict(dict)
    for row in rows:
        cells[(row["model"], row["mode"], row["seq_len"])][row["category"]] = row
    return cells


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("profiling") / "run"
    limits = out.parent / "limits.json"
    limits.write_text(json.dumps(LIMITS))
    code = profiling.main(["--out", str(out), *SMOKE, "--limits", str(limits)])  # the call run_all.py makes
    return code, out


def test_suite_writes_one_breakdown_per_cell_whose_fractions_sum_to_one(smoke_run):
    code, out = smoke_run
    assert code == 0
    rows = read_rows(out / profiling.CSV)
    assert tuple(rows[0])[:6] == ("model", "mode", "seq_len", "category", "time_ms", "fraction")
    cells = cells_of(rows)
    assert len(cells) == 2 * len(models.NAMES)  # smoke: every model, fwd and fwdbwd
    for (_, mode, _), split in cells.items():
        assert all(r["status"] == "ok" and r["basis"] == "cpu_wall" and r["run_id"] == "run" for r in split.values())
        assert set(split) <= set(profiling.CATEGORIES) and "other" in split
        assert abs(sum(float(r["fraction"]) for r in split.values()) - 1) < 1e-9
        assert all(float(r["time_ms"]) >= 0 for r in split.values())
        assert sum(float(r["time_ms"]) for r in split.values()) == pytest.approx(
            float(split["other"]["step_ms"]), rel=1e-4
        )
        assert ("backward" in split) == (mode == "fwdbwd")
        if mode == "fwdbwd":
            assert float(split["backward"]["time_ms"]) > 0
    for mode in ("fwd", "fwdbwd"):
        gss, attention = cells[("gss", mode, "64")], cells[("attention", mode, "64")]
        assert float(gss["dss_kernel"]["time_ms"]) > 0 and float(gss["fft_conv"]["time_ms"]) > 0
        assert "direct_conv" not in gss and "attention" not in gss
        assert float(attention["attention"]["time_ms"]) > 0 and "fft_conv" not in attention
        assert float(cells[("gss-direct", mode, "64")]["direct_conv"]["time_ms"]) > 0
    assert not (out / "op_breakdown.inflight.json").exists()


def number(row, column):
    return float(row[column]) if row[column] != "" else None


def test_each_category_is_set_against_the_planted_limits(smoke_run):
    _, out = smoke_run
    cells = cells_of(read_rows(out / profiling.CSV))
    for (model, mode, _), split in cells.items():
        for category, row in split.items():
            flops, time_ms, min_bytes = number(row, "flops"), float(row["time_ms"]), number(row, "min_bytes")
            assert flops is not None and flops >= 0
            if flops > 0:
                rate = flops / (time_ms / 1e3)
                assert number(row, "tflops_per_s") == pytest.approx(rate / 1e12, rel=1e-5)
                assert number(row, "peak_frac") == pytest.approx(rate / 2e11, rel=1e-5)
            else:
                assert row["tflops_per_s"] == row["peak_frac"] == ""
            if category in profiling.RANGES:
                assert min_bytes > 0
                assert number(row, "bandwidth_frac") == pytest.approx(min_bytes / 2e10 / (time_ms / 1e3), rel=1e-5)
            else:
                assert row["min_bytes"] == row["bandwidth_frac"] == ""
        assert number(split["projection"], "flops") > 0 and number(split["norm"], "flops") == 0
        assert ("backward" in split and number(split["backward"], "flops") > 0) == (mode == "fwdbwd")
        if model == "gss":
            assert number(split["fft_conv"], "flops") > 0 and number(split["dss_kernel"], "flops") > 0


def test_traces_are_written_per_cell_and_load_in_torch_tb_profiler(smoke_run):
    from torch_tb_profiler import io
    from torch_tb_profiler.profiler.loader import RunLoader

    _, out = smoke_run
    rows = read_rows(out / profiling.CSV)
    trace_dirs = {out / r["trace"] for r in rows}
    assert len(trace_dirs) == 2 * len(models.NAMES) and trace_dirs == set((out / profiling.TRACES).iterdir())
    assert all(len(list(d.glob("*.pt.trace.json"))) == 1 for d in trace_dirs)
    gss = out / profiling.TRACES / "gss_L64_fwdbwd_kernel_N8_kernel_H16"
    run = RunLoader(gss.name, str(gss), io.Cache()).load()
    assert list(run.workers) == [gss.name] and len(run.get_profiles()) == 1
    profile = next(iter(run.get_profiles()))
    assert {"overall", "operator", "trace", "memory"} <= {v.name for v in profile.views}


@pytest.mark.parametrize("model,ranges", [("gss", ("dss_kernel", "fft_conv")), ("attention", ("attention",))])
def test_profiled_cell_splits_the_step_into_the_model_ranges(tmp_path, model, ranges):
    options = dict(kernel_N=16, kernel_H=32, lambda_imag_exp=True) if model == "gss" else {}
    for mode in ("fwd", "fwdbwd"):
        cell = Cell(model=model, mode=mode, dtype="float32", batch=2, seq_len=128, dim=32, **options)
        result = profiling.profile_cell(cell, torch.device("cpu"), tmp_path / mode, warmup=1, active=2)
        assert result.steps == 2 and result.basis == "cpu_wall"
        assert all(result.times_ms[r] > 0 for r in (*ranges, "projection", "norm"))
        assert ("backward" in result.times_ms) == (mode == "fwdbwd")
        if mode == "fwdbwd":
            assert result.times_ms["backward"] > 0
        assert sum(result.times_ms.values()) == pytest.approx(result.step_ms, rel=1e-9)
        assert abs(sum(result.fractions().values()) - 1) < 1e-9
        assert set(result.counts.flops) <= set(result.times_ms) and result.counts.flops["projection"] > 0
        assert sum(result.counts.flops.values()) == result.counts.total_flops
        assert set(result.counts.min_bytes) == set(ranges) | {"projection", "norm"}


def event(name, start, end, *, kernels=(), device=DeviceType.CPU):
    annotation = name in profiling.RANGES or name in (profiling.STEP, "ProfilerStep#1")
    return SimpleNamespace(
        name=name,
        time_range=SimpleNamespace(start=start, end=end),
        device_type=device,
        is_async=False,
        is_user_annotation=annotation,
        kernels=[SimpleNamespace(name=name, device=0, duration=d) for d in kernels],
    )


def test_cpu_split_counts_nested_ranges_once_and_gives_each_instant_to_the_innermost():
    evaluate = profiling.BACKWARD_PREFIX
    events = [
        event("ProfilerStep#1", 0, 110),
        event("step", 0, 100),
        event("fft_conv", 10, 40),
        event("fft_conv", 15, 20),
        event("norm", 30, 35),
        event(f"{evaluate}MulBackward0", 50, 70),
        event(f"{evaluate}torch::autograd::AccumulateGrad", 55, 60),
        event("aten::mul", 56, 58),
        event("projection", 90, 130),
        event("step", 0, 50, device=DeviceType.CUDA),
    ]
    result = profiling.breakdown(events, on_cuda=False)
    assert result.basis == "cpu_wall" and result.steps == 1 and result.step_ms == pytest.approx(0.1)
    assert result.times_ms == pytest.approx(
        dict(fft_conv=0.025, projection=0.01, norm=0.005, backward=0.02, other=0.04)
    )
    assert list(result.times_ms) == [c for c in profiling.CATEGORIES if c in result.times_ms]


def test_cuda_split_gives_kernel_time_to_the_range_that_launched_it_and_averages_steps():
    evaluate = profiling.BACKWARD_PREFIX
    one = [
        event("step", 0, 100),
        event("fft_conv", 10, 40, kernels=(25,)),  # its own GPU annotation: ignored
        event("aten::mul", 12, 14, kernels=(20,)),
        event("projection", 50, 60),
        event("aten::mm", 52, 53, kernels=(5, 3)),
        event("aten::add", 70, 71, kernels=(4,)),
        event(f"{evaluate}MmBackward0", 80, 95),
        event("aten::mm", 81, 82, kernels=(6,)),
    ]
    two = [event("step", 200, 260), event("fft_conv", 210, 220), event("aten::mul", 211, 212, kernels=(10,))]
    result = profiling.breakdown(one + two, on_cuda=True)
    assert result.basis == "cuda_kernels" and result.steps == 2 and result.step_ms == pytest.approx(0.08)
    # step 1: fft_conv 20, projection 8, backward 6, other 100 - 34; step 2: fft_conv 10, other 60 - 10
    assert result.times_ms == pytest.approx(dict(fft_conv=0.015, projection=0.004, backward=0.003, other=0.058))
    assert profiling.breakdown(one, on_cuda=False).basis == "cpu_wall"  # kernels are read only on CUDA


def test_resume_skips_recorded_cells_and_a_second_run_needs_resume(smoke_run, capsys):
    _, out = smoke_run
    before = (out / profiling.CSV).read_bytes()
    assert profiling.main(["--out", str(out), *SMOKE, "--resume"]) == 0
    assert (out / profiling.CSV).read_bytes() == before
    capsys.readouterr()
    assert profiling.main(["--out", str(out), *SMOKE]) == 2
    assert "pass --resume" in capsys.readouterr().err


@pytest.mark.parametrize(
    "flags",
    [["--models", "gss,nope"], ["--seq-lens", "64,0"], ["--seq-lens", "x"], ["--preset", "nope"], ["--modes", "bwd"]],
)
def test_bad_input_is_one_stderr_line_exit_2_and_writes_nothing(tmp_path, capsys, flags):
    assert_usage_error(profiling.main, [*SMOKE, *flags], tmp_path / "run", capsys)


def test_presets_name_every_layer_and_trace_names_are_unique():
    for name in ("quick", "full", "smoke"):
        cells = [c for g in profiling.PROFILE_PRESETS[name].grids for c in g.cells()]
        assert {c.model for c in cells} == set(models.NAMES)
        assert len({profiling.trace_name(c) for c in cells}) == len(cells)
        assert all("." not in profiling.trace_name(c) for c in cells)
    quick = [c for g in profiling.PROFILE_PRESETS["quick"].grids for c in g.cells()]
    assert {(c.seq_len, c.dim, c.batch, c.dtype) for c in quick} == {(2048, 512, 1, "float32")}
