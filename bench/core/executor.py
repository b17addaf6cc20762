"""Where a suite's jobs run (`--executor`), decided here and nowhere else: `local`, one after another in this
process (the default), or `ray`, one Ray task per job (a cell, or an interleaved group in the scaling suite) on this
machine or a cluster (`--ray-address`).

Either way only this process writes: a job's `begin()` runs here (is the cell done? skipped after an OOM?) and
says what to run, a task runs it where the executor puts it and returns its result, and the job's `done(result)`
runs here again, recording it. So resume, `bench.results merge` and the gate see the same CSV. A job run here runs
inside its `local` context (the sweep's in-flight marker). On Ray, jobs are submitted in order as workers free up
(never more than can run at once), and begin() runs at submission: an OOM skips the longer cells of its series
that have not started, as locally (one already running on another worker runs on). Holding a job back until the
earlier jobs of its series had finished would keep that exact, at a price in wall time that simulate() estimates
(docs/suites.md).

On Ray a task is run with max_retries=0 (a crash is a row, not four runs), on `num_gpus=1` on CUDA and
`num_cpus=--threads` (default: every core of a node, so one cell per node at a time and no neighbour in a
CPU timing) on CPU. Workers import the project from Ray's runtime environment (its working_dir), not from this
process's path, and a task's target is a module-level function they import by name (tests/test_executor.py
resolves every one). A worker that dies (a crash, Ray's out-of-memory killer, a lost node) makes its cells error
rows "worker died in this cell"; `--cell-timeout` cancels a task that runs longer; Ctrl-C cancels every task and
leaves a CSV that --resume continues. Ray is imported only here, and only by the ray executor.
"""

import contextlib
import gc
import importlib
import json
import os
import platform
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from bench import usage
from bench.core import env
from bench.results import read_env
from bench.usage import UsageError

EXECUTORS = ("local", "ray")
WORKER_DIED = "worker died in this cell"
REPO_ROOT = Path(__file__).resolve().parents[2]
# never shipped to workers: run outputs, figures, the environment, the history
EXCLUDES = ["results/", "plots/", ".venv/", ".git/", "**/__pycache__/", "traces/"]
CONNECT_TIMEOUT_S = 5.0


@dataclass
class Job:
    """begin() -> (target, args) for what is left to run, target a module-level function every worker imports
    (None: nothing to run, its rows are recorded); done(result, or the exception that stood in for it); ready() ->
    whether begin may run yet (a training at a selected rate waits for its selection); local() -> the context a job
    run in this process runs in, its begin() excepted (the sweep's in-flight marker)."""

    begin: object
    done: object
    ready: object = None
    local: object = None


@dataclass(frozen=True)
class Placement:
    """Where jobs run (--executor and its options, checked here: one line and exit 2 for a bad value, nothing
    written): here, or as Ray tasks of `threads` CPUs (default: a node's) or one GPU each (`gpus`)."""

    executor: str = "local"
    ray_address: str | None = None
    cell_timeout: float | None = None
    threads: int | None = None
    gpus: int = 0

    def __post_init__(self):
        usage.choice(self.executor, "executor", EXECUTORS)
        if self.executor != "ray" and (self.ray_address or self.cell_timeout):
            raise UsageError("--ray-address and --cell-timeout need --executor ray")
        if self.executor == "ray":
            check_address(self.ray_address)
            try:
                importlib.import_module("ray")
            except ImportError:
                raise UsageError(
                    "--executor ray: the ray package is not installed (pip install -r requirements.txt)"
                ) from None


LOCAL = Placement()


def call(target, args):
    """A Ray task's body, on a worker: the target's result and where it ran."""
    return target(*args), worker_info()


def worker_info():
    """What env.json lists for each node that ran a cell."""
    import torch

    cuda = torch.cuda.is_available()
    return {
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda if cuda else None,
        "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else ["cpu"],
        "cpu_count": os.cpu_count(),
    }


def check_address(address):
    """A --ray-address must be host:port with something listening: one clear line (exit 2) otherwise, within
    seconds, before Ray's own connection retries."""
    if address in (None, "auto"):
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"--ray-address must be HOST:PORT (or auto), got {address!r}")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as error:
        raise UsageError(
            f"--ray-address {address}: no Ray cluster reachable there ({error.strerror or error})"
        ) from None


@contextlib.contextmanager
def frozen_gc():
    """While sweeping, leave the objects alive before it (torch, the modules) out of garbage collection:
    the collections around each cell then skip them."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def drive(cells, run_cell, *, desc, deadline=None, clock=time.monotonic, unit="cell"):
    """The one local driver: run_cell(cell) for every cell in order, with a progress bar (cells done of total and
    an ETA, on stderr) and garbage collection frozen for what lives before the sweep and, after each cell's
    garbage is collected, for what the cell keeps. With a `deadline` (on `clock`), no cell starts after it: the
    cells left are not recorded, so --resume measures them later. Returns the number of cells left."""
    cells = list(cells)
    with frozen_gc():
        for i, cell in enumerate(
            tqdm(cells, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True, mininterval=1.0)
        ):
            if deadline is not None and clock() >= deadline:
                _time_limit(desc, len(cells) - i, len(cells), unit)
                return len(cells) - i
            run_cell(cell)
            # what the cell imported or cached lazily and keeps (torch._dynamo on a first call, ...) joins the
            # frozen objects once its garbage is collected: left young, every later collection would walk it
            gc.collect()
            gc.freeze()
    return 0


def run(jobs, placement=LOCAL, *, desc, unit="cell", deadline=None, clock=time.monotonic):
    """Run `jobs` in order where `placement` says (see the module docstring); returns (jobs not started for the
    deadline, worker infos: none locally)."""
    if placement.executor == "ray":
        return _run_ray(list(jobs), placement, desc=desc, unit=unit, deadline=deadline, clock=clock)
    return drive(jobs, run_here, desc=desc, deadline=deadline, clock=clock, unit=unit), []


def run_here(job):
    """One job in this process: begin, its target, done, the last two inside the job's local context."""
    if (work := job.begin()) is None:
        return
    with job.local() if job.local else contextlib.nullcontext():
        target, args = work
        try:
            result = target(*args)
        except Exception as error:  # the target's own machinery failed: its cells say so
            result = error
        job.done(result)


def _time_limit(desc, left, total, unit):
    print(
        f"{desc}: time limit reached, {left} of {total} {unit}s not run (--resume runs them)",
        file=sys.stderr,
        flush=True,
    )


def _run_ray(jobs, placement, *, desc, unit, deadline, clock):
    import ray
    from ray.exceptions import GetTimeoutError, RayError, RayTaskError, TaskCancelledError

    gpus, cell_timeout = placement.gpus, placement.cell_timeout
    started = not ray.is_initialized()
    if started:
        _init(placement.ray_address)
    cpus = placement.threads or int(ray.cluster_resources().get("CPU", os.cpu_count()) // max(1, len(ray.nodes())))
    task = ray.remote(max_retries=0)(call).options(num_cpus=0 if gpus else cpus, num_gpus=1 if gpus else 0)
    infos, running, waiting, bar = (
        [],
        {},
        list(jobs),
        tqdm(total=len(jobs), desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True, mininterval=1.0),
    )

    def capacity():  # tasks that can run at once: submitted only then, so a task's clock starts when it does
        free = ray.cluster_resources()
        return max(1, int(free.get("GPU", 0)) if gpus else int(free.get("CPU", 1) // cpus))

    try:
        while waiting or running:
            room = capacity() - len(running)
            while room > 0 and (job := _first_ready(waiting, idle=not running)) is not None:
                waiting.remove(job)
                if deadline is not None and clock() >= deadline:
                    _time_limit(desc, len(waiting) + 1, len(jobs), unit)
                    waiting = []
                    break
                work = job.begin()
                if work is None:
                    bar.update()
                    continue
                running[task.remote(*work)] = (job, clock())
                room -= 1
            if not running:
                continue
            ready, _ = ray.wait(list(running), num_returns=1, timeout=1.0)
            for ref in ready:
                job, _ = running.pop(ref)
                try:
                    result, info = ray.get(ref)
                    infos.append(info)
                except RayTaskError as error:  # the target raised: its cells say what
                    result = error.cause if isinstance(error.cause, Exception) else RuntimeError(str(error))
                except TaskCancelledError:
                    result = TimeoutError(f"cell timed out after {cell_timeout:g} s (--cell-timeout)")
                except (RayError, GetTimeoutError) as error:  # worker crash, Ray's OOM killer, a lost node
                    result = RuntimeError(f"{WORKER_DIED} ({type(error).__name__})")
                job.done(result)
                bar.update()
            if cell_timeout:
                for ref, (_, since) in list(running.items()):
                    if clock() - since > cell_timeout:
                        ray.cancel(ref, force=True)
    except KeyboardInterrupt:
        for ref in running:
            ray.cancel(ref, force=True)
        raise
    finally:
        bar.close()
        if started:
            ray.shutdown()
    return 0, infos


def _first_ready(waiting, *, idle):
    """The first waiting job that may start (all may, once nothing runs)."""
    for job in waiting:
        if job.ready is None or job.ready() or idle:
            return job
    return None


def record_nodes(out_dir, infos):
    """Add the nodes of `infos` to env.json's `nodes` (each node once, across the suites of a run)."""
    if not infos:
        return
    known = (read_env(out_dir) or {}).get("nodes", [])
    env.record(out_dir, nodes=list({json.dumps(i, sort_keys=True): i for i in [*known, *infos]}.values()))


def add_flags(p):
    """The executor's flags, on a suite's parser (bench.core.cli) and run_all.py's; Placement checks them together."""
    p.add_argument(
        "--executor",
        default="local",
        type=usage.value_of(usage.one_of(EXECUTORS, "executor"), "executor"),
        help="local (default: cells one after another here) or ray "
        "(one Ray task per cell, one GPU or one node's CPUs each; docs/suites.md)",
    )
    p.add_argument(
        "--ray-address",
        help="HOST:PORT of a running Ray cluster (`ray start --head`); default: start "
        "a local Ray instance and shut it down at the end",
    )
    p.add_argument(
        "--cell-timeout",
        metavar="SECONDS",
        type=usage.value_of(usage.positive_number, "cell-timeout"),
        help="with --executor ray: a cell still running after this long is cancelled and recorded as an error",
    )


def _init(address):
    import ray

    ray.init(
        address=address,
        runtime_env={"working_dir": str(REPO_ROOT), "excludes": EXCLUDES},
        include_dashboard=False,
        log_to_driver=True,
        **({} if address else {"num_cpus": os.cpu_count()}),
    )


@contextlib.contextmanager
def session(address=None):
    """One Ray instance (or connection) for every suite run inside (run_all.py --executor ray): each suite then
    joins it instead of starting and stopping its own."""
    import ray

    _init(address)
    try:
        yield
    finally:
        ray.shutdown()


def simulate(costs, workers, *, series=None):
    """Wall time of jobs of `costs` seconds on `workers` workers, each started in order on the first worker free
    (this executor); with `series` (a set of names per job), a job also waits for the earlier jobs sharing a
    name to finish (the rule this executor does not follow, see the module docstring)."""
    free, finished, end = [0.0] * workers, {}, 0.0  # each worker's next free time; each series' last finish
    for i, cost in enumerate(costs):
        w = min(range(workers), key=free.__getitem__)
        names = series[i] if series else ()
        free[w] = max([free[w], *(finished.get(s, 0.0) for s in names)]) + cost
        finished.update(dict.fromkeys(names, free[w]))
        end = max(end, free[w])
    return end


def static_shards(costs, workers):
    """Wall time of --shard I/N round-robin slices of the same jobs, one per worker: the slowest slice."""
    return max(sum(costs[i::workers]) for i in range(workers))
