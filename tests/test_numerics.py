"""The numerics suite: float64 against itself is exactly zero, float32 is close, bfloat16 less so; rows,
the float64 reference's failures, float16 on CPU and bad input (the sweep's failures and resume:
tests/test_sweep.py)."""

from collections import defaultdict

import pytest
import torch

import models
from bench import numerics
from bench.results import read_rows
from bench.schema import TABLES
from tests.helpers import SMOKE_ONE_THREAD, assert_usage_error

SMOKE = [*SMOKE_ONE_THREAD, "--device", "cpu"]
pytestmark = pytest.mark.usefixtures("restore_threads")


def run_numerics(out, *extra):
    code = numerics.main([*SMOKE, "--out", str(out), *extra])
    return code, (read_rows(out / numerics.CSV) if (out / numerics.CSV).exists() else [])


@pytest.fixture(scope="module")
def smoke_rows(tmp_path_factory):
    out = tmp_path_factory.mktemp("numerics") / "run"
    assert numerics.main(["--out", str(out), *SMOKE]) == 0  # the call run_all.py makes; smoke has float64 too
    return read_rows(out / numerics.CSV)


def test_rows_have_the_documented_columns(smoke_rows):
    assert tuple(smoke_rows[0]) == TABLES["numerics.csv"].columns
    cells = {(r["model"], r["dtype"], r["seq_len"]) for r in smoke_rows}
    assert len(cells) == len(smoke_rows) == len(models.NAMES) * 3 * 2
    assert all(r["status"] == "ok" and r["error"] == "" and r["device"] == "cpu" for r in smoke_rows)


def test_float64_against_itself_is_exactly_zero_for_every_model(smoke_rows):
    float64 = [r for r in smoke_rows if r["dtype"] == "float64"]
    assert {r["model"] for r in float64} == set(models.NAMES)
    errors = ("out_rel_err", "grad_rel_err", "out_branch_rel_err", "grad_branch_rel_err")
    assert all(r[e] == "0" for r in float64 for e in errors)


def test_float32_is_close_and_bfloat16_is_further_off(smoke_rows):
    err = defaultdict(dict)
    for r in smoke_rows:
        err[(r["model"], r["seq_len"])][r["dtype"]] = [
            float(r[e]) for e in ("out_rel_err", "grad_rel_err", "out_branch_rel_err", "grad_branch_rel_err")
        ]
    for cell, by_dtype in err.items():
        for f32, bf16 in zip(by_dtype["float32"], by_dtype["bfloat16"]):
            assert 0 < f32 < 1e-4, cell
            assert bf16 > 10 * f32 and bf16 < 0.1, cell  # bfloat16 keeps 8 bits of mantissa


def test_errors_are_measured_against_a_float64_reference():
    layer = models.build_layer("conv", dim=8, dtype=torch.float64)
    x, w = torch.randn(1, 16, 8, dtype=torch.float64), torch.randn(1, 16, 8, dtype=torch.float64)
    out, grad = numerics.forward_backward(layer, x, w)
    assert out.dtype == grad.dtype == torch.float64
    torch.testing.assert_close(grad, torch.func.vjp(layer, x)[1](w)[0])
    assert numerics.rel_err(out * (1 + 1e-3), out) == pytest.approx(1e-3)


def test_an_oom_in_the_float64_reference_is_an_oom_row_that_says_so(tmp_path, monkeypatch):
    def out_of_memory(self, cell):
        raise torch.OutOfMemoryError("CUDA out of memory (injected)")

    monkeypatch.setattr(numerics.References, "get", out_of_memory)
    code, rows = run_numerics(tmp_path, "--models", "conv", "--seq-lens", "8,16", "--dtypes", "float32")
    assert code == 0
    assert [(r["status"], r["error"]) for r in rows] == [
        ("oom", "OutOfMemoryError: float64 reference: CUDA out of memory (injected)"),
        ("skipped", "skipped after an OOM at seq_len=8"),
    ]


def test_non_finite_errors_make_an_error_row(monkeypatch):
    monkeypatch.setattr(numerics, "rel_err", lambda value, ref: float("inf"))  # as float16 overflow gives
    cell = numerics.NumericsCell(model="conv", dtype="float32", seq_len=8, dim=8, batch=1)
    row = numerics.measure_cell(cell, torch.device("cpu"), numerics.References(torch.device("cpu")))
    assert row["status"] == "error" and row["error"] == "non-finite output or gradient in float32"
    assert row["out_rel_err"] == float("inf")  # the numbers are kept


def test_float16_cells_of_a_cuda_preset_are_skipped_on_cpu_and_resume_skips_done_cells(tmp_path):
    argv = [
        "--preset",
        "full",
        "--device",
        "cpu",
        "--models",
        "conv",
        "--seq-lens",
        "8",
        "--dim",
        "8",
        "--out",
        str(tmp_path),
    ]
    assert numerics.main(argv) == 0
    rows = read_rows(tmp_path / numerics.CSV)
    assert [(r["dtype"], r["status"]) for r in rows] == [("float32", "ok"), ("bfloat16", "ok"), ("float16", "skipped")]
    assert numerics.main([*argv[:-1], str(tmp_path), "--seq-lens", "8,16", "--resume"]) == 0
    resumed = read_rows(tmp_path / numerics.CSV)
    assert resumed[:3] == rows and [(r["seq_len"], r["dtype"]) for r in resumed[3:]] == [
        ("16", "float32"),
        ("16", "bfloat16"),
        ("16", "float16"),
    ]


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--models", "mamba"], "unknown model 'mamba'"),
        (["--seq-lens", "0"], "--seq-lens: 0 is not positive"),
        (["--seq-lens", "-3"], "--seq-lens: -3 is not positive"),
        (["--dtypes", "float16"], "float16 needs a CUDA device"),
        (["--dtypes", "float8"], "unknown dtype 'float8'"),
        (["--dtypes", "float32,"], "--dtypes needs a comma-separated list"),
        (["--dim", "0"], "--dim: 0 is not positive"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, capsys, argv, message):
    assert_usage_error(numerics.main, ["--device", "cpu", *argv], tmp_path / "run", capsys, message)
