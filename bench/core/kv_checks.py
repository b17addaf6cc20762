"""The KV-cache step explained (docs/gpu.md, "The KV-cache checks"): attention's decoding step at a long prompt,
timed four ways, to tell whether what it costs is the step's work or a plan built for every new cache length
(cuDNN's SDPA builds an execution graph per shape; torch's TORCH_CUDNN_SDPA_AVOID_RECOMPILE=1 is its opt-in
against that):

(a) suite: as the decode suite times it: a prefill (the cache preallocated to prompt_len + new_tokens), one
    warm-up step, then new_tokens - 1 steps each timed (bench.core.timing.measure), each at a new cache length;
(b) backends: the same with each SDPA backend forced on the steps (torch.nn.attention.sdpa_kernel): MATH,
    EFFICIENT_ATTENTION, FLASH_ATTENTION, CUDNN_ATTENTION; one that cannot run the step says why;
(c) avoid_recompile: (a) and (d) in a child process with TORCH_CUDNN_SDPA_AVOID_RECOMPILE=1 (torch reads it once);
(d) same_length: after a warm-up step, each step taken twice at one cache length, the cache rolled back between
    (its length reset: the second call writes the same slot from the same token); where building a plan is the
    cost, the second call, at a length already seen, is fast.

Each check in a process steps its own cache lengths (its prompt new_tokens longer than the check's before), so
that none meets a length an earlier one planned. Beside them, reforward_ms: one forward over the prompt and a
token, what the stepping is compared with. The record, with the verdict by RULE (fixed before a GPU ran it), goes
to RUN/kv_checks.json. On a CPU the same code runs (the CPU's SDPA backends; cuDNN's cannot run), so the tests
check the record's structure, and the verdict on planted times.
"""

import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
import warnings
from dataclasses import asdict, dataclass

import torch

import models
from bench.core.graphs import describe
from bench.core.sweep import device_name
from bench.core.timing import autocast, measure, timer_for
from bench.results import REPO_ROOT, atomic_write_text

FILE = "kv_checks.json"
AVOID_RECOMPILE = "TORCH_CUDNN_SDPA_AVOID_RECOMPILE"
BACKENDS = ("MATH", "EFFICIENT_ATTENTION", "FLASH_ATTENTION", "CUDNN_ATTENTION")  # torch's SDPBackend names
SOLO_CHECKS = ("suite", *BACKENDS)  # the checks that prefill and step new_tokens times, once each
NUM_TOKENS = 256  # the decode suite's byte-level vocabulary
REFORWARD_REPEATS = 5
FAST_REPEAT = 1 / 3  # (d): a repeat under this share of the first call: the first call built something
SAME_REPEAT = 2 / 3  # (d): a repeat at least this share of the first: a length seen before costs as much
SLOW_BACKEND = 3.0  # (b): cuDNN forced at least this many times the fastest other backend
RULE = (
    "plan rebuild confirmed when (d)'s repeat at a cache length already seen takes under 1/3 of the first call at "
    "that length and (b)'s step forced onto CUDNN_ATTENTION takes at least 3x the fastest other backend's; refuted "
    "when (d)'s repeat takes at least 2/3 of the first (a length seen before costs as much as a new one); "
    "otherwise inconclusive. Reported beside: (c)'s per-token time over (a)'s (under 1/3: that setting is a fix)"
)


@dataclass(frozen=True)
class KvCell:
    """What the checks decode: an LM of `depth` layers of `model` (an attention layer: its state a KV cache)."""

    model: str = "attention"
    dtype: str = "bfloat16"
    batch: int = 8
    dim: int = 1024
    depth: int = 4
    prompt_len: int = 4096
    new_tokens: int = 16


GPU_CELL = KvCell()  # the decode suite's gpu-check kv_cache cell at the 4K prompt, fewer tokens
SMOKE_CELL = KvCell(dtype="float32", batch=1, dim=32, depth=1, prompt_len=48, new_tokens=4)


@contextlib.contextmanager
def decoding(device, dtype, backend=None):
    """Inference mode and the dtype's autocast, as the decode suite steps; `backend`: the SDPA backend forced."""
    forced = contextlib.nullcontext()
    if backend is not None:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        if not hasattr(SDPBackend, backend):
            raise RuntimeError(f"this torch ({torch.__version__}) has no SDPBackend.{backend}")
        forced = sdpa_kernel(getattr(SDPBackend, backend))
    with torch.inference_mode(), autocast(dtype, device.type), forced:
        yield


class Decoder:
    """An LM prefilled at one prompt, then stepped greedily; again() takes the last step once more, at the same
    cache length."""

    def __init__(self, lm, cell, prompt_len, device, backend=None):
        self.lm, self.device, self.dtype, self.backend = lm, device, cell.dtype, backend
        generator = torch.Generator().manual_seed(prompt_len)
        prompt = torch.randint(NUM_TOKENS, (cell.batch, prompt_len), generator=generator).to(device)
        with decoding(device, cell.dtype):
            logits, self.state = lm.prefill(prompt, max_len=prompt_len + cell.new_tokens)
        if not all(hasattr(cache, "length") for cache in self.state):
            raise ValueError(f"{cell.model}: its decoding state is not a KV cache")
        self.token = self.previous = logits[:, -1].argmax(-1)

    def step(self):
        self.previous = self.token
        with decoding(self.device, self.dtype, self.backend):
            logits, _ = self.lm.step(self.token, self.state)
        self.token = logits.argmax(-1)

    def again(self):
        for cache in self.state:
            cache.length -= 1
        self.token = self.previous
        self.step()


def stepping(lm, cell, prompt_len, device, backend=None):
    """(a), or (b) with `backend` forced: the decode suite's warm-up step, then new_tokens - 1 timed steps."""
    decoder = Decoder(lm, cell, prompt_len, device, backend)
    timer = timer_for(device)
    warmup_ms = timer.time_ms(decoder.step)
    steps = cell.new_tokens - 1
    timed = measure(decoder.step, device=device, warmup=0, min_repeats=steps, max_repeats=steps)
    return dict(per_token_ms=timed.median_ms, warmup_ms=warmup_ms, times_ms=timed.times_ms)


def same_length(lm, cell, prompt_len, device):
    """(d): a warm-up step, then new_tokens - 1 pairs: a step at a new cache length and the same step again."""
    decoder, timer = Decoder(lm, cell, prompt_len, device), timer_for(device)
    decoder.step()
    firsts, repeats = [], []
    for _ in range(cell.new_tokens - 1):
        firsts.append(timer.time_ms(decoder.step))
        repeats.append(timer.time_ms(decoder.again))
    return dict(
        first_ms=statistics.median(firsts),
        repeat_ms=statistics.median(repeats),
        firsts_ms=firsts,
        repeats_ms=repeats,
    )


def reforward(lm, cell, prompt_len, device):
    """The median time of one forward over the prompt and one token: the decode suite's reforward, the cost of a
    token without a cache."""
    ids = torch.randint(NUM_TOKENS, (cell.batch, prompt_len + 1), generator=torch.Generator().manual_seed(0))
    ids = ids.to(device)

    def forward():
        with decoding(device, cell.dtype):
            lm(ids)[:, -1].argmax(-1)

    repeats = REFORWARD_REPEATS
    timed = measure(forward, device=device, warmup=1, min_repeats=repeats, max_repeats=repeats)
    return {"per_token_ms": timed.median_ms}


def build(cell, device):
    torch.manual_seed(0)
    lm = models.build_lm(cell.model, num_tokens=NUM_TOKENS, dim=cell.dim, depth=cell.depth, device=device)
    return lm.eval()


def attempt(check):
    """check()'s record, or why it could not run: {"error": "Type: message", "warnings": [what torch said]}."""
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        try:
            return check()
        except Exception as error:
            record = {"error": describe(error)}
            return record | {"warnings": sorted({str(w.message).splitlines()[0] for w in said})[:8]}


def at(prompt_len, check, lm, cell, device, *args):
    """The record of check(lm, cell, prompt_len, device, *args) (attempt), with the prompt it stepped from."""
    return {"prompt_len": prompt_len, **attempt(lambda: check(lm, cell, prompt_len, device, *args))}


def measure_checks(cell, device, *, deadline=None, clock=time.monotonic, child=None):
    """Every check of `cell` on `device`, in order: reforward, (a), (b) backend by backend, (d), then (c) in the
    child process (`child(cell, device, timeout_s)`: spawn_child, replaced by the tests), none started after
    `deadline` (on `clock`; it says "skipped"). The record, with its verdict."""
    device = torch.device(device)
    lm, stride = build(cell, device), cell.new_tokens
    record = dict(rule=RULE, cell=asdict(cell), device=device_name(device), **versions())

    def checked(check, prompt_len, *args):
        if deadline is not None and clock() >= deadline:
            return {"prompt_len": prompt_len, "skipped": "time limit"}
        return at(prompt_len, check, lm, cell, device, *args)

    record["reforward"] = checked(reforward, cell.prompt_len)
    record["suite"] = checked(stepping, cell.prompt_len)
    prompts = {name: cell.prompt_len + i * stride for i, name in enumerate(BACKENDS, 1)}
    record["backends"] = {name: checked(stepping, prompts[name], name) for name in BACKENDS}
    record["same_length"] = checked(same_length, cell.prompt_len + (len(BACKENDS) + 1) * stride)
    left_s = None if deadline is None else deadline - clock()
    if left_s is not None and left_s <= 0:
        record["avoid_recompile"] = {"skipped": "time limit"}
    else:
        record["avoid_recompile"] = attempt(lambda: (child or spawn_child)(cell, device, left_s))
    record["verdict"], record["why"] = verdict(record)
    return record


def versions():
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {"torch": torch.__version__, "cudnn": cudnn}


def spawn_child(cell, device, timeout_s=None):
    """(c): python -m bench.core.kv_checks in a fresh process with AVOID_RECOMPILE=1, its record read from its
    last line of output; RuntimeError naming its exit code and last line of stderr when it fails."""
    env = {**os.environ, AVOID_RECOMPILE: "1"}
    argv = [sys.executable, "-m", __name__, json.dumps({"cell": asdict(cell), "device": str(device)})]
    try:
        done = subprocess.run(argv, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"the child passed its time limit ({timeout_s:.0f} s)") from None
    if done.returncode:
        last = (done.stderr.strip().splitlines() or [""])[-1]
        raise RuntimeError(f"the child exited {done.returncode}: {last}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def child_checks(cell, device):
    """What the child runs: (a) at the prompt and (d) a stride on, its environment's setting recorded."""
    lm = build(cell, device)
    return {
        AVOID_RECOMPILE: os.environ.get(AVOID_RECOMPILE),
        "suite": at(cell.prompt_len, stepping, lm, cell, device),
        "same_length": at(cell.prompt_len + cell.new_tokens, same_length, lm, cell, device),
    }


def _ms(check, key="per_token_ms"):
    return check.get(key) if isinstance(check, dict) else None


def verdict(record):
    """(verdict, why) of a record by RULE: "plan rebuild confirmed", "plan rebuild refuted" or "inconclusive"."""
    same = record.get("same_length") or {}
    first, repeat = _ms(same, "first_ms"), _ms(same, "repeat_ms")
    ran = {name: _ms(check) for name, check in (record.get("backends") or {}).items() if _ms(check)}
    cudnn = ran.pop("CUDNN_ATTENTION", None)
    fastest = min(ran, key=ran.get, default=None)
    parts = []
    if cudnn is not None and fastest is not None:
        parts.append(
            f"(b) CUDNN_ATTENTION {cudnn:.3g} ms, {cudnn / ran[fastest]:.2f}x {fastest}'s {ran[fastest]:.3g} ms"
        )
    else:
        parts.append("(b) no CUDNN_ATTENTION time to set against another backend's")
    child, suite = _ms((record.get("avoid_recompile") or {}).get("suite") or {}), _ms(record.get("suite") or {})
    if child and suite:
        parts.append(f"(c) {child / suite:.2f}x (a)'s per-token time")
    if not first or repeat is None:
        return "inconclusive", "; ".join(["(d) did not run", *parts])
    share = repeat / first
    parts.insert(0, f"(d) repeat {repeat:.3g} ms = {share:.2f} of the first call's {first:.3g} ms")
    cudnn_slow = cudnn is not None and fastest is not None and cudnn >= SLOW_BACKEND * ran[fastest]
    if share < FAST_REPEAT and cudnn_slow:
        return "plan rebuild confirmed", "; ".join(parts)
    if share >= SAME_REPEAT:
        return "plan rebuild refuted", "; ".join(parts)
    return "inconclusive", "; ".join(parts)


def run(device, out_dir, cell=GPU_CELL, **how):
    """measure_checks (`how`: its deadline, clock, child) into out_dir/kv_checks.json; returns the record."""
    record = measure_checks(cell, device, **how)
    atomic_write_text(out_dir / FILE, json.dumps(record, indent=2) + "\n")
    return record


if __name__ == "__main__":  # the child of spawn_child: one JSON argument, its record printed as the last line
    given = json.loads(sys.argv[1])
    print(json.dumps(child_checks(KvCell(**given["cell"]), torch.device(given["device"]))))
