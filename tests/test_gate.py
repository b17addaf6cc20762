"""run_all.py --check: the gate on a run, and the second measurement of the cells it flags for time alone.
Cells are measured by a fake (fixed times, counts and memory), so no assertion depends on the machine's speed."""

import csv
import json
import shutil

import pytest

import run_all
from bench import scaling
from bench.core import cli, config
from bench.core import limits as machine
from bench.results import format_value, read_env, read_rows

SMOKE = ["--preset", "smoke", "--device", "cpu"]


def test_a_rows_key_gives_back_exactly_its_cell():
    """The gate's second measurement rebuilds a flagged cell from its scaling.csv key, as written."""
    cells = scaling.make_spec(cli.Common(preset="quick", device="cpu")).cells
    assert len(cells) == 86  # 68, and gss-fast at 256..8192 in both modes and in the kernel_N ablation
    for cell in cells:
        written = {c: format_value(v) for c, v in cell.key_row("cpu").items()}  # as the gate reads it back
        assert config.Cell.from_key_row(written) == cell


def slow_down(run_dir, model, factor):
    """Make every `model` cell of a run's scaling.csv `factor` times slower, as a disturbed run would be: its
    median, IQR and every timed repeat."""
    path = run_dir / "scaling.csv"
    rows = read_rows(path)
    for row in rows:
        if row["model"] == model:
            for column in ("time_ms", "time_iqr_ms"):
                row[column] = str(float(row[column]) * factor)
            row["times_ms"] = " ".join(f"{float(t) * factor:.6g}" for t in row["times_ms"].split())
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


TIME_MS = {"gss": 2.0, "attention": 3.0, "conv": 1.0}
REPEATS = (1.0, 0.99, 1.01, 0.995, 1.005)  # fractions of the median: an IQR of 1% of it


def fake_cells(cells, timing, limits, device, *, factor=1.0):
    """Measured cells with the same numbers every time: a time depends on the model and length alone."""
    rows = []
    for cell in cells:
        time_ms = TIME_MS[cell.model] * cell.seq_len / 32 * (factor if cell.model == "gss" else 1.0)
        rows.append(
            dict(
                params=1000,
                flops=10_000 * cell.seq_len,
                tflops_per_s=1e-6,
                tokens_per_s=1e3,
                time_ms=time_ms,
                time_iqr_ms=0.01 * time_ms,
                repeats=len(REPEATS),
                peak_mem_mb=1.0,
                times_ms=" ".join(f"{time_ms * f:.6g}" for f in REPEATS),
                status="ok",
            )
        )
    return rows


@pytest.fixture
def fake_measure(monkeypatch):
    monkeypatch.setattr(scaling, "measure_cells", fake_cells)


def test_a_slowdown_that_does_not_reproduce_passes_and_one_that_does_fails(tmp_path, monkeypatch, capsys, fake_measure):
    base, current = tmp_path / "base", tmp_path / "current"
    assert scaling.main([*SMOKE, "--models", "gss,attention", "--out", str(base)]) == 0
    first = read_rows(base / "scaling.csv")[0]  # the gate's noise terms come from the repeats
    assert first["repeats"] == "5" and first["times_ms"] == " ".join(
        f"{float(first['time_ms']) * f:.6g}" for f in REPEATS
    )
    shutil.copytree(base, current)
    slow_down(current, "gss", 20.0)  # a disturbed first measurement of every gss cell
    args = run_all.parse(["--check", str(base), "--relative", "--tolerance", "3", *SMOKE, "--only", "scaling"])
    capsys.readouterr()
    assert run_all.check(args, current) == 0  # measured again: not a regression
    captured = capsys.readouterr()
    assert captured.out.count("regression    scaling.csv     model=gss") == 4  # flagged by the first gate
    assert "4 cell(s) flagged for time alone" in captured.err
    assert captured.out.strip().splitlines()[-1] == (
        "8 cells compared (cpu, relative times, time tolerance 300%): 0 regressions, 0 improvements, 0 one-sided"
    )
    again = read_rows(current / "remeasured" / "scaling.csv")
    assert sorted((r["model"], r["mode"], r["seq_len"]) for r in again) == sorted(
        (m, mode, L) for m in ("gss", "attention") for mode in ("fwd", "fwdbwd") for L in ("32", "64")
    )

    # a slow-down that is really in the code: the second measurement shows it too
    monkeypatch.setattr(scaling, "measure_cells", lambda *a: fake_cells(*a, factor=20.0))
    shutil.rmtree(current / "remeasured")
    assert run_all.check(args, current) == 1
    assert capsys.readouterr().out.strip().splitlines()[-1].endswith(": 4 regressions, 0 improvements, 0 one-sided")


def test_the_second_measurement_takes_the_runs_limits_and_measures_none(tmp_path, monkeypatch, fake_measure):
    base, current = tmp_path / "base", tmp_path / "current"
    assert scaling.main([*SMOKE, "--models", "gss,attention", "--seq-lens", "32", "--out", str(base)]) == 0
    shutil.copytree(base, current)
    slow_down(current, "gss", 20.0)
    planted = {"matmul_flops_per_s": {"float32": 1e11}, "bandwidth_bytes_per_s": 2e10}
    env = json.loads((current / "env.json").read_text())
    (current / "env.json").write_text(json.dumps({**env, "limits": planted}))
    monkeypatch.setattr(machine, "measure_for_run", lambda *a: pytest.fail("the limits measured again"))
    args = run_all.parse(["--check", str(base), "--relative", "--tolerance", "3", *SMOKE, "--only", "scaling"])
    assert run_all.check(args, current) == 0
    assert read_env(current / "remeasured")["limits"] == planted


def test_a_count_that_changed_is_not_measured_again(tmp_path, capsys, fake_measure):
    base, current = tmp_path / "base", tmp_path / "current"
    assert scaling.main([*SMOKE, "--models", "conv,attention", "--seq-lens", "32", "--out", str(base)]) == 0
    shutil.copytree(base, current)
    slow_down(current, "conv", 20.0)
    rows = read_rows(current / "scaling.csv")
    rows[0]["flops"] = str(int(rows[0]["flops"]) + 1)
    with open(current / "scaling.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    args = run_all.parse(["--check", str(base), "--relative", *SMOKE, "--only", "scaling"])
    assert run_all.check(args, current) == 1
    assert not (current / "remeasured").exists() and "flops changed" in capsys.readouterr().out
