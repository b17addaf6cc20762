"""The one sweep runner every suite uses: cells in order, rows appended as they are measured, failures as
rows, OOM-aware skipping, and a resume that neither repeats nor loses a cell.

A Sweep writes one CSV of bench.schema (and, where a cell writes more, the rows of others beside it, such as
a training's loss curve). A cell's way to its rows is one path, wherever it runs: the sweep makes it an executor
job (bench.core.executor decides where jobs run), whose begin() here says whether it is measured (done? skipped
after an OOM?), whose task `measured(measure, device type, *args)` builds and measures it in the process the
executor puts it in (this one, or a Ray worker) and returns its columns with that process's `device` column, and
whose done() records its rows here, the one writer. The measured columns are a dict (one row), a list of row dicts
(a cell of several rows, e.g. one per op category), or `Rows` (rows of this CSV plus rows of the others, and
files). An exception becomes an `oom` or `error` row and the sweep goes on. After an OOM, the longer cells of the
same series (the cell's key without its length column) are `skipped`. A cell run in this process is marked on
disk while it runs, so a resumed run records a cell that killed the process as `error` ("process died in this
cell") instead of running it again forever; on Ray a cell cannot kill this process, and a worker that dies is its
cell's error row (executor.WORKER_DIED).
"""

import gc
from dataclasses import dataclass, field
from pathlib import Path

import torch

from bench.core import executor
from bench.results import (
    DIED_ERROR,
    RowWriter,
    atomic_path,
    cell_key,
    format_value,
    in_flight,
    read_rows,
    take_in_flight,
)
from bench.schema import table


def is_oom(error):
    """CUDA raises OutOfMemoryError; the CPU allocator raises a RuntimeError that says so."""
    return isinstance(error, torch.OutOfMemoryError) or "can't allocate memory" in str(error)


def device_name(device):
    """The `device` column: cpu, or cuda:<device name> (CPU model and threads go to env.json)."""
    return "cpu" if device.type == "cpu" else f"cuda:{torch.cuda.get_device_name(device)}"


def failure_row(key, error):
    """A failed cell's row: `oom` for an out-of-memory error, else `error`, with the message."""
    return {**key, "status": "oom" if is_oom(error) else "error", "error": f"{type(error).__name__}: {error}"}


def measured(measure, device_type, *args):
    """The one task body, here or on a Ray worker: measure(*args, device) on this process's device of that type,
    and that device's `device` column (the row says where it ran)."""
    device = torch.device(device_type)
    return measure(*args, device), device_name(device)


@dataclass
class Rows:
    """A measured cell that writes more than its sweep's CSV: `rows` of it, `also` {csv name: rows}, and `files`
    {path under the run directory: bytes} (a profiler trace), written before the rows that name them."""

    rows: list
    also: dict = field(default_factory=dict)
    files: dict = field(default_factory=dict)


class Sweep:
    def __init__(self, csv, *, out_dir, run_id, device, resume, also=(), completes=None, worker_device=True):
        """csv: the bench.schema table written; also: the names of other tables a cell writes rows to;
        completes(row) -> whether a recorded row completes its cell (default: every row does); worker_device: a row's
        `device` column is the worker's that measured it (perplexity.csv's is the device type, the same anywhere)."""
        self.table, self.out_dir, self.run_id, self.device = table(csv), out_dir, run_id, device
        self.key, self.length, self.series = self.table.cell, self.table.length, self.table.series
        self.writer = RowWriter(out_dir / csv, self.table.columns)
        self.also = {name: RowWriter(out_dir / name, table(name).columns) for name in also}
        self.completes = completes or (lambda row: True)
        self.worker_device = worker_device and "device" in self.table.columns
        self.oom_at = {}  # series -> shortest length that ran out of memory
        rows = read_rows(out_dir / csv) if resume else []
        for row in rows:
            self.remember(row)
        self.done = {cell_key(row, self.key) for row in rows if self.completes(row)}  # the cells' keys
        self.recover_in_flight()

    def series_of(self, row):
        return cell_key(row, self.series)

    def remember(self, row):
        """Called with every row read back or recorded (values as CSV strings)."""
        if row["status"] == "oom":
            series, length = self.series_of(row), int(row[self.length])
            self.oom_at[series] = min(length, self.oom_at.get(series, length))

    def skip_reason(self, key_row):
        """Why a cell is not run (None: run it); suites may add reasons."""
        oom_at = self.oom_at.get(self.series_of(key_row))
        if oom_at is not None and key_row[self.length] > oom_at:
            return f"skipped after an OOM at {self.length}={oom_at}"
        return None

    def record(self, rows):
        for row in rows:
            row = {"run_id": self.run_id, **row}
            self.writer.append(row)
            self.remember({k: format_value(v) for k, v in row.items()})
        self.done.add(cell_key(rows[-1], self.key))

    def job(self, start, ready=None):
        """One cell as an executor job. start() -> (its key row, its task), decided when it starts (a training's
        selected rate is known only then): the key row holds the cell's key columns and any column known before
        measuring, or is a list of them for a cell of several rows known in advance (one per evaluation length),
        zipped with the measured rows, each of which then fails or is skipped on its own row; the task is
        (measure, args), measure(*args, device) -> the measured columns. ready() as executor.Job's."""
        keys = []

        def begin():
            key_row, (measure, args) = start()
            keys[:] = [key_row]
            return self.work(measure, args) if self.begin(key_row) else None

        def done(result):
            self.release()
            measured_columns, columns = self.unpack(result)
            self.finish(keys[0], measured_columns, **columns)

        return executor.Job(begin, done, ready, lambda: self.marked(keys[0]))

    def group_job(self, key_rows, task):
        """Cells measured together (bench.core.timing.measure_group interleaves their repeats) as one job:
        task(pending) -> (measure, args) for the indices of the cells still to run, measure(*args, device) -> for
        each of them its measured columns (a dict) or the exception it raised. Done cells are left out and skipped
        ones recorded, as job() does; run here, the group runs under the in-flight marker of its first cell to run (a
        process that dies in the group is recorded against that cell, and --resume runs the others again as a
        smaller group)."""
        pending = []

        def begin():
            pending[:] = [i for i, key in enumerate(key_rows) if self.begin(key)]
            return self.work(*task(pending)) if pending else None

        def done(result):
            self.release()
            results, columns = self.unpack(result)
            failed = isinstance(results, Exception)
            for i, cell_result in zip(pending, [results] * len(pending) if failed else results, strict=True):
                self.finish(key_rows[i], cell_result, **columns)

        return executor.Job(begin, done, local=lambda: self.marked(key_rows[pending[0]]))

    def run(self, key_row, measure, *args):
        """Measure one cell here (job()'s key row, measure and args) unless it is done or skipped."""
        executor.run_here(self.job(lambda: (key_row, (measure, args))))

    def run_group(self, key_rows, measure, *args):
        """Measure a group here (group_job()'s): measure(pending, *args, device)."""
        executor.run_here(self.group_job(key_rows, lambda pending: (measure, (pending, *args))))

    def begin(self, key_row):
        """Whether a cell is to be measured: False when it is done, or skipped (its rows then recorded)."""
        keys = key_row if isinstance(key_row, list) else [key_row]
        if cell_key(keys[0], self.key) in self.done:
            return False
        if reason := self.skip_reason(keys[0]):
            self.record([{**k, "status": "skipped", "error": reason} for k in keys])
            return False
        return True

    def work(self, measure, args):
        """What a job runs, here or on a worker: measure(*args, device) through the one task body."""
        return measured, (measure, self.device.type, *args)

    def marked(self, key_row):
        """A cell's in-flight marker while it runs here: a process that dies inside leaves it for --resume."""
        key = key_row[0] if isinstance(key_row, list) else key_row
        return in_flight(self.out_dir, {c: v for c, v in key.items() if c != self.table.per_cell}, stem=self.table.stem)

    def unpack(self, result):
        """A task's result, (measured, the worker's device column) or the exception that stood in for it, as
        finish() takes it: (measured or exception, the columns it overrides)."""
        if isinstance(result, Exception):
            return result, {}
        measured_columns, device = result
        return measured_columns, ({"device": device} if self.worker_device else {})

    def finish(self, key_row, measured, **columns):
        """Record a cell's measured columns (as a job's measure returns them) or its failure (an exception);
        `columns` override the key's (the device of the worker that ran it)."""
        keys = [{**k, **columns} for k in (key_row if isinstance(key_row, list) else [key_row])]
        also, files = {}, {}
        try:
            if isinstance(measured, Exception):
                raise measured
            if isinstance(measured, Rows):
                measured, also, files = measured.rows, measured.also, measured.files
            if isinstance(key_row, list):
                rows = [{**k, **m} for k, m in zip(keys, measured, strict=True)]
            else:
                rows = [{**keys[0], **m} for m in (measured if isinstance(measured, list) else [measured])]
        except Exception as error:  # failures are rows; the sweep goes on
            also, files, rows = {}, {}, [failure_row(k, error) for k in keys]
        for relative, data in files.items():
            path = self.out_dir / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp:
                Path(tmp).write_bytes(data)
        for name, extra in also.items():
            for row in extra:
                self.also[name].append({"run_id": self.run_id, **row})
        self.record(rows)

    def release(self):
        """Free what a cell left behind before the next one is measured."""
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def recover_in_flight(self):
        """A cell that was running when the process died is recorded as an error, not run again."""
        pending = take_in_flight(self.out_dir, stem=self.table.stem)
        if pending is not None and cell_key(pending, self.key) not in self.done:
            self.record([{**pending, "status": "error", "error": DIED_ERROR}])


def run_jobs(jobs, spec, *, desc, unit="cell"):
    """A suite's jobs, run where its spec places them (bench.core.executor), with its deadline; the Ray nodes that
    ran them go to env.json. Returns the number of jobs not started for the deadline."""
    left, infos = executor.run(jobs, spec.placement, desc=desc, unit=unit, deadline=spec.deadline)
    executor.record_nodes(spec.out_dir, infos)
    return left
