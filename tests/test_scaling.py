"""The scaling suite end to end: rows and formats, FLOPs against the analytic formulas, failures as rows,
kill and resume, shards, and bad input."""

import json
import statistics
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import models
import run_all
from bench import scaling
from bench.core.flops import count_flops
from bench.core.memory import peak_memory_mb
from bench.core.timing import make_step
from bench.results import read_rows
from bench.schema import TABLES
from tests.helpers import assert_usage_error

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--preset", "smoke", "--device", "cpu", "--dim", "16", "--kernel-n", "4", "--kernel-h", "8"]


def run_scaling(tmp_path, *extra):
    code = scaling.main([*TINY, "--out", str(tmp_path), *extra])
    return code, (read_rows(tmp_path / "scaling.csv") if (tmp_path / "scaling.csv").exists() else [])


def test_rows_have_the_documented_columns_and_formats(tmp_path):
    code, rows = run_scaling(tmp_path, "--seq-lens", "8,24", "--conv-kernel", "full,5")
    assert code == 0
    assert tuple(rows[0]) == TABLES["scaling.csv"].columns
    for column in (
        "run_id",
        "model",
        "mode",
        "dtype",
        "device",
        "batch",
        "seq_len",
        "dim",
        "kernel_N",
        "kernel_H",
        "lambda_imag_exp",
        "conv_kernel",
        "compiled",
        "params",
        "flops",
        "tflops_per_s",
        "tokens_per_s",
        "time_ms",
        "time_iqr_ms",
        "repeats",
        "peak_mem_mb",
        "status",
        "error",
    ):
        assert column in rows[0]
    # gss, attention: 2 lengths x 2 modes; gss-direct: x 2 conv_kernels; conv: full does not apply -> 5 only
    by_model = {m: [r for r in rows if r["model"] == m] for m in models.NAMES}
    assert {m: len(r) for m, r in by_model.items()} == {
        "gss": 4,
        "gss-fast": 4,
        "gss-direct": 8,
        "conv": 4,
        "attention": 4,
        "dss": 4,
        "attention-chunked": 4,
    }
    assert all(r["status"] == "ok" and r["error"] == "" and r["device"] == "cpu" for r in rows)
    assert all(r["run_id"] == tmp_path.name and r["compiled"] == "false" for r in rows)
    assert {r["lambda_imag_exp"] for r in by_model["gss"]} == {"true"}
    assert {r["lambda_imag_exp"] for r in by_model["attention"] + by_model["conv"]} == {""}
    assert {r["kernel_N"] for r in by_model["conv"]} == {""} and {r["kernel_H"] for r in by_model["conv"]} == {"8"}
    assert {(r["seq_len"], r["conv_kernel"]) for r in by_model["gss-direct"]} == {
        ("8", "8"),
        ("24", "24"),
        ("8", "5"),
        ("24", "5"),
    }  # taps actually used: seq_len for full
    assert {r["conv_kernel"] for r in by_model["conv"]} == {"5"} and {r["conv_kernel"] for r in by_model["gss"]} == {""}
    for r in rows:
        layer = models.build_layer(
            r["model"],
            dim=16,
            **{
                k: v
                for k, v in dict(
                    kernel_N=4, kernel_H=8, conv_kernel=int(r["conv_kernel"]) if r["conv_kernel"] else None
                ).items()
                if k in models.options_of(r["model"])
            },
        )
        assert int(r["params"]) == layer.num_params()
        if r["mode"] == "fwd":  # gss-fast's kernel is cached by the untimed step before counting: not recomputed
            cached = dict(cached=True) if r["model"] == "gss-fast" else {}
            assert int(r["flops"]) == pytest.approx(layer.flops(1, int(r["seq_len"]), **cached), abs=1)
        time_s, flops = float(r["time_ms"]) / 1e3, int(r["flops"])
        assert float(r["tokens_per_s"]) == pytest.approx(int(r["seq_len"]) / time_s, rel=1e-4)
        assert float(r["tflops_per_s"]) == pytest.approx(flops / time_s / 1e12, rel=1e-4)
        assert int(r["repeats"]) >= 3 and float(r["time_iqr_ms"]) >= 0 and float(r["peak_mem_mb"]) > 0
        times = [float(t) for t in r["times_ms"].split(" ")]  # every timed repeat, in order
        assert len(times) == int(r["repeats"]) and float(r["time_ms"]) == pytest.approx(
            statistics.median(times), rel=1e-5
        )
        gauge = [float(t) for t in r["gauge_times_ms"].split(" ")]  # the drift gauge's time in each of their rounds
        assert len(gauge) == len(times) and min(gauge) > 0
    fwd = {(r["model"], r["seq_len"], r["conv_kernel"]): int(r["flops"]) for r in rows if r["mode"] == "fwd"}
    for r in rows:
        if r["mode"] == "fwdbwd":  # backward costs between one and three forwards in every model
            assert 2 <= int(r["flops"]) / fwd[(r["model"], r["seq_len"], r["conv_kernel"])] <= 4
    assert (tmp_path / "env.json").exists() and not (tmp_path / "scaling.inflight.json").exists()


@pytest.mark.parametrize("name", models.NAMES)
@pytest.mark.parametrize("batch,seq_len", [(1, 1), (2, 100), (1, 1024)])
def test_counted_forward_flops_equal_the_analytic_formula(name, batch, seq_len):
    layer = models.build_layer(name, dim=64, **({"kernel_N": 32, "kernel_H": 48} if name.startswith("gss") else {}))
    step = make_step(layer, torch.randn(batch, seq_len, 64), mode="fwd")
    counted, analytic = count_flops(step), layer.flops(batch, seq_len)
    print(f"{name} B={batch} L={seq_len}: counted {counted} analytic {analytic}")
    assert counted == pytest.approx(analytic, rel=0.02)


# gss, gss-fast and attention in the default run; the others (0.6-0.7 s each here) with the slow tests
@pytest.mark.parametrize(
    "name",
    [n if n in ("gss", "gss-fast", "attention") else pytest.param(n, marks=pytest.mark.slow) for n in models.NAMES],
)
def test_cpu_peak_memory_repeats_between_identical_runs(name):
    layer = models.build_layer(name, dim=32)
    step = make_step(layer, torch.randn(2, 256, 32), mode="fwdbwd")
    count_flops(step)  # a first step under a dispatch mode, as prepare_cell counts FLOPs before weighing: alone in
    # a process, conv's, dss's and gss-direct's first weighed step peaked 0.25 MiB above their second without it
    first, second = peak_memory_mb(step, device="cpu"), peak_memory_mb(step, device="cpu")
    assert first > 0 and abs(first - second) <= 0.02 * first


def test_an_oom_of_gss_direct_with_every_tap_skips_its_longer_lengths(tmp_path, monkeypatch):
    real = scaling.measure_cells

    def fake(cells, timing, limits, device):
        return [
            torch.OutOfMemoryError("CUDA out of memory (injected)")
            if cell.seq_len >= 16
            else real([cell], timing, limits, device)[0]
            for cell in cells
        ]

    monkeypatch.setattr(scaling, "measure_cells", fake)
    code, rows = run_scaling(tmp_path, "--models", "gss-direct", "--modes", "fwd", "--seq-lens", "8,16,32")
    assert code == 0
    assert [(r["conv_kernel"], r["status"]) for r in rows] == [("8", "ok"), ("16", "oom"), ("32", "skipped")]


def test_a_cell_two_grids_share_under_different_names_is_listed_once(capsys):
    # gss-direct with 64 taps at length 64 is gss-direct with every tap: one row key, one cell
    assert (
        scaling.main(
            [
                *TINY,
                "--list",
                "--models",
                "gss-direct",
                "--seq-lens",
                "64",
                "--modes",
                "fwd",
                "--conv-kernel",
                "64,full",
            ]
        )
        == 0
    )
    assert len(capsys.readouterr().out.splitlines()) == 1
    assert scaling.main(["--preset", "full", "--device", "cpu", "--list"]) == 0
    cells = capsys.readouterr().out.splitlines()
    keys = [c.replace("conv_kernel=4096 ", "") for c in cells if "model=gss-direct" in c and "seq_len=4096" in c]
    assert len(keys) == len(set(keys))


def test_cpu_cells_predicted_to_exceed_free_memory_are_skipped(tmp_path, monkeypatch):
    monkeypatch.setattr(scaling, "free_memory_mb", lambda: 0.1)  # only the first length of a series can run
    code, rows = run_scaling(tmp_path, "--models", "attention", "--modes", "fwd", "--seq-lens", "64,128")
    assert code == 0
    assert [r["status"] for r in rows] == ["ok", "skipped"]
    assert "exceeds 80% of 0 MiB free" in rows[1]["error"]


def test_options_that_do_not_apply_are_not_multiplied_out(capsys):
    assert (
        scaling.main(
            [
                *TINY,
                "--list",
                "--seq-lens",
                "8",
                "--modes",
                "fwd",
                "--kernel-n",
                "4,8",
                "--lambda-imag-exp",
                "true,false",
                "--conv-kernel",
                "3,full",
            ]
        )
        == 0
    )
    cells = capsys.readouterr().out.splitlines()
    count = {m: sum(f"model={m} " in c for c in cells) for m in models.NAMES}
    assert count == {
        "gss": 4,
        "gss-fast": 4,
        "gss-direct": 8,
        "conv": 1,
        "attention": 1,
        "dss": 4,
        "attention-chunked": 1,
    }


def test_presets_hold_the_documented_grids(capsys):
    assert scaling.main(["--preset", "quick", "--device", "cpu", "--list"]) == 0
    cells = capsys.readouterr().out.splitlines()
    for model, longest in (("gss", 8192), ("dss", 8192), ("attention", 4096), ("attention-chunked", 4096)):
        lengths = [int(c.split("seq_len=")[1].split()[0]) for c in cells if f"model={model} mode=fwdbwd" in c]
        assert max(lengths) == longest and min(lengths) == 256
    assert any("lambda_imag_exp=false" in c for c in cells) and any("conv_kernel=16" in c for c in cells)


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--models", "mamba"], "unknown model 'mamba'"),
        (["--preset", "huge"], "unknown preset 'huge'"),
        (["--modes", "bwd"], "unknown mode 'bwd'"),
        (["--dtype", "int8"], "unknown dtype 'int8'"),
        (["--dtype", "float16"], "float16 needs a CUDA device"),
        (["--frobnicate"], "unrecognized arguments"),
        (["--seq-lens", "0"], "--seq-lens: 0 is not positive"),
        (["--seq-lens", "-4"], "--seq-lens: -4 is not positive"),
        (["--seq-lens", "1.5"], "not an integer"),
        (["--seq-lens", ""], "--seq-lens needs a comma-separated list"),
        (["--seq-lens", "8,,16"], "--seq-lens needs a comma-separated list"),
        (["--kernel-n", "0"], "--kernel-n: 0 is not positive"),
        (["--conv-kernel", "zero"], "not an integer"),
        (["--lambda-imag-exp", "maybe"], "not true or false"),
        (["--shard", "3/2"], "--shard 3/2"),
        (["--shard", "x"], "--shard needs I/N"),
        (["--device", "tpu"], "unknown device 'tpu'"),
        (["--models", "conv", "--conv-kernel", "full"], "no requested model takes the options given"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, capsys, argv, message):
    assert_usage_error(scaling.main, argv, tmp_path / "run", capsys, message)


@pytest.mark.parametrize(
    "name,content",
    [
        ("scaling.csv", "model,mode\ngss,fwd,extra\n"),
        ("scaling.csv", "\xff\xfe,\n"),
        ("scaling.inflight.json", "{not json"),
    ],
)
def test_a_malformed_file_in_the_run_directory_exits_2_and_is_left_as_it_was(tmp_path, capsys, name, content):
    out = tmp_path / "run"
    out.mkdir()
    (out / name).write_text(content, encoding="latin-1")
    assert scaling.main([*TINY, "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "malformed" in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in out.iterdir()) == [name]  # no env.json, no rows
    assert (out / name).read_text(encoding="latin-1") == content


def test_an_unwritable_output_directory_exits_2(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert scaling.main([*TINY, "--seq-lens", "8", "--out", str(blocker / "run")]) == 2
    assert capsys.readouterr().err.startswith("error: cannot write to")
    assert blocker.read_text() == "not a directory"


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_without_a_gpu_exits_2(tmp_path, capsys):
    assert scaling.main(["--device", "cuda", "--out", str(tmp_path / "x")]) == 2
    assert "no CUDA device" in capsys.readouterr().err


@pytest.mark.slow  # its own process (2 s); in process: test_bad_input_exits_2_with_one_line_and_writes_nothing
def test_a_bad_command_line_is_one_line_from_the_shell(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "bench.scaling", "--models", "gss,nope", "--out", str(tmp_path / "x")],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip() == (
        "error: --model: unknown model 'nope'; valid: gss, gss-fast, gss-direct, conv, "
        "attention, dss, attention-chunked, gss-hybrid"
    )


@pytest.mark.slow  # every suite's smoke preset, figures and report: 10 s
def test_run_all_runs_every_suite_into_one_directory(tmp_path, capsys):
    assert run_all.main(["--preset", "smoke", "--device", "cpu", "--out", str(tmp_path)]) == 0
    assert str(tmp_path) in capsys.readouterr().out
    assert len(read_rows(tmp_path / "scaling.csv")) == 4 * len(models.NAMES)
    env = json.loads((tmp_path / "env.json").read_text())
    assert env["command"] == f"run_all.py --preset smoke --device cpu --out {tmp_path}"  # the whole run's command
    assert set(env["config"]["suites"]) == {"scaling", "perplexity", "profiling", "decode", "numerics"}
    assert "python run_all.py --preset smoke" in (tmp_path / "REPORT.md").read_text()
    assert run_all.main(["--only", "plots,nope"]) == 2
    assert run_all.main(["--resume"]) == 2


def test_the_models_of_a_length_are_timed_as_one_group(tmp_path, monkeypatch):
    groups = []
    real = scaling.measure_group

    def spy(steps, **kwargs):
        groups.append((len(steps), kwargs["gauge"] is not None))
        return real(steps, **kwargs)

    monkeypatch.setattr(scaling, "measure_group", spy)
    code, rows = run_scaling(tmp_path, "--models", "gss,conv,attention", "--seq-lens", "8,16")
    assert code == 0 and groups == [(3, True)] * 4  # 2 modes x 2 lengths, every model of each together, gauged
    # the gauge's rounds are the group's: the cells of a group that ran as many rounds share their gauge times
    for length in ("8", "16"):
        group = [r for r in rows if (r["mode"], r["seq_len"]) == ("fwd", length)]
        shortest = min(int(r["repeats"]) for r in group)
        assert len({tuple(r["gauge_times_ms"].split()[:shortest]) for r in group}) == 1
    assert [(r["mode"], r["seq_len"], r["model"]) for r in rows[:6]] == [
        ("fwd", "8", "gss"),
        ("fwd", "8", "conv"),
        ("fwd", "8", "attention"),
        ("fwd", "16", "gss"),
        ("fwd", "16", "conv"),
        ("fwd", "16", "attention"),
    ]


def test_a_shard_holds_whole_groups(capsys):
    argv = [*TINY, "--models", "gss,conv,attention", "--seq-lens", "8,16,32", "--modes", "fwd", "--list"]
    seen = []
    for i in range(2):
        assert scaling.main([*argv, "--shard", f"{i}/2"]) == 0
        lines = capsys.readouterr().out.splitlines()
        lengths = [line.split("seq_len=")[1].split()[0] for line in lines]
        assert all(lengths.count(length) == 3 for length in lengths)  # every model of a length in one shard
        seen += lines
    assert len(seen) == len(set(seen)) == 9


ORDER_RUN = textwrap.dedent("""
    import sys
    sys.path.insert(0, {root!r})
    import torch
    from bench.core.config import Cell
    from bench.scaling import prepare_cell
    torch.set_num_threads(1)
    a = Cell(model="gss", mode="fwd", dtype="float32", batch=1, seq_len=128, dim=128, kernel_N=512, kernel_H=256,
             lambda_imag_exp=True)
    b = Cell(model="attention", mode="fwd", dtype="float32", batch=1, seq_len=128, dim=128)
    print(" ".join(str(prepare_cell(cell, torch.device("cpu")).peak_mem_mb) for cell in (a, b, a)))
""")


@pytest.mark.slow  # a fresh process (the first cell of a process is the point): 4 s of the default run's 90
def test_peak_memory_does_not_depend_on_the_cells_run_before():
    """The first step of a process keeps one more buffer alive (gss read 2.70 MiB first, 2.63 later): the peak is read
    on a cell's second step, so a cell first in its process reads what it reads after another cell."""
    done = subprocess.run(
        [sys.executable, "-c", ORDER_RUN.format(root=str(ROOT))], capture_output=True, text=True, check=True
    )
    first, other, again = (float(p) for p in done.stdout.split())  # gss first in a fresh process, then after another
    assert first == again and first > 0 and other > 0
