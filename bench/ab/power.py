"""How large a slow-down bench.ab catches: A/A runs and planted slow-downs, counted into a power curve.

    python -m bench.ab.power --out DIR                 # the gate preset: 5 A/A runs, conv slowed by 3, 5, 10, 20%
    python -m bench.ab.power --out DIR --models conv,gss --seq-lens 64 --dim 32 --modes fwd \\
        --aa-runs 1 --plants 10 --budget 0.2           # a smoke, seconds

The GPU command (run_all.py --preset gpu-check, docs/gpu.md) runs a small power run of its own, GPU_CHECK: one A/A
run and one 10% plant of conv over gate-cuda's cells of conv, gss and attention, into RUN/ab-power/.

The code compared is the working tree's models/ (or --revision's), copied into a temporary directory: once as it is
(the base), and once per plant with one model (--model, conv by default) slowed by a known fraction (bench.ab.plant:
every forward and backward of the layer waits that fraction of its own time; on CUDA a spin kernel that a CUDA graph
captures). An A/A run compares the clean copy with itself; a planted run the clean copy with a planted one. Runs
alternate (A/A, each plant, A/A, ...) so that a drift of the machine over the procedure falls on all of them. Each
run's ab.csv and env.json are kept in DIR/runs/; DIR/power.csv counts, per run and per threshold of --thresholds
(the verdict re-made from each cell's two measurements: bench.ab.verdict.verdict_of), the planted model's cells
flagged and every other model's; the runs compare at the smallest of --thresholds, so that every cell flagged at any
of them is measured again, as bench.ab measures a flagged cell again; DIR/power.png draws the share flagged against
the planted fraction (bench.plots.power). bench.ab's default --threshold is chosen from them, with a margin for
runners noisier than the one measured (docs/regression-gate.md).
"""

import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from bench import usage
from bench.ab import CSV, PRESETS, add_selection, make_spec, run, sides, sigterm_as_interrupt
from bench.ab.verdict import verdict_of
from bench.core.config import ALL, layer_cells
from bench.results import REPO_ROOT, RESULTS_DIR, ResultsError, RowWriter, new_run_id, read_rows
from bench.usage import Parser, UsageError, fail

POWER_CSV = "power.csv"
POWER_COLUMNS = (
    "threshold_pct",
    "planted_pct",
    "run",
    "model",
    "cells",
    "flagged",
    "median_ratio",
    "other_cells",
    "other_flagged",
)
PLANT_SOURCE = Path(__file__).with_name("plant.py")
THRESHOLDS = (1.0, 2.0, 3.0, 4.0, 5.0)  # percent: power.csv's rows, by default
# The GPU command's runs: the gate's false alarms (A/A) and a detection (the 10% plant) on gate-cuda's cells of the
# planted model and two others, within the command's budget
GPU_CHECK = dict(preset="gate-cuda", models=("conv", "gss", "attention"), model="conv", plants=(10.0,), aa_runs=1)
GPU_CHECK_DIR = "ab-power"


def planted_tree(clean, into, model, fraction):
    """A copy of directory `clean`'s models/ at `into` whose registry slows `model` by `fraction`."""
    shutil.copytree(clean / "models", into / "models", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(PLANT_SOURCE, into / "models" / "_plant.py")
    with open(into / "models" / "__init__.py", "a") as init:
        init.write(f"\nfrom ._plant import slow_down as _slow_down\n\n_slow_down(SPECS, {model!r}, {fraction!r})\n")
    return into


def clean_tree(source, into):
    """The source's models/ copied (a directory) or exported (a revision) to `into`."""
    if source.commit:
        return sides.export(source, into)
    shutil.copytree(source.directory / "models", into / "models", ignore=shutil.ignore_patterns("__pycache__"))
    return into


def schedule(aa_runs, plants, plant_runs):
    """(planted percent, run) in the order measured: round r holds A/A run r and run r of every plant."""
    order = []
    for r in range(1, max(aa_runs, plant_runs) + 1):
        order += [(0.0, r)] if r <= aa_runs else []
        order += [(pct, r) for pct in plants] if r <= plant_runs else []
    return order


def counts(rows, model, threshold_pct):
    """The power.csv columns of one run's ab.csv rows at one threshold (cells compared by both sides only)."""
    compared = [r for r in rows if r["ratio"] != ""]
    flagged = [r for r in compared if verdict_of(r, threshold_pct) == "regression"]
    mine = [r for r in compared if r["model"] == model]
    ratios = [float(r["ratio"]) for r in mine]
    return dict(
        model=model,
        cells=len(mine),
        flagged=sum(r["model"] == model for r in flagged),
        median_ratio=statistics.median(ratios) if ratios else None,
        other_cells=len(compared) - len(mine),
        other_flagged=sum(r["model"] != model for r in flagged),
    )


def measure(spec, source, out, *, model, plants, aa_runs, plant_runs, deadline=None, clock=time.monotonic):
    """Every run of the schedule into out/runs/<name>/, none started after `deadline` (on `clock`); returns
    [(planted percent, run, path of its ab.csv)] of the runs made."""
    tmp = Path(tempfile.mkdtemp(prefix=sides.TEMP_PREFIX))
    try:
        clean = clean_tree(source, tmp / "clean")
        trees = {0.0: clean} | {pct: planted_tree(clean, tmp / f"plant-{pct:g}", model, pct / 100) for pct in plants}
        base, runs = sides.Source("base", "clean copy", directory=clean), []
        for pct, r in schedule(aa_runs, plants, plant_runs):
            if deadline is not None and clock() >= deadline:
                print(f"power: time limit: {pct:g}% run {r} and the runs after it not made", file=sys.stderr)
                break
            name = f"aa-{r}" if pct == 0 else f"plant-{pct:g}pct-{r}"
            head = sides.Source("head", "clean copy" if pct == 0 else f"{model} +{pct:g}%", directory=trees[pct])
            run(replace(spec, base=base, head=head, out_dir=out / "runs" / name), quiet=True)
            runs.append((pct, r, out / "runs" / name / CSV))
            mine = counts(read_rows(runs[-1][2]), model, spec.threshold_pct)
            print(
                f"power: {name}: {mine['flagged']}/{mine['cells']} {model} cells flagged, "
                f"{mine['other_flagged']}/{mine['other_cells']} others",
                file=sys.stderr,
            )
        return runs
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_power(out, runs, model, thresholds):
    """out/power.csv: per threshold, each run's counts (counts)."""
    with RowWriter(out / POWER_CSV, POWER_COLUMNS) as writer:
        for threshold in thresholds:
            for pct, r, path in runs:
                found = counts(read_rows(path), model, threshold)
                writer.append({"threshold_pct": threshold, "planted_pct": pct, "run": r, **found})
    return out / POWER_CSV


def gpu_check_cells():
    """The cells of GPU_CHECK's runs (bench.core.estimate prices them)."""
    return layer_cells(PRESETS[GPU_CHECK["preset"]], models=GPU_CHECK["models"])


def gpu_check(device, out, *, deadline=None):
    """The GPU command's step: GPU_CHECK's runs of the working tree's models/ on `device` (a type: "cuda"; "cpu"
    in the tests) into `out` (runs/, power.csv), none started after `deadline`. Returns the exit code: 0, or the
    reason none was made (a str)."""
    source = sides.resolve(None, "head", REPO_ROOT)
    selection = dict(preset=GPU_CHECK["preset"], models=GPU_CHECK["models"], device=device, out=None)
    spec = make_spec(selection, source, source, command=("run_all.py --preset gpu-check: bench.ab.power",))
    spec = replace(spec, threshold_pct=min(THRESHOLDS))  # every threshold's flags measured again (counts)
    how = dict(model=GPU_CHECK["model"], plants=GPU_CHECK["plants"], aa_runs=GPU_CHECK["aa_runs"], plant_runs=1)
    runs = measure(spec, source, out, deadline=deadline, **how)
    if not runs:
        return "no run made before its time limit"
    print(write_power(out, runs, GPU_CHECK["model"], THRESHOLDS))
    return 0


def make_parser():
    p = Parser(prog="python -m bench.ab.power", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="conv", type=usage.one_of(ALL, "model"), help="the model slowed")
    percents = usage.list_of(usage.positive_number, "plants")
    p.add_argument("--plants", type=percents, default=(3.0, 5.0, 10.0, 20.0), help="slow-downs planted, in percent")
    p.add_argument("--aa-runs", type=usage.value_of(usage.positive_int, "aa-runs"), default=5, help="A/A runs")
    p.add_argument("--plant-runs", type=usage.value_of(usage.positive_int, "plant-runs"), default=1, help="per plant")
    thresholds = usage.list_of(usage.positive_number, "thresholds")
    p.add_argument("--thresholds", type=thresholds, default=THRESHOLDS, help="percent, power.csv's")
    p.add_argument("--revision", help="the code measured: a revision or a directory (default: the working tree)")
    p.add_argument("--repo", default=str(REPO_ROOT), help="the git checkout revisions are found in (default: this)")
    add_selection(p)
    return p


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = vars(make_parser().parse_args(argv))
        source = sides.resolve(args["revision"], "head", Path(args["repo"]))
        out = Path(args["out"]) if args["out"] else RESULTS_DIR / new_run_id()
        if (out / POWER_CSV).exists() or (out / "runs").exists():
            raise UsageError(f"{out} holds a power run already; pass another --out")
        spec = make_spec({**args, "out": None}, source, source, command=("python -m bench.ab.power", *argv))
        spec = replace(spec, threshold_pct=min(args["thresholds"]))  # every threshold's flags measured again
    except (UsageError, ResultsError, ValueError) as error:
        return fail(error)
    if args["threads"]:
        torch.set_num_threads(args["threads"])
    try:
        with sigterm_as_interrupt():
            runs = measure(spec, source, out, **{k: args[k] for k in ("model", "plants", "aa_runs", "plant_runs")})
    except sides.LoadError as error:
        return fail(f"cannot compare: {error}")
    write_power(out, runs, args["model"], args["thresholds"])
    from bench.plots.power import plot_power  # matplotlib only here, after the measuring

    print(plot_power(out / POWER_CSV, out / "power.png"))
    print(out / POWER_CSV)
    return 0


if __name__ == "__main__":
    sys.exit(main())
