"""The one sweep runner every suite uses: cells in order, rows appended as they are measured, failures as
rows, OOM-aware skipping, and a resume that neither repeats nor loses a cell.

A Sweep writes one CSV of bench.schema (and, where a cell writes more, the rows of others beside it, such as
a training's loss curve). `run(key_row, measure)` calls measure() -> the measured columns: a dict (one
row), a list of row dicts (a cell of several rows, e.g. one per op category), or `Rows` (rows of this CSV
plus rows of the others). An exception becomes an `oom` or `error` row and the sweep goes on. After an OOM,
the longer cells of the same series (the cell's key without its length column) are `skipped`. The cell in
flight is marked on disk, so a resumed run records a cell that killed the process as `error` ("process died
in this cell") instead of running it again forever. `drive` (bench.core.executor's local driver) feeds a suite's
cells to its sweeps.
"""

import gc
from dataclasses import dataclass, field
from pathlib import Path

import torch

from bench.core import executor
from bench.core.executor import drive  # the local driver, where the suites have always imported it from
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


@dataclass
class Rows:
    """A measured cell that writes to more than its sweep's CSV: `rows` of it, `also` {csv name: rows}."""

    rows: list
    also: dict = field(default_factory=dict)


class Sweep:
    def __init__(self, csv, *, out_dir, run_id, device, resume, also=(), done=None):
        """csv: the bench.schema table written; also: the names of other tables a cell writes rows to;
        done(row) -> whether a recorded row completes its cell (default: every row does)."""
        self.table, self.out_dir, self.run_id, self.device = table(csv), out_dir, run_id, device
        self.key, self.length, self.series = self.table.cell, self.table.length, self.table.series
        self.writer = RowWriter(out_dir / csv, self.table.columns)
        self.also = {name: RowWriter(out_dir / name, table(name).columns) for name in also}
        self.completes = done or (lambda row: True)
        self.oom_at = {}  # series -> shortest length that ran out of memory
        rows = read_rows(out_dir / csv) if resume else []
        for row in rows:
            self.remember(row)
        self.done = {cell_key(row, self.key) for row in rows if self.completes(row)}
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

    def run(self, key_row, measure):
        """Measure one cell unless it is done or skipped. key_row: the cell's key columns (and any column known
        before measuring); a list of them for a cell of several rows known in advance (one per evaluation
        length), zipped with the measured rows, each of which then fails or is skipped on its own row."""
        if not self.begin(key_row):
            return
        keys = key_row if isinstance(key_row, list) else [key_row]
        marker = {c: v for c, v in keys[0].items() if c != self.table.per_cell}
        with in_flight(self.out_dir, marker, stem=self.table.stem):
            try:
                measured = measure()
            except Exception as error:  # failures are rows; the sweep goes on
                measured = error
            finally:
                self.release()
            self.finish(key_row, measured)

    def begin(self, key_row):
        """Whether a cell is to be measured: False when it is done, or skipped (its rows then recorded)."""
        keys = key_row if isinstance(key_row, list) else [key_row]
        if cell_key(keys[0], self.key) in self.done:
            return False
        if reason := self.skip_reason(keys[0]):
            self.record([{**k, "status": "skipped", "error": reason} for k in keys])
            return False
        return True

    def finish(self, key_row, measured, **columns):
        """Record a cell's measured columns (as run() takes them from measure()) or its failure (an exception);
        `columns` override the key's (the device of the worker that ran it)."""
        keys = [{**k, **columns} for k in (key_row if isinstance(key_row, list) else [key_row])]
        also = {}
        try:
            if isinstance(measured, Exception):
                raise measured
            if isinstance(measured, Rows):
                measured, also = measured.rows, measured.also
            if isinstance(key_row, list):
                rows = [{**k, **m} for k, m in zip(keys, measured, strict=True)]
            else:
                rows = [{**keys[0], **m} for m in (measured if isinstance(measured, list) else [measured])]
        except Exception as error:  # failures are rows; the sweep goes on
            also, rows = {}, [failure_row(k, error) for k in keys]
        for name, extra in also.items():
            for row in extra:
                self.also[name].append({"run_id": self.run_id, **row})
        self.record(rows)

    def run_group(self, key_rows, measure):
        """Cells measured together (bench.core.timing.measure_group interleaves their repeats): measure(indices) -> for
        each index of a cell still to run, its measured columns (a dict) or the exception it raised. Done cells are
        left out and skipped ones recorded, as run() does; the group runs under the in-flight marker of its first
        cell to run (a process that dies in the group is recorded against that cell, and --resume runs the others
        again as a smaller group)."""
        if not (pending := self.begin_group(key_rows)):
            return
        marker = {c: v for c, v in key_rows[pending[0]].items() if c != self.table.per_cell}
        with in_flight(self.out_dir, marker, stem=self.table.stem):
            try:
                results = measure(pending)
            except Exception as error:  # the group's own machinery failed: every cell says so
                results = [error] * len(pending)
            finally:
                self.release()
            self.finish_group(key_rows, pending, results)

    def begin_group(self, key_rows):
        """The indices of a group's cells still to run (begin, cell by cell)."""
        return [i for i, key in enumerate(key_rows) if self.begin(key)]

    def finish_group(self, key_rows, pending, results, **columns):
        """Record each pending cell's measured columns or its failure (finish, cell by cell)."""
        for i, result in zip(pending, results, strict=True):
            self.finish(key_rows[i], result, **columns)

    def release(self):
        """Free what a cell left behind before the next one is measured."""
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def run_cells(self, cells, *, key_row, measure, desc, deadline=None, remote=None, how=None, ready=None):
        """Every cell through run(), driven by drive(): key_row(cell) and measure(cell) as run() takes them. With
        `how` (bench.core.executor.options) naming the ray executor, each cell is instead a task of remote(cell) ->
        (target, args), whose result is (measured, the worker's device column), recorded here as it returns;
        ready(cell), when given, holds a cell back while it is False (bench.core.executor.Job.ready)."""
        if how is None or how["executor"] == "local":
            return drive(
                cells, lambda cell: self.run(key_row(cell), lambda: measure(cell)), desc=desc, deadline=deadline
            )
        jobs = []
        for cell in cells:  # key_row and remote at the cell's start: a selected rate is known only then
            keys = []

            def begin(cell=cell, keys=keys):
                keys[:] = [key_row(cell)]
                return remote(cell) if self.begin(keys[0]) else None

            jobs.append(
                executor.Job(
                    begin,
                    lambda result, info, keys=keys: self.finish_remote(keys[0], result),
                    None if ready is None else (lambda cell=cell: ready(cell)),
                )
            )
        left, infos = executor.run(jobs, desc=desc, deadline=deadline, **how)
        executor.record_nodes(self.out_dir, infos)
        return left

    def finish_remote(self, key_row, result):
        """A task's result: an exception, or (measured, the worker's device column[, {path under the run
        directory: bytes}]); the files (a profiler trace) are written here, before the rows that name them."""
        if isinstance(result, Exception):
            return self.finish(key_row, result)
        measured, device, *files = result
        for relative, data in (files[0] if files else {}).items():
            path = self.out_dir / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp:
                Path(tmp).write_bytes(data)
        self.finish(key_row, measured, **({"device": device} if "device" in self.table.columns else {}))

    def recover_in_flight(self):
        """A cell that was running when the process died is recorded as an error, not run again."""
        pending = take_in_flight(self.out_dir, stem=self.table.stem)
        if pending is not None and cell_key(pending, self.key) not in self.done:
            self.record([{**pending, "status": "error", "error": DIED_ERROR}])
