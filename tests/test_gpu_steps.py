"""The GPU command's steps beside the suites, wired on the CPU with fakes: the A/A and planted runs
(bench.ab.power.gpu_check) and the KV-cache checks under their time limits, into the run directory, a step that
breaks reported like a suite's, a finished one kept on --resume; the limits measured once for the whole command."""

import json
import time

import pytest

import run_all
from bench import gpu_steps
from bench.ab import power
from bench.core import cuda_checks, kv_checks
from bench.results import read_rows
from tests.test_regress import write

RATIO = {"conv": 1.10, "gss": 1.0, "attention": 1.0}  # the planted run's ratios, per model


@pytest.fixture
def on_cpu(monkeypatch):
    """gpu-check on the CPU: its device check passed, its CUDA checks planted."""
    monkeypatch.setattr(run_all, "GPU_CHECK_DEVICES", ("cpu",))
    monkeypatch.setattr(cuda_checks, "check", lambda device: ({"sdpa_backend": {}}, []))
    monkeypatch.setattr(cuda_checks, "nvidia_smi", lambda: None)


def fake_power_measure(seen):
    """power.measure's stand-in: records what it was given, writes each run's ab.csv with planted ratios."""

    def measure(spec, source, out, *, model, plants, aa_runs, plant_runs, deadline=None, clock=time.monotonic):
        seen.update(cells=spec.cells, model=model, plants=plants, aa_runs=aa_runs, plant_runs=plant_runs)
        seen.update(threshold_pct=spec.threshold_pct)
        seen.update(left_s=deadline - clock(), preset=spec.preset.name)
        runs = []
        for pct, r in power.schedule(aa_runs, plants, plant_runs):
            ratio = {m: (x if pct else 1.0) for m, x in RATIO.items()}
            measured = [
                dict(ratio=ratio[c.model], ci_low=ratio[c.model] - 0.01, ci_high=ratio[c.model] + 0.01)
                for c in spec.cells
            ]
            rows = [  # each flagged cell measured again alike
                dict(model=c.model, **m, **{f"confirm_{k}": v for k, v in m.items()})
                for c, m in zip(spec.cells, measured, strict=True)
            ]
            runs.append((pct, r, write(out / "runs" / f"{pct:g}-{r}", "ab.csv", tuple(rows[0]), rows) / "ab.csv"))
        return runs

    return measure


def fake_child(cell, device, timeout_s):
    return {kv_checks.AVOID_RECOMPILE: "1", "suite": {"per_token_ms": 1.0}, "timeout_s": timeout_s}


def run_gpu_steps(tmp_path, monkeypatch, seen):
    """The gpu-check command's A/A + plant and KV-cache steps run here with fakes: (the run directory, its argv)."""
    monkeypatch.setattr(power, "measure", fake_power_measure(seen))
    monkeypatch.setattr(kv_checks, "GPU_CELL", kv_checks.SMOKE_CELL)
    monkeypatch.setattr(kv_checks, "spawn_child", fake_child)
    run = tmp_path / "run"
    argv = ["--preset", "gpu-check", "--device", "cpu", "--out", str(run), "--only", "ab-power,kv-checks"]
    assert run_all.main(argv) == 0
    return run, argv


def test_the_gpu_steps_run_under_their_time_limits_into_the_run_directory(tmp_path, monkeypatch, on_cpu, capsys):
    seen = {}
    run, argv = run_gpu_steps(tmp_path, monkeypatch, seen)
    # the A/A and the 10% plant of conv, on gate-cuda's cells of conv, gss and attention
    assert seen["preset"] == "gate-cuda" and {c.model for c in seen["cells"]} == {"conv", "gss", "attention"}
    assert (seen["model"], seen["plants"], seen["aa_runs"], seen["plant_runs"]) == ("conv", (10.0,), 1, 1)
    assert seen["cells"] == tuple(power.gpu_check_cells())
    plan = {step.name: step for step in run_all.planned(run_all.parse(argv), None)}
    limit = {name: round(2 * step.seconds + 15) for name, step in plan.items()}  # whole seconds, as recorded
    assert 0 < seen["left_s"] <= limit["ab-power"]
    assert seen["threshold_pct"] == min(power.THRESHOLDS)  # every tabulated threshold's flags measured again
    rows = read_rows(run / "ab-power" / power.POWER_CSV, columns=power.POWER_COLUMNS)
    at_3 = {r["planted_pct"]: r for r in rows if r["threshold_pct"] == "3"}
    assert (at_3["0"]["flagged"], at_3["10"]["flagged"], at_3["10"]["cells"]) == ("0", "4", "4")
    assert at_3["10"]["other_flagged"] == "0" and at_3["10"]["other_cells"] == "8"
    record = json.loads((run / kv_checks.FILE).read_text())
    assert record["cell"] == kv_checks.asdict(kv_checks.SMOKE_CELL)
    assert 0 < record["avoid_recompile"]["timeout_s"] <= limit["kv-checks"]
    assert f"kv-checks: {record['verdict']}: " in capsys.readouterr().out


def test_a_gpu_step_that_breaks_is_a_failure_and_the_others_still_run(tmp_path, monkeypatch, on_cpu):
    seen = {}
    monkeypatch.setattr(power, "measure", fake_power_measure(seen))

    def broken(*args, **kwargs):
        raise RuntimeError("planted")

    monkeypatch.setattr(kv_checks, "run", broken)
    run = tmp_path / "run"
    argv = ["--preset", "gpu-check", "--device", "cpu", "--out", str(run), "--only", "kv-checks,ab-power"]
    assert run_all.main(argv) == 1
    assert (run / "ab-power" / power.POWER_CSV).is_file()


def test_no_power_run_starts_after_its_deadline(tmp_path):
    spec = power.make_spec(dict(models=("conv",), seq_lens=(32,), dim=16, device="cpu"), *(None, None))
    source = power.sides.resolve(None, "head", power.REPO_ROOT)
    how = dict(model="conv", plants=(10.0,), aa_runs=1, plant_runs=1)
    assert power.measure(spec, source, tmp_path, deadline=1.0, clock=lambda: 2.0, **how) == []
    assert not (tmp_path / "runs").exists()


def test_no_run_made_is_the_steps_failure(tmp_path, monkeypatch):
    monkeypatch.setattr(power, "measure", lambda *args, **kwargs: [])
    assert power.gpu_check("cpu", tmp_path, deadline=0.0) == "no run made before its time limit"


def test_the_limits_are_measured_once_for_the_command_and_read_as_a_file(tmp_path, monkeypatch):
    planted = dict(matmul_flops_per_s={"float32": 2e12}, bandwidth_bytes_per_s=3e11)
    calls = []
    monkeypatch.setattr(gpu_steps.limits, "measure", lambda device, dtypes: calls.append(dtypes) or planted)
    common = run_all.cli.Common(out=str(tmp_path / "run"), device="cpu")
    failures = []
    first = gpu_steps.measured_limits(common, "cpu", ["float32"], failures)
    assert json.loads((tmp_path / "run" / gpu_steps.LIMITS_FILE).read_text()) == planted
    assert first.limits == str(tmp_path / "run" / gpu_steps.LIMITS_FILE) and failures == [] and calls == [["float32"]]
    again = gpu_steps.measured_limits(run_all.replace(common, resume=True), "cpu", ["float32"], failures)
    assert again.limits == first.limits and len(calls) == 1  # kept on --resume

    def broken(device, dtypes):
        raise RuntimeError("no copy")

    monkeypatch.setattr(gpu_steps.limits, "measure", broken)
    assert gpu_steps.measured_limits(common, "cpu", ["float32"], failures) == common
    assert failures == ["limits: RuntimeError: no copy"]


def test_on_resume_a_finished_step_is_kept_and_without_it_nothing_is_overwritten(tmp_path, monkeypatch, on_cpu):
    seen = {}
    run, argv = run_gpu_steps(tmp_path, monkeypatch, seen)
    made = {path: path.stat().st_mtime_ns for path in (run / "ab-power" / power.POWER_CSV, run / kv_checks.FILE)}
    seen.clear()
    assert run_all.main(argv) == 1  # both results exist: neither step overwrites them
    assert run_all.main([*argv, "--resume"]) == 0
    assert seen == {} and {path: path.stat().st_mtime_ns for path in made} == made
    (run / "ab-power" / power.POWER_CSV).unlink()  # an interrupted step: its runs are made again on --resume
    assert run_all.main([*argv, "--resume"]) == 0
    assert seen["aa_runs"] == 1 and (run / "ab-power" / power.POWER_CSV).is_file()
