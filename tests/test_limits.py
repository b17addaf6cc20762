"""bench.core.limits and python -m bench.limits: the measured limits' arithmetic (2*m*n*k FLOPs and 2 * bytes over
the median), the best shape, the budget's cut and the CUDA path on planted step times and a fake clock, the JSON
object, the real steps on a tiny grid, and limits files read, good or malformed."""

import contextlib
import json
import math

import pytest
import torch

from bench import limits as command
from bench.core import limits
from bench.usage import UsageError

MIB = 2**20


class FakeClock:
    """The timer and the wall clock in one: a planted step advances the time by its own length."""

    clock = "perf_counter"

    def __init__(self):
        self.t = 0.0

    def now(self):
        return self.t

    def sync(self):
        pass

    def time_ms(self, fn):
        before = self.t
        fn()
        return (self.t - before) * 1e3


class FakeSteps:
    """Steps of planted lengths in seconds: `matmul_s(dtype, m, n, k)`, a copy and a launch batch take a list of
    lengths in turn (warm-ups included), the last repeated; every step made is noted in `made`."""

    def __init__(self, clock, matmul_s, copy_s=(0.01,), launch_s=(0.001,)):
        self.clock, self.matmul_s, self.copy_s, self.launch_s, self.made = clock, matmul_s, copy_s, launch_s, []

    def _step(self, lengths):
        calls = iter(range(10**6))

        def fn():
            self.clock.t += lengths[min(next(calls), len(lengths) - 1)]

        return fn

    def matmul(self, dtype, m, n, k):
        self.made.append((dtype, (m, n, k)))
        return self._step(self.matmul_s(dtype, m, n, k))

    def copy(self, nbytes):
        self.made.append(("copy", nbytes))
        return self._step(self.copy_s)

    def launch(self, count):
        self.made.append(("launch", count))
        return self._step(self.launch_s)


def at_rate(flop_per_s):
    """matmul_s planting every shape at one rate (the same length every call)."""
    return lambda dtype, m, n, k: (2 * m * n * k / flop_per_s[dtype],)


def planted(device="cpu", dtypes=("float32",), matmul_s=None, **how):
    clock = FakeClock()
    steps = FakeSteps(clock, matmul_s or at_rate({"float32": 1e11}), **how.pop("step_lengths", {}))
    result = limits.measure(device, dtypes, timer=clock, clock=clock.now, steps=steps, **how)
    return result, steps


SQUARES = ((256, 256, 256), (512, 512, 512), (1024, 1024, 1024))


def test_a_shapes_rate_is_2mnk_over_the_median_and_the_best_shape_is_the_dtypes():
    # 512^3 is the fastest: two warm-ups and its first repeat at 1 s, the rest at 0.5 s: a median of 0.5 s
    def matmul_s(dtype, m, n, k):
        return {256: (0.1,), 512: (1.0, 1.0, 1.0, 0.5), 1024: (20.0,)}[m]

    result, _ = planted(matmul_s=matmul_s, shapes=SQUARES, budget_s=1000.0)
    rates = [2 * 256**3 / 0.1, 2 * 512**3 / 0.5, 2 * 1024**3 / 20.0]
    assert result["shape_flops_per_s"] == {"float32": pytest.approx(rates)}
    assert result["matmul_flops_per_s"] == {"float32": pytest.approx(2 * 512**3 / 0.5)}
    assert result["best_shape"] == {"float32": [512, 512, 512]}
    assert result["shapes"] == {"float32": [list(s) for s in SQUARES]} and result["cut"] == {}


def test_the_bandwidth_is_the_bytes_read_plus_written_over_the_median_copy():
    copies = (0.3, 0.3, 0.1, 0.1, 0.2, 0.2, 0.2)  # two warm-ups, then a median of 0.2 s
    result, _ = planted(copy_bytes=64 * MIB, step_lengths={"copy_s": copies}, shapes=SQUARES[:1], budget_s=1000.0)
    assert result["bandwidth_bytes_per_s"] == pytest.approx(2 * 64 * MIB / 0.2)
    assert result["copy_bytes"] == 64 * MIB and result["repeats"]["copy"] >= limits.TIMING["min_repeats"]


def test_the_default_shapes_copy_and_budget_are_the_device_types():
    result, steps = planted(matmul_s=at_rate({"float32": 1e15}))  # a fast machine: nothing is cut
    assert [shape for _, shape in steps.made[1:]] == list(limits.SHAPES["cpu"])
    assert steps.made[0] == ("copy", limits.COPY_BYTES) and limits.COPY_BYTES >= 256 * MIB
    assert result["budget_s"] == limits.BUDGET_S["cpu"] == 12.0 and limits.BUDGET_S["cuda"] == 16.0
    assert "launch_s" not in result and "tf32" not in result and "launch" not in result["method"]


def test_a_shape_that_no_longer_fits_the_budget_is_cut_with_the_larger_ones():
    # 1e9 FLOP/s: 256^3 takes 0.034 s, 512^3 0.27 s, 1024^3 2.1 s, each 7 times at least (2 warm-ups, 5 repeats)
    shapes = (*SQUARES, (2048, 2048, 2048))
    result, steps = planted(matmul_s=at_rate({"float32": 1e9}), shapes=shapes, budget_s=3.0)
    assert result["shapes"] == {"float32": [[256, 256, 256], [512, 512, 512]]}
    assert result["cut"] == {"float32": [[1024, 1024, 1024], [2048, 2048, 2048]]}
    assert ("float32", (1024, 1024, 1024)) not in steps.made  # a cut shape allocates nothing
    assert result["seconds"] <= 3.0


def test_the_cost_of_a_shape_is_estimated_at_the_dtypes_slowest_rate_so_far():
    # at 256^3's 1e10 FLOP/s 1024^3 would need 7 x 0.21 s and fit; at 512^3's 1e9 it needs 7 x 2.1 s and does not
    def matmul_s(dtype, m, n, k):
        return (2 * m * n * k / (1e10 if m == 256 else 1e9),)

    result, _ = planted(matmul_s=matmul_s, shapes=SQUARES, budget_s=4.0)
    assert result["cut"] == {"float32": [[1024, 1024, 1024]]}


def out_of_memory_from(size):
    """FakeSteps whose products of m >= size cannot be allocated."""
    clock = FakeClock()
    steps = FakeSteps(clock, at_rate({"float32": 1e11}))
    make = steps.matmul

    def matmul(dtype, m, n, k):
        if m >= size:
            raise torch.OutOfMemoryError("planted")
        return make(dtype, m, n, k)

    steps.matmul = matmul
    return dict(timer=clock, clock=clock.now, steps=steps, shapes=SQUARES)


def test_a_shape_too_large_for_the_devices_memory_is_cut_with_the_larger_ones():
    result = limits.measure("cpu", **out_of_memory_from(512))
    assert result["shapes"] == {"float32": [[256, 256, 256]]}
    assert result["cut"] == {"float32": [[512, 512, 512], [1024, 1024, 1024]]}
    with pytest.raises(torch.OutOfMemoryError):  # no rate at all for the dtype: the error is the answer
        limits.measure("cpu", **out_of_memory_from(256))


def test_a_dtypes_smallest_shape_is_measured_whatever_the_budget():
    result, _ = planted(matmul_s=at_rate({"float32": 1e9}), shapes=SQUARES, budget_s=0.0)
    assert result["shapes"] == {"float32": [[256, 256, 256]]} and len(result["cut"]["float32"]) == 2
    assert result["matmul_flops_per_s"]["float32"] == pytest.approx(1e9)


def test_the_shapes_run_smallest_first_round_robin_over_the_dtypes():
    shapes = ((512, 512, 512), (256, 256, 256))
    _, steps = planted(
        dtypes=("float32", "bfloat16"), matmul_s=at_rate({"float32": 1e11, "bfloat16": 2e11}), shapes=shapes
    )
    assert steps.made[1:] == [
        ("float32", (256, 256, 256)),
        ("bfloat16", (256, 256, 256)),
        ("float32", (512, 512, 512)),
        ("bfloat16", (512, 512, 512)),
    ]


@pytest.fixture
def fake_cuda(monkeypatch):
    """bench.core.timing enters torch.cuda.device(device), which a CPU-only torch cannot: a no-op context."""
    monkeypatch.setattr(torch.cuda, "device", lambda device: contextlib.nullcontext())


def test_the_cuda_path_measures_the_launch_floor_and_each_dtypes_peak(fake_cuda):
    rates = {"float32": 5e13, "bfloat16": 7e14, "float16": 7.5e14}
    result, steps = planted("cuda", None, at_rate(rates), step_lengths={"launch_s": (4e-4,)})
    assert steps.made[:2] == [("copy", limits.COPY_BYTES), ("launch", limits.LAUNCHES)]
    assert result["launch_s"] == pytest.approx(4e-4 / limits.LAUNCHES) and result["launches"] == limits.LAUNCHES
    assert result["matmul_flops_per_s"] == pytest.approx(rates)
    assert list(result["matmul_flops_per_s"]) == list(limits.DEFAULT_DTYPES["cuda"])
    assert {shape for _, shape in steps.made[2:]} == set(limits.SHAPES["cuda"]) and result["cut"] == {}
    assert result["tf32"] == {
        "allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
    }
    assert result["budget_s"] == 16.0 and result["repeats"]["launch"] >= limits.TIMING["min_repeats"]
    assert set(result["method"]) == {"matmul", "copy", "launch"}


def test_the_json_object_holds_the_named_fields_and_round_trips(fake_cuda):
    result, _ = planted("cuda", ("bfloat16",), at_rate({"bfloat16": 1e14}), shapes=SQUARES[:2])
    assert json.loads(json.dumps(result)) == result
    assert set(result) == {
        *("device", "threads", "matmul_flops_per_s", "bandwidth_bytes_per_s", "launch_s", "tf32", "best_shape"),
        *("shapes", "shape_flops_per_s", "repeats", "cut", "copy_bytes", "launches", "budget_s", "method", "seconds"),
    }
    assert result["device"] == "cuda" and result["threads"] == torch.get_num_threads()
    assert [n >= limits.TIMING["min_repeats"] for n in result["repeats"]["matmul"]["bfloat16"]] == [True, True]


def test_an_unknown_dtype_is_a_bug_of_the_caller():
    with pytest.raises(ValueError, match="int8"):
        planted(dtypes=("int8",))


def test_the_real_steps_on_a_tiny_grid_give_positive_finite_limits():
    result = limits.measure("cpu", shapes=((64, 64, 64), (96, 96, 96)), copy_bytes=MIB, budget_s=2.0)
    numbers = [result["bandwidth_bytes_per_s"], *result["shape_flops_per_s"]["float32"]]
    assert all(0 < x < math.inf for x in numbers) and limits.problem(result) is None
    assert result["threads"] == torch.get_num_threads() and result["seconds"] > 0


# --- the command ----------------------------------------------------------------------------------------------


@pytest.fixture
def tiny(monkeypatch):
    """The command's real path on a grid that takes milliseconds."""
    monkeypatch.setitem(limits.SHAPES, "cpu", ((64, 64, 64),))
    monkeypatch.setattr(limits, "COPY_BYTES", MIB)


def test_the_command_prints_the_json_object_on_stdout_and_progress_on_stderr(tiny, capsys, restore_threads):
    assert command.main(["--device", "cpu", "--dtype", "float32,bfloat16", "--threads", "1"]) == 0
    out, err = capsys.readouterr()
    result = json.loads(out)
    assert set(result["matmul_flops_per_s"]) == {"float32", "bfloat16"} and result["copy_bytes"] == MIB
    assert result["threads"] == 1 and "GFLOP/s" in err and "GB/s" in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--device", "tpu"], "--device: unknown device 'tpu'"),
        (["--device", "cpu", "--dtype", "int8"], "--dtype: unknown dtype 'int8'"),
        (["--device", "cpu", "--dtype", "float16"], "float16 needs a CUDA device"),
        (["--threads", "0"], "--threads: 0 is not positive"),
        (["--devices", "cpu"], "unrecognized arguments"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv, message, capsys):
    assert command.main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is here")
def test_cuda_without_a_device_is_bad_input(capsys):
    assert command.main(["--device", "cuda"]) == 2
    assert "no CUDA device" in capsys.readouterr().err


# --- limits files ---------------------------------------------------------------------------------------------

GOOD = {"matmul_flops_per_s": {"float32": 1.9e11, "bfloat16": 3e10}, "bandwidth_bytes_per_s": 2e10}


def write(tmp_path, value):
    path = tmp_path / "limits.json"
    path.write_text(value if isinstance(value, str) else json.dumps(value))
    return path


def test_a_measured_object_is_a_good_limits_file(tmp_path, fake_cuda):
    result, _ = planted("cuda", None, at_rate({"float32": 5e13, "bfloat16": 7e14, "float16": 7e14}))
    assert limits.read(write(tmp_path, result), ("bfloat16",)) == result
    assert limits.read(write(tmp_path, GOOD)) == GOOD


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not JSON"),
        ([1, 2], "not a JSON object"),
        ({"bandwidth_bytes_per_s": 2e10}, "matmul_flops_per_s must be an object"),
        ({**GOOD, "matmul_flops_per_s": {}}, "matmul_flops_per_s must be an object"),
        ({**GOOD, "matmul_flops_per_s": {"fp32": 1e11}}, "unknown dtype 'fp32'"),
        ({**GOOD, "matmul_flops_per_s": {"float32": -1}}, "matmul_flops_per_s.float32 must be a positive finite"),
        ({**GOOD, "matmul_flops_per_s": {"float32": "1e11"}}, "matmul_flops_per_s.float32 must be a positive finite"),
        ({**GOOD, "matmul_flops_per_s": {"float32": True}}, "matmul_flops_per_s.float32 must be a positive finite"),
        ('{"matmul_flops_per_s": {"float32": NaN}, "bandwidth_bytes_per_s": 1}', "float32 must be a positive finite"),
        ({"matmul_flops_per_s": {"float32": 1e11}}, "bandwidth_bytes_per_s must be a positive finite number, got None"),
        ('{"matmul_flops_per_s": {"float32": 1}, "bandwidth_bytes_per_s": Infinity}', "bandwidth_bytes_per_s must"),
        ({**GOOD, "launch_s": 0}, "launch_s must be a positive finite number, got 0"),
    ],
)
def test_a_malformed_limits_file_is_a_usage_error_naming_the_file(tmp_path, content, message):
    path = write(tmp_path, content)
    with pytest.raises(UsageError, match="limits file") as raised:
        limits.read(path)
    assert str(path) in str(raised.value) and message in str(raised.value)


def test_a_limits_file_without_a_rate_for_a_runs_dtype_is_refused(tmp_path):
    with pytest.raises(UsageError, match="no rate for float16"):
        limits.read(write(tmp_path, GOOD), ("float32", "float16"))


def test_a_missing_limits_file_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="cannot read it"):
        limits.read(tmp_path / "absent.json")


def test_check_prints_a_good_file_and_refuses_a_malformed_one_with_exit_2(tmp_path, capsys):
    assert command.main(["--check", str(write(tmp_path, GOOD))]) == 0
    assert json.loads(capsys.readouterr().out) == GOOD
    bad = write(tmp_path, {**GOOD, "bandwidth_bytes_per_s": -5})
    assert command.main(["--check", str(bad)]) == 2
    out, err = capsys.readouterr()
    assert (
        out == "" and err.startswith(f"error: limits file {bad}: bandwidth_bytes_per_s") and len(err.splitlines()) == 1
    )
    assert command.main(["--check", str(write(tmp_path, GOOD)), "--dtype", "bfloat16,float16"]) == 2
    assert "no rate for float16" in capsys.readouterr().err
