"""The KV-cache checks (bench.core.kv_checks) on the CPU: the record's structure with the CPU's SDPA backends (cuDNN's
cannot run, and says so), each check at cache lengths of its own, the rolled-back step, the time limit, and the
verdict's rule on planted times."""

import json

import pytest
import torch

from bench import decode
from bench.core import kv_checks
from bench.core.kv_checks import SMOKE_CELL, verdict


def fake_child(cell, device, timeout_s):
    return {kv_checks.AVOID_RECOMPILE: "1", "suite": {"per_token_ms": 0.5}, "same_length": {}}


@pytest.fixture(scope="module")
def record():
    return kv_checks.measure_checks(SMOKE_CELL, "cpu", child=fake_child)


def test_the_record_holds_every_check_and_says_why_a_backend_cannot_run(record):
    assert record["rule"] == kv_checks.RULE and record["cell"] == kv_checks.asdict(SMOKE_CELL)
    assert record["device"] == "cpu" and record["torch"] == torch.__version__
    assert record["reforward"]["per_token_ms"] > 0
    suite = record["suite"]
    assert suite["prompt_len"] == SMOKE_CELL.prompt_len and len(suite["times_ms"]) == SMOKE_CELL.new_tokens - 1
    assert suite["per_token_ms"] == pytest.approx(sorted(suite["times_ms"])[len(suite["times_ms"]) // 2])
    assert set(record["backends"]) == set(kv_checks.BACKENDS)
    ran = {name for name, check in record["backends"].items() if "per_token_ms" in check}
    assert {"MATH", "FLASH_ATTENTION"} <= ran and "CUDNN_ATTENTION" not in ran  # the CPU has no cuDNN
    assert record["backends"]["CUDNN_ATTENTION"]["error"].startswith("RuntimeError: ")
    same = record["same_length"]
    assert len(same["firsts_ms"]) == len(same["repeats_ms"]) == SMOKE_CELL.new_tokens - 1
    assert record["avoid_recompile"] == fake_child(None, None, None)
    assert record["verdict"] in ("plan rebuild refuted", "inconclusive")  # no cuDNN time: never confirmed here
    assert "(c) " in record["why"]


def test_every_check_steps_cache_lengths_no_other_check_has_seen(record):
    """A check's steps attend over prompt_len + 1 .. prompt_len + new_tokens keys: the ranges must not meet."""
    prompts = [record["suite"]["prompt_len"], *(c["prompt_len"] for c in record["backends"].values())]
    prompts.append(record["same_length"]["prompt_len"])
    spans = [set(range(p + 1, p + SMOKE_CELL.new_tokens + 1)) for p in prompts]
    assert all(not (a & b) for i, a in enumerate(spans) for b in spans[i + 1 :])


def test_again_takes_the_last_step_once_more_at_the_same_cache_length():
    device = torch.device("cpu")
    lm = kv_checks.build(SMOKE_CELL, device)
    decoder = kv_checks.Decoder(lm, SMOKE_CELL, SMOKE_CELL.prompt_len, device)
    decoder.step()
    length, token = [c.length for c in decoder.state], decoder.token.clone()
    keys = decoder.state[0].keys.clone()
    decoder.again()
    assert [c.length for c in decoder.state] == length == [SMOKE_CELL.prompt_len + 1]
    assert torch.equal(decoder.token, token) and torch.equal(decoder.state[0].keys, keys)


def test_no_check_starts_after_the_deadline():
    record = kv_checks.measure_checks(SMOKE_CELL, "cpu", deadline=1.0, clock=lambda: 2.0, child=fake_child)
    skipped = {"skipped": "time limit"}
    assert record["avoid_recompile"] == skipped
    checks = [record["reforward"], record["suite"], record["same_length"], *record["backends"].values()]
    assert all({k: v for k, v in check.items() if k != "prompt_len"} == skipped for check in checks)
    assert record["verdict"] == "inconclusive" and record["why"].startswith("(d) did not run")


def test_run_writes_the_record_into_the_run_directory(tmp_path):
    written = kv_checks.run("cpu", tmp_path, SMOKE_CELL, child=fake_child)
    assert json.loads((tmp_path / kv_checks.FILE).read_text()) == json.loads(json.dumps(written))


def test_a_child_that_fails_is_an_error_of_its_check(monkeypatch):
    def failing(cell, device, timeout_s):
        raise RuntimeError("the child exited 1: ImportError: planted")

    record = kv_checks.measure_checks(SMOKE_CELL, "cpu", child=failing)
    assert record["avoid_recompile"]["error"] == "RuntimeError: the child exited 1: ImportError: planted"


def planted(first, repeat, cudnn=None, others=(("MATH", 10.0), ("FLASH_ATTENTION", 4.0)), child=None, suite=40.0):
    backends = {name: {"per_token_ms": ms} for name, ms in others}
    backends["EFFICIENT_ATTENTION"] = {"error": "RuntimeError: planted"}
    backends["CUDNN_ATTENTION"] = {"per_token_ms": cudnn} if cudnn else {"error": "RuntimeError: planted"}
    return dict(
        suite={"per_token_ms": suite},
        backends=backends,
        same_length={"first_ms": first, "repeat_ms": repeat},
        avoid_recompile={"suite": {"per_token_ms": child}} if child else {"error": "planted"},
    )


@pytest.mark.parametrize(
    "record, expected",
    [
        (planted(first=40.0, repeat=4.0, cudnn=40.0, child=4.0), "plan rebuild confirmed"),  # 0.1 of it; 10x flash
        (planted(first=40.0, repeat=13.0, cudnn=12.0), "plan rebuild confirmed"),  # just under 1/3, exactly 3x
        (planted(first=40.0, repeat=4.0, cudnn=11.0), "inconclusive"),  # cuDNN not 3x the fastest other
        (planted(first=40.0, repeat=4.0), "inconclusive"),  # no cuDNN time
        (planted(first=40.0, repeat=20.0, cudnn=40.0), "inconclusive"),  # the repeat half as long
        (planted(first=40.0, repeat=27.0, cudnn=40.0), "plan rebuild refuted"),  # at least 2/3: no per-length cost
        (planted(first=40.0, repeat=41.0), "plan rebuild refuted"),
        ({"same_length": {"skipped": "time limit"}}, "inconclusive"),
        ({"same_length": {"error": "RuntimeError: planted"}, "backends": {}}, "inconclusive"),
    ],
)
def test_the_verdict_follows_the_rule_written_before_the_run(record, expected):
    assert verdict(record)[0] == expected


def test_the_verdict_says_what_it_read():
    found, why = verdict(planted(first=40.0, repeat=4.0, cudnn=40.0, child=4.0))
    assert found == "plan rebuild confirmed"
    assert why == (
        "(d) repeat 4 ms = 0.10 of the first call's 40 ms; (b) CUDNN_ATTENTION 40 ms, 10.00x FLASH_ATTENTION's 4 ms; "
        "(c) 0.10x (a)'s per-token time"
    )


def test_the_gpu_cell_is_the_decode_suites_kv_cache_cell_at_4k():
    cells = [c for g in decode.DECODE_PRESETS["gpu-check"].grids for c in g.cells()]
    (same,) = [
        c
        for c in cells
        if (c.model, c.method) == ("attention", "kv_cache") and c.prompt_len == kv_checks.GPU_CELL.prompt_len
    ]
    fields = ("model", "dtype", "batch", "dim", "depth", "prompt_len")
    assert {f: getattr(same, f) for f in fields} == {f: getattr(kv_checks.GPU_CELL, f) for f in fields}
    assert kv_checks.NUM_TOKENS == decode.NUM_TOKENS


@pytest.mark.slow  # a fresh Python importing torch
def test_the_child_runs_with_the_setting_and_returns_its_record():
    found = kv_checks.spawn_child(SMOKE_CELL, torch.device("cpu"), timeout_s=120)
    assert found[kv_checks.AVOID_RECOMPILE] == "1"
    assert found["suite"]["per_token_ms"] > 0 and found["same_length"]["repeat_ms"] > 0
