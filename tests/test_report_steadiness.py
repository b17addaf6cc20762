"""REPORT.md's steadiness check: the cells the scaling suite timed and the profiler measured again, from
planted rows (no clock): their ratio, and a warning only when the machine's speed changed during the run."""

import csv

import pytest

from bench import analysis, report
from bench.analysis import summaries
from bench.report import profiled
from bench.schema import TABLES

OPTS = dict(kernel_N="512", kernel_H="256", lambda_imag_exp="true", conv_kernel="", compiled="false")


def write(path, name, rows):
    with open(path / name, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=TABLES[name].columns)
        w.writeheader()
        for row in rows:
            w.writerow({c: row.get(c, "") for c in TABLES[name].columns})


def plant(run_dir, timed, profiled, basis="cpu_wall"):
    """scaling rows with `timed` ms and op_breakdown rows whose steps took `profiled` ms, per (model, mode)."""
    cell = dict(run_id="r", dtype="float32", device="cpu", batch=1, seq_len=2048, dim=512, status="ok", **OPTS)
    scaling, ops = [], []
    for (model, mode), ms in timed.items():
        scaling.append(
            dict(
                cell,
                model=model,
                mode=mode,
                time_ms=ms,
                time_iqr_ms=1,
                peak_mem_mb=1,
                flops=1,
                tflops_per_s=1,
                repeats=10,
            )
        )
        step = profiled[model, mode]
        for category, share in (("projection", 0.75), ("fft_conv", 0.25)):
            ops.append(
                dict(
                    cell,
                    model=model,
                    mode=mode,
                    category=category,
                    time_ms=step * share,
                    fraction=share,
                    step_ms=step,
                    profiled_steps=2,
                    basis=basis,
                )
            )
    ops.append(
        dict(cell, model="dss", mode="fwd", category="projection", time_ms=5, fraction=1, step_ms=5, basis=basis)
    )  # profiled, never timed: not compared
    write(run_dir, "scaling.csv", scaling)
    write(run_dir, "op_breakdown.csv", ops)
    return run_dir


TIMED = {("gss", "fwd"): 100.0, ("gss", "fwdbwd"): 300.0, ("attention", "fwd"): 110.0}


def test_drift_pairs_each_timed_cell_with_its_profiled_step(tmp_path):
    run = plant(tmp_path, TIMED, {("gss", "fwd"): 150.0, ("gss", "fwdbwd"): 330.0, ("attention", "fwd"): 88.0})
    drift = summaries.profile_drift(analysis.load_scaling(run), analysis.load_csv(run, "op_breakdown.csv"))
    got = {(r.model, r.mode, r.seq_len): round(r.ratio, 6) for r in drift.itertuples()}
    assert got == {("gss", "fwd", 2048): 1.5, ("gss", "fwdbwd", 2048): 1.1, ("attention", "fwd", 2048): 0.8}


@pytest.mark.parametrize("factor, warned", [(1.0, False), (1.2, False), (1.3, True), (0.7, True)])
def test_a_warning_only_when_the_median_ratio_is_off_by_more_than_a_quarter(tmp_path, factor, warned):
    run = plant(tmp_path, TIMED, {k: v * factor for k, v in TIMED.items()})
    lines, bullets = profiled.steadiness_section(run, None, None)
    text = "\n".join(lines)
    assert f"median profiled / timed {factor:.2f} over 3 cells" in text
    assert ("**Warning:**" in text) is warned
    assert len(bullets) == int(warned)
    if warned:
        assert f"profiled steps took {factor:.2f}x" in bullets[0]
        written = report.write_report(run, plots_dir=tmp_path / "none").read_text()
        assert f"- the machine's speed changed during the run: profiled steps took {factor:.2f}x" in written


def test_no_section_without_both_csvs_or_for_device_time(tmp_path):
    run = plant(tmp_path, TIMED, {k: 3 * v for k, v in TIMED.items()}, basis="cuda_kernels")
    assert profiled.steadiness_section(run, None, None) == ([], [])  # kernel time is not the step's wall time
    (run / "op_breakdown.csv").unlink()
    assert profiled.steadiness_section(run, None, None) == ([], [])
