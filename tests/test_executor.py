"""bench.core.executor: the local executor as today's loop; on a local Ray cluster (marked ray: .ci/run's second
step), the same rows as a local run, a worker that dies as an error row, Ctrl-C and --resume, a hung cell timed
out; and the flags' usage errors, which need no cluster."""

import csv
import importlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench import decode, numerics, perplexity, profiling, scaling
from bench.core import executor
from tests import executor_targets
from tests.helpers import assert_usage_error

ROOT = Path(__file__).resolve().parent.parent
SMOKE = ["--preset", "smoke", "--device", "cpu", "--models", "gss,attention", "--seq-lens", "32,64"]
KEY = (
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
    "status",
)


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def jobs(targets, results):
    """Jobs of tests.executor_targets functions; each done() appends (index, result) to results."""
    return [
        executor.Job(lambda t=target, a=args: (t, a), lambda r, i=i: results.append((i, r)))
        for i, (target, args) in enumerate(targets)
    ]


echo, fail = executor_targets.echo, executor_targets.fail
RAY = executor.Placement("ray")


def test_the_local_executor_runs_jobs_in_order_and_a_failing_target_is_its_result():
    results = []
    left, infos = executor.run(jobs([(echo, (1,)), (fail, ()), (echo, (3,))], results), desc="t")
    assert left == 0 and infos == [] and [i for i, _ in results] == [0, 1, 2]
    assert results[0][1] == 1 and results[2][1] == 3 and isinstance(results[1][1], ValueError)


def test_the_local_executor_starts_no_job_after_the_deadline():
    results, now = [], iter([0.0, 0.0, 5.0])
    left, _ = executor.run(
        jobs([(echo, (i,)) for i in range(3)], results), desc="t", deadline=1.0, clock=lambda: next(now)
    )
    assert left == 1 and results == [(0, 0), (1, 1)]


@pytest.mark.parametrize(
    "argv,flag",
    [
        (["--executor", "dask"], "--executor"),
        (["--cell-timeout", "5"], "--ray-address and --cell-timeout"),
        (["--executor", "ray", "--cell-timeout", "-1"], "--cell-timeout"),
        (["--executor", "ray", "--ray-address", "nohost"], "--ray-address"),
    ],
)
def test_bad_executor_flags_exit_2_before_anything_is_written(tmp_path, capsys, argv, flag):
    assert_usage_error(scaling.main, [*SMOKE, *argv], tmp_path / "run", capsys, flag)


@pytest.mark.slow  # a subprocess: .ci/run's second step, keeping the default run within 90 s
def test_a_ray_address_with_nothing_listening_is_one_line_and_exit_2_within_30_s(tmp_path):
    start = time.monotonic()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.scaling",
            *SMOKE,
            "--executor",
            "ray",
            "--ray-address",
            "127.0.0.1:1",
            "--out",
            str(tmp_path / "run"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and time.monotonic() - start < 30
    assert len(done.stderr.strip().splitlines()) == 1 and "--ray-address 127.0.0.1:1" in done.stderr
    assert not (tmp_path / "run").exists()


SUITES = {  # suite: (its smoke command line narrowed, its CSV, the columns that must be equal, as well as the key)
    "scaling": (scaling, SMOKE, "scaling.csv", ("flops", "params")),
    "decode": (
        decode,
        ["--preset", "smoke", "--device", "cpu", "--models", "gss,attention", "--prompt-lens", "16"],
        "decode.csv",
        ("state_mb",),
    ),
    "numerics": (numerics, ["--preset", "smoke", "--device", "cpu", "--models", "gss,conv"], "numerics.csv", ()),
    "profiling": (
        profiling,
        ["--preset", "smoke", "--device", "cpu", "--models", "gss,attention"],
        "op_breakdown.csv",
        ("category", "trace"),
    ),
    # two seeds: the second trains at the rate the first selected, so its task waits for that selection
    "perplexity": (
        perplexity,
        ["--preset", "smoke", "--device", "cpu", "--models", "gss,attention", "--seeds", "0,1"],
        "perplexity.csv",
        ("seed", "lr", "split", "eval_seq_len", "lr_selected"),
    ),
    "recall": (
        perplexity,
        ["--preset", "smoke", "--device", "cpu", "--models", "gss,attention", "--seeds", "0,1"],
        "recall.csv",
        ("seed", "lr", "lr_selected"),
    ),
}


@pytest.mark.ray
@pytest.mark.parametrize("suite", SUITES)
def test_ray_rows_are_a_local_runs_cells_keys_and_columns(tmp_path, suite):
    module, argv, name, exact = SUITES[suite]
    for run, extra in (("local", []), ("ray", ["--executor", "ray"])):
        assert module.main([*argv, "--out", str(tmp_path / run), *extra]) == 0
    local, remote = rows(tmp_path / "local" / name), rows(tmp_path / "ray" / name)
    assert list(local[0]) == list(remote[0])  # the same columns in the same order
    key = [
        k
        for k in local[0]
        if k
        in (
            "model",
            "mode",
            "method",
            "dtype",
            "device",
            "batch",
            "seq_len",
            "category",
            "prompt_len",
            "dim",
            "depth",
            "kernel_N",
            "status",
            *exact,
        )
    ]
    assert sorted(tuple(r[k] for k in key) for r in local) == sorted(tuple(r[k] for k in key) for r in remote)
    (node,) = json.loads((tmp_path / "ray" / "env.json").read_text())["nodes"]
    assert node["devices"] == ["cpu"] and node["host"]
    for r in remote:  # a trace the worker wrote comes back as files the driver wrote, where its row says
        assert not r.get("trace") or any((tmp_path / "ray" / r["trace"]).rglob("*.json"))


@pytest.mark.ray
def test_a_worker_that_dies_is_an_error_and_the_other_jobs_complete():
    results = []
    executor.run(jobs([(echo, (1,)), (executor_targets.die, (2,)), (echo, (3,))], results), RAY, desc="t")
    by_job = dict(results)
    assert by_job[0] == 1 and by_job[2] == 3
    assert isinstance(by_job[1], RuntimeError) and executor.WORKER_DIED in str(by_job[1])


@pytest.mark.ray
def test_a_hung_cell_is_cancelled_at_its_timeout_and_the_others_complete():
    results = []
    timeout = executor.Placement("ray", cell_timeout=3)
    executor.run(jobs([(executor_targets.sleep_then_echo, (1, 120)), (echo, (2,))], results), timeout, desc="t")
    by_job = dict(results)
    assert by_job[1] == 2 and isinstance(by_job[0], TimeoutError) and "--cell-timeout" in str(by_job[0])


@pytest.mark.ray
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "killed"])
def test_a_stopped_driver_leaves_a_csv_that_resume_completes_without_repeating_or_losing_a_cell(tmp_path, stop):
    argv = [
        sys.executable,
        "-m",
        "bench.scaling",
        "--preset",
        "smoke",
        "--device",
        "cpu",
        "--seq-lens",
        "32,64,128",
        "--executor",
        "ray",
        "--out",
        str(tmp_path / "run"),
    ]
    # its own process group, signalled whole as a terminal's Ctrl-C or a job killer does: no Ray process outlives it
    driver = subprocess.Popen(
        argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    csv_path, deadline = tmp_path / "run" / "scaling.csv", time.monotonic() + 120
    while time.monotonic() < deadline and (not csv_path.exists() or len(rows(csv_path)) < 4):
        time.sleep(0.2)
    os.killpg(driver.pid, stop)
    driver.communicate(timeout=120)
    before = rows(csv_path)
    assert len(before) >= 4
    done = subprocess.run([*argv, "--resume"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    after = rows(csv_path)
    keys = [tuple(r[k] for k in KEY[:-1]) for r in after]
    assert len(keys) == len(set(keys))  # none repeated
    assert after[: len(before)] == before  # none lost or rewritten
    expected = subprocess.run([*argv[:-2], "--list"], cwd=ROOT, capture_output=True, text=True).stdout.splitlines()
    assert len(after) == len(expected) and {r["status"] for r in after} == {"ok"}
    assert os.path.exists(tmp_path / "run" / "env.json")


def test_simulated_wall_times_of_a_queue_and_of_static_shards():
    costs = [4.0, 1.0, 1.0, 1.0, 1.0]
    assert executor.simulate(costs, 1) == executor.static_shards(costs, 1) == 8.0
    assert executor.simulate(costs, 2) == 4.0  # one worker takes the long job, the other the four short ones
    assert executor.static_shards(costs, 2) == 6.0  # slices [4, 1, 1] and [1, 1]
    assert executor.simulate(costs, 2, series=[{"a"}] * 5) == 8.0  # one series held in order: no parallelism
    # j2 waits for j0 (a) until 4 on the worker free at 1, j3 and j4 follow j1 and j2 (b): 6
    assert executor.simulate(costs, 2, series=[{"a"}, {"b"}, {"a"}, {"b"}, {"b"}]) == 6.0


def test_a_presets_group_seconds_take_a_measured_step_through_the_timing_rule():
    from bench.core import config, estimate

    preset = config.SCALING_PRESETS["smoke"]
    cells = [c for g in preset.grids for c in g.cells()]
    estimated = estimate.scaling_group_seconds(preset)
    assert len(estimated) == len(config.groups_of(cells))
    assert sum(estimated) == pytest.approx(sum(estimate.scaling_cell(c, preset.timing) for c in cells))
    c = cells[0]
    step = {(c.model, c.mode, c.dtype, str(c.seq_len), str(c.kernel_N or ""), str(c.conv_kernel or "")): 2.0}
    measured = estimate.scaling_group_seconds(preset, step)  # 2 s > the budget: 1 warm-up and 5 timed repeats
    assert sum(measured) - sum(estimated) == pytest.approx(
        estimate.CELL_S + 2.0 * (2 + 1 + 5) - estimate.scaling_cell(c, preset.timing)
    )


def test_run_all_takes_the_executor_flags_and_keeps_gpu_check_local(tmp_path, capsys):
    import run_all

    assert_usage_error(
        run_all.main,
        ["--preset", "gpu-check", "--device", "cpu", "--executor", "ray"],
        tmp_path / "run",
        capsys,
        "gpu-check",
    )
    assert_usage_error(run_all.main, ["--cell-timeout", "3"], tmp_path / "run", capsys, "--executor ray")
    assert all("--executor" in module.make_parser().format_help() for module in run_all.SUITES.values())


@pytest.mark.slow  # a subprocess: .ci/run's second step
def test_the_local_executor_never_imports_ray(tmp_path):
    code = (
        "import sys; from bench import scaling; "
        f"assert scaling.main(['--preset', 'smoke', '--device', 'cpu', '--models', 'gss', '--seq-lens', '8', "
        f"'--modes', 'fwd', '--threads', '1', '--out', {str(tmp_path / 'run')!r}]) == 0; "
        "assert 'ray' not in sys.modules, 'ray imported'"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_a_task_that_failed_on_its_worker_is_an_error_row_of_its_cell_and_the_sweep_goes_on(tmp_path):
    import torch

    from bench.core.sweep import Sweep

    sweep = Sweep("decode.csv", out_dir=tmp_path, run_id="r", device=torch.device("cpu"), resume=False)
    key = dict(
        model="gss",
        method="recurrent",
        dtype="float32",
        device="cpu",
        batch=1,
        dim=8,
        depth=1,
        prompt_len=16,
        new_tokens=4,
    )
    died, ok = (sweep.job(lambda length=length: ({**key, "prompt_len": length}, (echo, ()))) for length in (16, 32))
    for job, result in ((died, RuntimeError(f"{executor.WORKER_DIED} (WorkerCrashedError)")), (ok, None)):
        assert job.begin()[0].__name__ == "measured"  # the one task body, here or on a worker
        job.done(result or (dict(time_per_token_ms=1.0, status="ok"), "cuda:worker"))
    sweep.writer.close()
    died, ok = rows(tmp_path / "decode.csv")
    assert (died["status"], died["error"]) == ("error", "RuntimeError: worker died in this cell (WorkerCrashedError)")
    assert (ok["prompt_len"], ok["status"], ok["time_per_token_ms"]) == ("32", "ok", "1")
    assert (died["device"], ok["device"]) == ("cpu", "cuda:worker")  # a measured row says where it ran


def test_every_task_target_resolves_by_import(tmp_path, monkeypatch):
    """What a worker runs is a module-level function it imports by its module and name (never a closure pickled by
    value): the one task body, and each suite's measure function, of every job every suite makes."""
    targets = []

    def begin_only(jobs, placement=executor.LOCAL, **how):
        jobs = list(jobs)
        for job in jobs:
            if (work := job.begin()) is not None:
                body, (measure, *_) = work
                targets.extend((body, measure))
        return len(jobs), []  # none run

    monkeypatch.setattr(executor, "run", begin_only)
    for name, (module, argv, *_) in SUITES.items():
        assert module.main([*argv, "--out", str(tmp_path / name)]) == 0
    assert {t.__module__ for t in targets} == {f"bench.{n}" for n in SUITES if n != "recall"} | {"bench.core.sweep"}
    for target in set(targets):
        assert getattr(importlib.import_module(target.__module__), target.__qualname__) is target, target
