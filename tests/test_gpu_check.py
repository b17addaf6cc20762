"""The GPU reference's preset, rehearsed on the CPU: its dry run, the CUDA checks' logic on planted reports,
the estimate's arithmetic, the time limits, the spread of two passes and the packed run directory."""

import gc
import json
import tarfile
import time
import weakref

import pytest

import run_all
from bench import decode, gpu_steps, numerics, profiling, regress, results
from bench.ab import power
from bench.core import config, cuda_checks, estimate, graphs, kv_checks
from bench.core.executor import drive
from bench.core.timing import CLOCKS, measure
from bench.perplexity import grid
from bench.schema import TABLES
from tests.test_gpu_steps import fake_child, fake_power_measure
from tests.test_regress import write

GPU_COMMAND = (
    "cuda checks",
    "limits",
    "scaling",
    "perplexity",
    "profiling",
    "decode",
    "numerics",
    "scaling (repeat)",
    "ab-power",
    "kv-checks",
)


def dry_run_table(out):
    """The dry run's table: {step: (cells or None, estimated seconds)} in its order, and the total's (cells, s)."""
    lines = out.splitlines()
    end = next(i for i, line in enumerate(lines) if line.startswith("total"))
    table = {}
    for line in lines[1:end]:
        numbers = line[20:].split()
        table[line[:20].strip()] = (int(numbers[0]) if len(numbers) == 2 else None, float(numbers[-1]))
    total = lines[end].split()
    return table, (int(total[1]), float(total[2]))


def test_dry_run_lists_every_step_of_the_gpu_command_within_the_budget_and_rehearses_the_checks(capsys):
    assert run_all.main(["--preset", "gpu-check", "--device", "cpu", "--dry-run"]) == 0
    out = capsys.readouterr().out
    table, (cells, total) = dry_run_table(out)
    assert tuple(table) == GPU_COMMAND
    # every model at 1K..8K in float32 and bfloat16, every model but gss-direct at 16K..64K in bfloat16
    assert table["scaling"][0] == 7 * 4 * 2 * 2 + 6 * 3 * 2
    # the repeat: the groups up to 8K with a step under 10 ms on the estimate, whole (every model of the length)
    assert table["scaling (repeat)"][0] == 7 * (8 + 3)
    assert table["ab-power"][0] == 2 * 3 * 2 * 2  # an A/A and a planted run of conv, gss, attention at 2K, 8K
    assert table["kv-checks"][0] == 1 and table["cuda checks"][0] is None
    assert all(seconds > 0 for _, seconds in table.values())
    assert cells == sum(n or 0 for n, _ in table.values())
    assert total == pytest.approx(sum(s for _, s in table.values()), abs=len(table))
    assert 0 < total <= run_all.GPU_BUDGET_S
    assert "CUDA checks rehearsed on the CPU: logic as required" in out


def test_a_limits_file_leaves_the_limits_step_out_and_suites_alone_leave_the_gpu_steps_out(capsys, tmp_path):
    path = tmp_path / "limits.json"
    rates = dict(matmul_flops_per_s={"float32": 1e12, "bfloat16": 1e13}, bandwidth_bytes_per_s=1e11)
    path.write_text(json.dumps(rates))
    argv = ["--preset", "gpu-check", "--device", "cpu", "--dry-run", "--only", "scaling,decode", "--limits", str(path)]
    assert run_all.main(argv) == 0
    table, _ = dry_run_table(capsys.readouterr().out)
    assert tuple(table) == ("cuda checks", "scaling", "decode", "scaling (repeat)")


def test_the_gpu_steps_are_gpu_checks_and_its_default_leaves_the_figures_to_any_machine(capsys):
    assert run_all.parse(["--preset", "gpu-check"]).only == (*run_all.SUITES, "ab-power", "kv-checks")
    assert run_all.parse([]).only == (*run_all.SUITES, "plots")
    assert run_all.main(["--only", "kv-checks", "--device", "cpu", "--dry-run"]) == 2
    assert capsys.readouterr().err.strip().endswith("--only kv-checks: a step of --preset gpu-check only")


def test_the_repeat_pass_holds_whole_short_groups_with_their_reference():
    cells = config.layer_cells(config.SCALING_PRESETS["gpu-check"])
    again = gpu_steps.repeat_cells(cells)
    groups = {config.group_key(c) for c in again}
    assert [c for c in cells if config.group_key(c) in groups] == again  # whole groups, in the first pass's order
    assert all(any(c.model == "attention" and config.group_key(c) == g for c in again) for g in groups)
    assert {(mode, dtype, n) for mode, dtype, *_, n in groups} == {
        *((mode, "bfloat16", n) for mode in ("fwd", "fwdbwd") for n in (1024, 2048, 4096, 8192)),
        ("fwd", "float32", 1024),
        ("fwd", "float32", 2048),
        ("fwdbwd", "float32", 1024),
    }


def test_the_gpu_check_preset_spans_what_the_reference_needs():
    cells = [c for g in config.SCALING_PRESETS["gpu-check"].grids for c in g.cells()]
    assert {c.model for c in cells} == set(config.models.NAMES)
    assert {(c.batch, c.dim) for c in cells} == {(4, 1024)}
    assert {c.dtype for c in cells} == {"float32", "bfloat16"} and {c.mode for c in cells} == {"fwd", "fwdbwd"}
    longest = {
        (c.model, c.dtype): max(x.seq_len for x in cells if (x.model, x.dtype) == (c.model, c.dtype)) for c in cells
    }
    # every model to 64K in bfloat16 (each model's roofline fraction at 64K) but the every-tap gss-direct (L^2)
    long_bf16 = {m for (m, dtype), n in longest.items() if dtype == "bfloat16" and n == 65536}
    assert long_bf16 == set(config.models.NAMES) - {"gss-direct"}
    assert {n for (m, dtype), n in longest.items() if dtype == "float32" or m == "gss-direct"} == {8192}
    assert {c.seq_len for c in cells} == {2**k for k in range(10, 17)}
    assert "float16" in numerics.NUMERICS_PRESETS["gpu-check"].grids[0].dtypes
    profiled = [c for g in profiling.PROFILE_PRESETS["gpu-check"].grids for c in g.cells()]
    assert {(c.model, c.seq_len, c.dtype) for c in profiled} == {
        (m, 8192, "bfloat16") for m in ("gss", "gss-fast", "attention")
    }
    prompts = {c.prompt_len for g in decode.DECODE_PRESETS["gpu-check"].grids for c in g.cells()}
    assert min(prompts) == 1024 and max(prompts) == 16384
    trainings = [c for g in grid.PERPLEXITY_PRESETS["gpu-check"].grids for c in g.cells()]
    assert all(len(c.lrs) == 1 and not c.selects for c in trainings)  # one rate, no selection
    assert {c.model for c in trainings if c.task == "lm"} == set(config.models.LM_NAMES)


def test_sdpa_check_requires_a_fused_kernel_for_half_precision_on_cuda_only():
    assert cuda_checks.sdpa_backend(["linear", "_scaled_dot_product_flash_attention", "add"]) == "flash"
    assert cuda_checks.sdpa_backend(["_scaled_dot_product_efficient_attention"]) == "efficient"
    assert cuda_checks.sdpa_backend(["scaled_dot_product_attention", "_scaled_dot_product_cudnn_attention"]) == "cudnn"
    assert cuda_checks.sdpa_backend(["bmm", "_softmax", "bmm"]) == "math"
    assert cuda_checks.sdpa_failures({"float32": "efficient", "bfloat16": "flash", "float16": "cudnn"}, "cuda") == []
    failures = cuda_checks.sdpa_failures({"bfloat16": "efficient", "float16": "math"}, "cuda")
    assert failures == [
        "attention in bfloat16 ran SDPA's efficient backend, not flash or cudnn",
        "attention in float16 ran SDPA's math backend, not flash or cudnn",
    ]
    assert cuda_checks.sdpa_failures({"bfloat16": "math"}, "cpu") == []


def test_timing_check_refuses_a_host_clock_on_async_work_and_disagreeing_times():
    assert cuda_checks.timing_failures(dict(clock="cuda_events", timed_ms=5.0, host_ms=5.2), "cuda") == []
    assert len(cuda_checks.timing_failures(dict(clock="perf_counter", timed_ms=0.02, host_ms=5.0), "cuda")) == 2
    assert len(cuda_checks.timing_failures(dict(clock="cuda_events", timed_ms=2.0, host_ms=5.0), "cuda")) == 1
    assert measure(lambda: None, device="cpu", warmup=0, min_repeats=1, max_repeats=1).clock == CLOCKS["cpu"]


def test_observed_sdpa_backend_on_the_cpu_is_its_flash_kernel():
    seen = cuda_checks.observed_sdpa_backends(cuda_checks.torch.device("cpu"), ("float32",), seq_len=32, dim=32)
    assert seen == {"float32": "flash"}


def test_nvidia_smi_is_read_field_by_field_and_its_absence_is_none():
    line = "NVIDIA H200, 580.1, 1980, 1980, 3201, 3201, 99.5, 700.00, 31, 143771, P0\n"
    (gpu,) = cuda_checks.parse_smi(line)
    assert gpu["name"] == "NVIDIA H200" and gpu["clocks.sm"] == "1980" and gpu["pstate"] == "P0"

    def missing(*args, **kwargs):
        raise FileNotFoundError("nvidia-smi")

    assert cuda_checks.nvidia_smi(run=missing) is None


def test_estimate_is_the_steps_the_timing_rule_runs_times_the_step():
    cell = config.Cell(model="attention", mode="fwdbwd", dtype="float32", batch=4, seq_len=32768, dim=1024)
    flops = config.models.build_layer("attention", dim=1024, device="meta").flops(4, 32768)
    step = 3 * flops / estimate.RATES["float32"]
    timing = dict(warmup=2, min_repeats=10, budget_s=0.5)
    assert step > 0.5  # a slow step: one warm-up, five repeats, after the counting and memory steps
    graphed = graphs.estimate_s(step * 1e3, step * 1e3)  # a replayed step as long: no launch floor to drop
    assert estimate.scaling_cell(cell, timing) == pytest.approx(estimate.CELL_S + step * (2 + 1 + 5) + graphed)
    small = config.Cell(model="gss", mode="fwd", dtype="float32", batch=1, seq_len=16, dim=32)
    graphed = graphs.estimate_s(1.0, estimate.layer_step(small, launched=False) * 1e3)
    assert estimate.scaling_cell(small, timing) == pytest.approx(estimate.CELL_S + 1e-3 * (2 + 2 + 10) + graphed)


def test_an_ab_cell_is_both_sides_prepared_and_captured_then_their_rounds():
    cell = config.Cell(model="conv", mode="fwd", dtype="float32", batch=4, seq_len=2048, dim=1024)
    step, replayed = estimate.layer_step(cell), estimate.layer_step(cell, launched=False)
    # a capture and its REPLAYS timed replays are graph_time's estimate
    graphed = graphs.estimate_s(step * 1e3, replayed * 1e3)
    assert estimate.capture_s(cell) + graphs.REPLAYS * estimate.replay_s(cell) == pytest.approx(graphed)
    timing = dict(warmup=3, min_repeats=10)
    prepared = 2 * (estimate.CELL_S + 2 * step) + 2 * estimate.capture_s(cell)
    # both graphs replayed once, then ten rounds of a replay each; a plant's rounds: warm-ups and steps, eagerly
    assert estimate.ab_cell(cell, timing) == pytest.approx(prepared + 2 * (1 + 10) * estimate.replay_s(cell))
    assert estimate.ab_cell(cell, timing, graphed=False) == pytest.approx(prepared + 2 * (3 + 10) * step)


def test_the_kv_checks_estimate_charges_every_step_a_plan_build_and_the_child_a_process():
    cell = kv_checks.GPU_CELL
    lm = config.models.build_lm(
        cell.model, num_tokens=kv_checks.NUM_TOKENS, dim=cell.dim, depth=cell.depth, device="meta"
    )
    prompt = estimate.step_s(lm.flops(cell.batch, cell.prompt_len + 1), cell.dtype, "fwd", layers=cell.depth)
    token = estimate.step_s(lm.flops(cell.batch, 1), cell.dtype, "fwd", layers=cell.depth)
    assert token < estimate.PLAN_BUILD_S
    n = cell.new_tokens
    # here: the reforward's 1 + 5 forwards, 5 stepping checks and the same-length one (a prompt, n steps each, the
    # same-length one n more); the child: a process, the LM, the stepping and the same-length check
    here = (1 + kv_checks.REFORWARD_REPEATS) * prompt + 6 * prompt + 7 * n * estimate.PLAN_BUILD_S
    child = estimate.PROCESS_S + estimate.CELL_S + 2 * prompt + 3 * n * estimate.PLAN_BUILD_S
    assert estimate.kv_checks_s(cell) == pytest.approx(estimate.CELL_S + here + child)


def test_drive_starts_no_cell_after_its_deadline():
    now, ran = [0.0], []

    def run_cell(cell):
        ran.append(cell)
        now[0] += 10.0

    left = drive(range(5), run_cell, desc="t", deadline=25.0, clock=lambda: now[0])
    assert ran == [0, 1, 2] and left == 2
    assert drive(range(3), ran.append, desc="t") == 0


def _scaling_rows(path, times):
    rows = [
        dict(
            run_id="r",
            model=m,
            mode="fwd",
            dtype="float32",
            device="cuda:GPU",
            batch=4,
            seq_len=n,
            dim=64,
            compiled="false",
            params=10,
            flops=100,
            time_ms=t,
            time_iqr_ms=0.0,
            repeats=10,
            peak_mem_mb=1.0,
            status="ok",
        )
        for (m, n), t in times.items()
    ]
    write(path, "scaling.csv", TABLES["scaling.csv"].columns, rows)


def test_ratio_spread_is_the_largest_symmetric_change_of_time_ratios_of_timed_cells(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    # gss/attention: 2.0 -> 2.2 (+10%) at 1024; 1.0 -> 0.8 at 2048, i.e. 1.25x apart (25%); at 512 the steps are
    # under MIN_TIMED_MS (10 ms on CUDA): 2x apart, counted apart and left out of the tolerance
    _scaling_rows(
        first,
        {
            ("attention", 1024): 10.0,
            ("gss", 1024): 20.0,
            ("attention", 2048): 40.0,
            ("gss", 2048): 40.0,
            ("attention", 512): 2.0,
            ("gss", 512): 2.0,
        },
    )
    _scaling_rows(
        second,
        {
            ("attention", 1024): 10.0,
            ("gss", 1024): 22.0,
            ("attention", 2048): 50.0,
            ("gss", 2048): 40.0,
            ("attention", 512): 2.0,
            ("gss", 512): 4.0,
        },
    )
    spread = regress.ratio_spread(first, second)
    assert spread["cells"] == 2 and spread["untimed_cells"] == 1 and spread["untimed_max"] == pytest.approx(1.0)
    assert spread["max"] == pytest.approx(0.25) and spread["tolerance"] == pytest.approx(0.75)
    assert sorted(spread["per_cell"].values()) == pytest.approx([0.10, 0.25])
    assert regress.main(["--baseline", str(first), "--current", str(second), "--spread"]) == 0


def test_pack_holds_the_whole_run_directory_under_its_name(tmp_path):
    run = tmp_path / "nvidia-x"
    (run / "traces" / "a").mkdir(parents=True)
    (run / "scaling.csv").write_text("x\n")
    (run / "traces" / "a" / "t.json").write_text("{}")
    path = run_all.pack(run, tmp_path / "run.tar.gz")
    with tarfile.open(path) as archive:
        names = set(archive.getnames())
    assert {"nvidia-x/scaling.csv", "nvidia-x/traces/a/t.json"} <= names
    assert not list(tmp_path.glob(".run.tar.gz.*"))  # no temporary left


def test_gpu_check_needs_a_cuda_device_and_says_so(capsys):
    assert run_all.main(["--preset", "gpu-check", "--device", "cpu"]) == 2
    assert "--dry-run" in capsys.readouterr().err


@pytest.mark.slow  # every suite's smoke preset twice, figures, the archive: 7 s
def test_gpu_check_flow_runs_every_step_records_checks_spread_and_packs(tmp_path, monkeypatch, restore_threads):
    """The whole command on the CPU (seconds), each suite's gpu-check preset replaced by its smoke preset, the
    limits, the A/A and planted runs and the KV checks' child planted."""
    for presets in (
        config.SCALING_PRESETS,
        grid.PERPLEXITY_PRESETS,
        profiling.PROFILE_PRESETS,
        decode.DECODE_PRESETS,
        numerics.NUMERICS_PRESETS,
    ):
        monkeypatch.setitem(presets, "gpu-check", presets["smoke"])
    monkeypatch.setattr(run_all, "GPU_CHECK_DEVICES", ("cpu",))
    # limits far above what the smoke cells take on any machine: no cell is left out for time here
    monkeypatch.setattr(run_all, "GPU_BUDGET_S", 1e6)
    monkeypatch.setattr(run_all.estimate, "suite_seconds", lambda *args: 1e3)
    planted = dict(sdpa_backend={"bfloat16": "flash"}, timing=dict(clock="cuda_events", timed_ms=5, host_ms=5))
    monkeypatch.setattr(cuda_checks, "check", lambda device: (dict(planted), []))
    rates = dict(matmul_flops_per_s={"float32": 2e12, "bfloat16": 2e12}, bandwidth_bytes_per_s=3e11)
    monkeypatch.setattr(gpu_steps.limits, "measure", lambda device, dtypes: rates)
    monkeypatch.setattr(power, "measure", fake_power_measure({}))
    monkeypatch.setattr(kv_checks, "GPU_CELL", kv_checks.SMOKE_CELL)
    monkeypatch.setattr(kv_checks, "spawn_child", fake_child)

    def broken(spec):
        raise RuntimeError("planted")

    monkeypatch.setattr(decode, "run", broken)  # a step that breaks does not stop the others
    run, archive = tmp_path / "nvidia-test", tmp_path / "run.tar.gz"
    began = time.monotonic()
    code = run_all.main(["--preset", "gpu-check", "--device", "cpu", "--out", str(run), "--pack", str(archive)])
    assert code == 1
    env = json.loads((run / "env.json").read_text())
    assert env["cuda_check"]["sdpa_backend"] == {"bfloat16": "flash"}
    assert env["cuda_check"]["failures"] == ["decode: crashed: RuntimeError: planted"]
    walls = env["gpu_check"]["wall_s"]
    assert tuple(walls) == GPU_COMMAND
    assert env["limits"] == {**rates, "source": str(run / gpu_steps.LIMITS_FILE)}  # measured once, read by each
    assert json.loads((run / "repeat" / "env.json").read_text())["limits"] == env["limits"]
    assert sum(walls.values()) <= time.monotonic() - began
    assert all(0 < limit <= run_all.GPU_BUDGET_S for limit in env["gpu_check"]["time_limit_s"].values())
    first, second = (len(results.read_rows(d / "scaling.csv")) for d in (run, run / "repeat"))
    assert first == second == len(config.SCALING_PRESETS["smoke"].grids[0].cells())
    spread = json.loads((run / "ratio_spread.json").read_text())
    assert spread["tolerance"] == pytest.approx(3 * spread["max"])
    with tarfile.open(archive) as packed:
        names = set(packed.getnames())
    assert {
        f"{run.name}/{n}"
        for n in (
            "env.json",
            "scaling.csv",
            "repeat/scaling.csv",
            "ratio_spread.json",
            "perplexity.csv",
            "op_breakdown.csv",
            "numerics.csv",
            "limits.json",
            "ab-power/power.csv",
            "kv_checks.json",
        )
    } <= names


def test_a_check_that_raises_is_a_failure_not_the_end_of_the_run(monkeypatch):
    def broken(device):
        raise RuntimeError("no sleep kernel")

    monkeypatch.setattr(cuda_checks, "gpu_info", lambda device: {"name": "planted"})
    monkeypatch.setattr(cuda_checks, "observed_sdpa_backends", lambda device, dtypes: {"bfloat16": "flash"})
    monkeypatch.setattr(cuda_checks, "event_timing", broken)
    report, failures = cuda_checks.check(cuda_checks.torch.device("cuda"))
    assert report == {"gpu": {"name": "planted"}, "sdpa_backend": {"bfloat16": "flash"}}
    assert failures == ["timing: RuntimeError: no sleep kernel"]


def test_cuda_gate_times_steps_from_10_ms_up_at_the_measured_tolerance(tmp_path):
    """A 3x slower launch-bound step is not a time regression on CUDA; a 20% slower 40 ms step is (tolerance 12%)."""
    base = {("attention", 1024): 2.0, ("gss", 1024): 2.0, ("attention", 2048): 40.0, ("gss", 2048): 40.0}
    first, second, third = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    _scaling_rows(first, base)
    _scaling_rows(second, {**base, ("gss", 1024): 6.0})
    _scaling_rows(third, {**base, ("gss", 2048): 48.0})
    gate = regress.compare(first, second, relative=True)
    assert gate.time_tol == regress.TIME_TOLERANCE["cuda"] == 0.12
    assert not [f for f in gate.findings if f.kind == "regression"]
    assert [f.what for f in gate.findings if f.kind == "note"] == [
        "1 cells' times not gated: a step under 10 ms on cuda is launch-bound (docs/gpu.md)"
    ]
    regressions = [f for f in regress.compare(first, third, relative=True).findings if f.kind == "regression"]
    assert len(regressions) == 1 and "seq_len=2048" in regressions[0].cell


def test_drive_freezes_what_a_cell_keeps_and_collects_the_cycles_it_leaves():
    """After each cell, a collection and gc.freeze(): what the cell keeps (a lazily imported module, a cache) is
    frozen before the next cell, so later collections skip it; the cycles it leaves are collected, not frozen;
    nothing stays frozen after the sweep."""

    class Node:
        pass

    kept, cycles, frozen = [], [], []

    def run_cell(cell):
        frozen.append(gc.get_freeze_count())
        kept.append(Node())
        a, b = Node(), Node()
        a.other, b.other = b, a
        cycles.append(weakref.ref(a))

    drive(range(3), run_cell, desc="t")
    assert frozen[0] < frozen[1] < frozen[2]
    assert all(ref() is None for ref in cycles)
    assert gc.get_freeze_count() == 0
