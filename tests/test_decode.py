"""The decode suite end to end: rows and formats, every model with its methods, state sizes, failures as
rows, resume, presets and bad input. (Greedy tokens by stepping == by reforward: tests/test_step.py.)"""

import pytest
import torch

import models
from bench import decode
from bench.results import DIED_ERROR, KEY_COLUMNS, mark_in_flight, read_rows
from tests.helpers import SMOKE_ONE_THREAD, assert_usage_error

SMOKE = [*SMOKE_ONE_THREAD, "--device", "cpu"]
pytestmark = pytest.mark.usefixtures("restore_threads")
REQUIRED = ("run_id", "model", "method", "dtype", "device", "batch", "dim", "depth", "prompt_len", "new_tokens",
            "prefill_ms", "time_per_token_ms", "tokens_per_s", "peak_mem_mb", "state_mb", "status", "error")


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
    assert decode.COLUMNS[:len(REQUIRED)] == REQUIRED and tuple(smoke_rows[0]) == decode.COLUMNS
    assert KEY_COLUMNS["decode.csv"] == ("model", "method", "dtype", "device", "batch", "dim", "depth", "prompt_len",
                                        "new_tokens")
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
    stepping = {name: "kv_cache" if name == "attention" else "recurrent" for name in models.NAMES}
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


def test_an_oom_is_a_row_and_longer_prompts_of_that_series_are_skipped(tmp_path, monkeypatch):
    real = decode.measure_cell

    def fake(cell, device, timing):
        if cell.model == "conv" and cell.method == "recurrent" and cell.prompt_len >= 16:
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        if cell.model == "attention" and cell.method == "reforward":
            raise RuntimeError("kernel exploded")
        return real(cell, device, timing)

    monkeypatch.setattr(decode, "measure_cell", fake)
    code, rows = run_decode(tmp_path, "--models", "conv,attention", "--prompt-lens", "8,16,32")
    assert code == 0
    status = {(r["model"], r["method"], r["prompt_len"]): r for r in rows}
    assert [status[("conv", "recurrent", L)]["status"] for L in ("8", "16", "32")] == ["ok", "oom", "skipped"]
    assert all(status[(m, meth, L)]["status"] == "ok" for m, meth in [("conv", "reforward"), ("attention", "kv_cache")]
               for L in ("8", "16", "32"))
    oom = status[("conv", "recurrent", "16")]
    assert "OutOfMemoryError" in oom["error"] and oom["time_per_token_ms"] == oom["state_mb"] == ""
    assert "after an OOM at prompt_len=16" in status[("conv", "recurrent", "32")]["error"]
    assert {status[("attention", "reforward", L)]["error"] for L in ("8", "16", "32")} == {
        "RuntimeError: kernel exploded"}


def test_resume_skips_recorded_cells_and_records_the_one_that_died(tmp_path, monkeypatch):
    argv = ["--models", "conv,attention", "--methods", "recurrent,kv_cache"]
    code, first = run_decode(tmp_path, *argv, "--prompt-lens", "8")
    assert code == 0 and len(first) == 2
    assert run_decode(tmp_path, *argv, "--prompt-lens", "8,16")[0] == 2  # refuses to overwrite without --resume
    died = {**first[1], "prompt_len": 16}  # attention at 16 was running when the process was killed
    mark_in_flight(tmp_path, {k: died[k] for k in decode.KEY}, stem=decode.STEM)
    measured = []
    real = decode.measure_cell
    monkeypatch.setattr(decode, "measure_cell", lambda cell, *a: measured.append(cell) or real(cell, *a))
    code, rows = run_decode(tmp_path, *argv, "--prompt-lens", "8,16", "--resume")
    assert code == 0 and rows[:2] == first
    assert [(c.model, c.prompt_len) for c in measured] == [("conv", 16)]
    keys = [tuple(r[c] for c in decode.KEY) for r in rows]
    assert len(keys) == len(set(keys)) == 4
    assert [(r["model"], r["prompt_len"], r["error"]) for r in rows if r["status"] == "error"] == [
        ("attention", "16", DIED_ERROR)]
    assert not (tmp_path / "decode.inflight.json").exists()


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


@pytest.mark.parametrize("argv,message", [
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
])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, capsys, argv, message):
    assert_usage_error(decode.main, ["--device", "cpu", *argv], tmp_path / "run", capsys, message)
