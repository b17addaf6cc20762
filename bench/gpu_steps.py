"""The GPU command's steps beside the suites (run_all.py --preset gpu-check, docs/gpu.md): the machine's limits
measured once for the whole command, the second scaling pass's cells, bench.ab.power's A/A and planted runs, the
KV-cache checks, and the two scaling passes' spread. run_all.py plans them with the suites (each a Step with its
estimate) and runs each under its time limit; this module imports no suite.
"""

import json
import shutil
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

from bench import ab, regress
from bench.ab import power
from bench.core import cli, config, estimate, kv_checks, limits
from bench.results import atomic_write_text
from bench.usage import UsageError

REPEAT, SPREAD_FILE, LIMITS_FILE = "repeat", "ratio_spread.json", "limits.json"  # under the run directory
REPEAT_MAX_LEN = 8192  # the second scaling pass's longest length
STEPS = ("ab-power", "kv-checks")  # the steps after the suites, named as --only names them


@dataclass(frozen=True)
class Step:
    """A step of a run: its name, the cells it measures, its estimated device seconds (bench.core.estimate) and
    run(settings) -> exit code (0, 1, 2, or a str saying what broke), `settings` the run's cli.Common with the
    step's time limit; None for the GPU command's first steps, which run_all.gpu_check runs itself."""

    name: str
    cells: int
    seconds: float
    run: object = None


def first_steps(only, limits_given):
    """The steps before the suites: the CUDA checks, and the limits unless --limits gives them (or no suite that
    needs them runs)."""
    steps = [Step("cuda checks", 0, estimate.CHECKS_S)]
    if not limits_given and any(name in only for name in limits.SUITES):
        steps.append(Step("limits", 0, estimate.limits_s()))
    return steps


def last_steps(only):
    """The steps after the scaling passes that `only` (--only's steps) names."""
    steps = []
    if "ab-power" in only:
        cells = power.gpu_check_cells()
        timing = ab.PRESETS[power.GPU_CHECK["preset"]].timing
        run = sum(estimate.ab_cell(c, timing) for c in cells)  # graphs replayed: the plant spins on the device
        again = sum(estimate.ab_cell(c, timing) for c in cells if c.model == power.GPU_CHECK["model"])  # flagged
        steps.append(Step("ab-power", 2 * len(cells), 2 * run + again, run_power))  # the A/A, the plant
    if "kv-checks" in only:
        steps.append(Step("kv-checks", 1, estimate.kv_checks_s(), run_kv_checks))
    return steps


def repeat_cells(cells):
    """The second scaling pass's cells: each group (every model at one length, mode and dtype) up to REPEAT_MAX_LEN
    with a step estimated under bench.regress's MIN_TIMED_MS on CUDA: where launch-bound eager times moved most
    between passes, and where the graph-replayed spread that re-derives the CUDA tolerance is to be shown."""
    short_s = regress.MIN_TIMED_MS["cuda"] / 1e3
    return [
        cell
        for group in config.groups_of(cells)
        if group[0].seq_len <= REPEAT_MAX_LEN and min(estimate.layer_step(c) for c in group) < short_s
        for cell in group
    ]


def made_before(settings, path, step):
    """Whether `path`, the step's result, is there from before: kept on --resume (True), or, without it, the reason
    the step does not overwrite it (a str, the step's failure). False: the step runs."""
    if not path.exists():
        return False
    if settings.resume:
        print(f"== {step}: kept from before (--resume): {path}", file=sys.stderr, flush=True)
        return True
    return f"{path} exists; pass --resume to keep it, or another --out"


def run_power(settings):
    """bench.ab.power's GPU_CHECK runs into RUN/ab-power/, none started after the time limit; on --resume, a
    complete one is kept and an interrupted one made again."""
    out = Path(settings.out) / power.GPU_CHECK_DIR
    if done := made_before(settings, out / power.POWER_CSV, "ab-power"):
        return 0 if done is True else done
    if out.exists() and not settings.resume:
        return f"{out} exists; pass --resume to make its runs again, or another --out"
    shutil.rmtree(out, ignore_errors=True)  # an interrupted step's runs, made again on --resume
    print("== ab-power: bench.ab's A/A and planted runs", file=sys.stderr, flush=True)
    device = cli.resolve_device(settings.device).type
    deadline = time.monotonic() + settings.time_limit
    return power.gpu_check(device, out, deadline=deadline)


def run_kv_checks(settings):
    """The KV-cache checks into RUN/kv_checks.json, none started after the time limit (kept on --resume)."""
    if done := made_before(settings, Path(settings.out) / kv_checks.FILE, "kv-checks"):
        return 0 if done is True else done
    print("== kv-checks: attention's KV-cache step timed four ways", file=sys.stderr, flush=True)
    deadline = time.monotonic() + settings.time_limit
    device = cli.resolve_device(settings.device)
    record = kv_checks.run(device, Path(settings.out), kv_checks.GPU_CELL, deadline=deadline)
    print(f"kv-checks: {record['verdict']}: {record['why']}")
    return 0


def measured_limits(common, device, dtypes, failures):
    """The machine's limits for `dtypes`, measured once for the whole command (both scaling passes, profiling) into
    RUN/limits.json, which every suite then reads as it reads --limits FILE (kept on --resume): the settings with
    it. A measurement that fails is listed in `failures`, and the suites run without floors."""
    path = Path(common.out) / LIMITS_FILE
    if not (common.resume and path.exists()):
        measured, failed = limits.measure_for_run(device, dtypes)
        if failed:
            failures.append(f"limits: {failed}")
            return common
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(measured, indent=2) + "\n")
    return replace(common, limits=str(path))


def spread(out_dir, csv):
    """The two scaling passes' time-ratio spread (their `csv`, in RUN and RUN/repeat) into RUN/ratio_spread.json,
    printed. Returns 1 when the passes have no cell in common, else 0 (also when a pass is missing)."""
    if not ((out_dir / csv).exists() and (out_dir / REPEAT / csv).exists()):
        return 0
    try:
        found = regress.ratio_spread(out_dir, out_dir / REPEAT)
    except UsageError as error:  # e.g. no cell in common: the run is still packed
        print(f"no time-ratio spread: {error}", file=sys.stderr)
        return 1
    atomic_write_text(out_dir / SPREAD_FILE, json.dumps(found, indent=2) + "\n")
    print(regress.render_spread(found))
    return 0
