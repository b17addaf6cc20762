"""The decode suite end to end: rows and formats, every model with its methods, state sizes, presets and bad
input. (Failures, OOM skips and resume: tests/test_sweep.py; greedy tokens by stepping == by reforward:
tests/test_step.py.)"""

import pytest

import models
from bench import decode
from bench.results import read_rows
from bench.schema import TABLES
from tests.helpers import SMOKE_ONE_THREAD, assert_usage_error

SMOKE = [*SMOKE_ONE_THREAD, "--device", "cpu"]
pytestmark = pytest.mark.usefixtures("restore_threads")


def run_decode(out, *extra):
    code = decode.main([*SMOKE, "--out", str(out), *extra])
    return code, (read_rows(out / decode.CSV) if (out / decode.CSV).exists() else [])


@pytest.fixture(scope="module")
def smoke_rows(tmp_path_factory):
    out = tmp_path_factory.mktemp("decode") / "run"
    code = decode.main(["--out", str(out), *SMOKE])  # the call run_all.py makes
    assert code == 0
    return read_rows(out / decode.CSV)


def test_rows_have_the_documented_columns_and_formats(smoke_rows):
    assert tuple(smoke_rows[0]) == TABLES["decode.csv"].columns
    for r in smoke_rows:
        assert (r["status"], r["error"], r["device"], r["dtype"]) == ("ok", "", "cpu", "float32")
        assert (r["batch"], r["dim"], r["depth"], r["new_tokens"]) == ("1", "32", "1", "4")
        assert not {"True", "False", "None", "nan"} & set(r.values())
        per_token_s = float(r["time_per_token_ms"]) / 1e3
        assert per_token_s > 0 and float(r["tokens_per_s"]) == pytest.approx(1 / per_token_s, rel=1e-4)
        assert float(r["peak_mem_mb"]) > 0
        if r["method"] == "reforward":  # no prefill and no state: empty, not zero
            assert r["prefill_ms"] == "" and r["state_mb"] == ""
        else:  # one warm-up step, then every other step of the generation is a timed repeat
            assert float(r["prefill_ms"]) > 0 and float(r["state_mb"]) > 0 and r["repeats"] == "3"


def test_every_model_runs_reforward_and_its_own_stepping_method(smoke_rows):
    stepping = {
        name: "kv_cache" if name in ("attention", "attention-chunked") else "recurrent" for name in models.NAMES
    }
    expected = {(m, method, L) for m in models.NAMES for method in (stepping[m], "reforward") for L in ("16", "48")}
    found = [(r["model"], r["method"], r["prompt_len"]) for r in smoke_rows]
    assert len(found) == len(set(found)) and set(found) == expected


def test_the_recurrent_state_is_flat_in_prompt_length_while_the_kv_cache_grows(smoke_rows):
    state = {(r["model"], r["prompt_len"]): float(r["state_mb"]) for r in smoke_rows if r["method"] != "reforward"}
    # gss: per layer s (batch, kernel_H, kernel_N) complex64, whatever the prompt length
    assert state[("gss", "16")] == state[("gss", "48")] == pytest.approx(256 * 512 * 8 / 2**20)
    assert state[("conv", "16")] == state[("conv", "48")]
    # attention: keys and values (batch, prompt_len + new_tokens, dim) float32, preallocated for the decode
    for length in (16, 48):
        assert state[("attention", str(length))] == pytest.approx(2 * (length + 4) * 32 * 4 / 2**20, rel=1e-5)


def test_flags_narrow_the_preset_and_presets_hold_the_documented_grids(capsys):
    def listed(*argv):
        assert decode.main(["--device", "cpu", "--list", *argv]) == 0
        return capsys.readouterr().out.splitlines()

    quick = listed("--preset", "quick")
    for model, method in [("gss", "recurrent"), ("conv", "recurrent"), ("attention", "kv_cache")]:
        assert any(f"model={model} method={method} " in c and "prompt_len=8192" in c for c in quick)
    assert any("method=reforward" in c and "prompt_len=2048" in c for c in quick)
    assert not any("method=reforward" in c and "prompt_len=8192" in c for c in quick)
    full = listed("--preset", "full")
    assert any("prompt_len=65536" in c and "dtype=bfloat16" in c and "batch=8" in c and "depth=4" in c for c in full)
    narrowed = listed(*SMOKE, "--models", "gss", "--methods", "reforward", "--prompt-lens", "5", "--depth", "3")
    assert narrowed == ["model=gss method=reforward dtype=float32 batch=1 dim=32 depth=3 prompt_len=5 new_tokens=4"]


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--models", "mamba"], "unknown model 'mamba'"),
        (["--prompt-lens", "0"], "--prompt-lens: 0 is not positive"),
        (["--prompt-lens", "-8"], "--prompt-lens: -8 is not positive"),
        (["--prompt-lens", "8,,16"], "--prompt-lens needs a comma-separated list"),
        (["--dtype", "float16"], "float16 needs a CUDA device"),
        (["--dtype", "int8"], "unknown dtype 'int8'"),
        (["--methods", "beam"], "unknown method 'beam'"),
        (["--models", "gss", "--methods", "kv_cache"], "the grid is empty"),
        (["--new-tokens", "1"], "--new-tokens must be at least 2"),
        (["--depth", "0"], "--depth: 0 is not positive"),
        (["--preset", "huge"], "unknown preset 'huge'"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, capsys, argv, message):
    assert_usage_error(decode.main, ["--device", "cpu", *argv], tmp_path / "run", capsys, message)
