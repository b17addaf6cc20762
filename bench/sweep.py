"""The one sweep runner every measuring suite uses: cells in order, rows appended as they are measured,
failures as rows, OOM-aware skipping, and a resume that neither repeats nor loses a cell.

A cell is a dict of its key columns. `run(key_row, measure)` calls measure() -> the measured columns (or
a list of row dicts, for suites that write several rows per cell); an exception becomes an `oom` or
`error` row and the sweep goes on. After an OOM, the longer cells of the same series (the key without
its length column) are `skipped`. The cell in flight is marked on disk, so a resumed run records a cell
that killed the process as `error` ("process died in this cell") instead of running it again forever.
"""

import contextlib
import gc
import sys

import torch
from tqdm import tqdm

from bench import cli
from bench.results import DIED_ERROR, RowWriter, cell_key, format_value, read_rows


def is_oom(error):
    """CUDA raises OutOfMemoryError; the CPU allocator raises a RuntimeError that says so."""
    return isinstance(error, torch.OutOfMemoryError) or "can't allocate memory" in str(error)


def device_name(device):
    """The `device` column: cpu, or cuda:<device name> (CPU model and threads go to env.json)."""
    return "cpu" if device.type == "cpu" else f"cuda:{torch.cuda.get_device_name(device)}"


@contextlib.contextmanager
def frozen_gc():
    """While sweeping, leave the objects alive before it (torch, the modules) out of garbage collection:
    the collections around each cell then take microseconds, not ~0.1 s."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def progress(cells, desc):
    """A progress bar on stderr: cells done of total, with an ETA."""
    return tqdm(cells, desc=desc, unit="cell", file=sys.stderr, dynamic_ncols=True, mininterval=1.0)


class Sweep:
    def __init__(self, *, out_dir, run_id, csv, columns, key, length, stem, device, resume, done=None):
        """done(row) -> whether a recorded row completes its cell (default: every row does)."""
        self.out_dir, self.run_id, self.key, self.length, self.stem = out_dir, run_id, key, length, stem
        self.device = device
        self.series = tuple(c for c in key if c != length)
        self.writer = RowWriter(out_dir / csv, columns)
        self.completes = done or (lambda row: True)
        self.oom_at = {}  # series -> shortest length that ran out of memory
        rows = read_rows(out_dir / csv) if resume else []
        for row in rows:
            self.remember(row)
        self.done = {cell_key(row, key) for row in rows if self.completes(row)}
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
        if cell_key(key_row, self.key) in self.done:
            return
        reason = self.skip_reason(key_row)
        if reason:
            self.record([{**key_row, "status": "skipped", "error": reason}])
            return
        with cli.in_flight(self.out_dir, key_row, stem=self.stem):
            try:
                measured = measure()
                rows = [{**key_row, **r} for r in measured] if isinstance(measured, list) else [{**key_row, **measured}]
            except Exception as error:  # failures are rows; the sweep goes on
                rows = [{**key_row, "status": "oom" if is_oom(error) else "error",
                         "error": f"{type(error).__name__}: {error}"}]
            finally:
                gc.collect()
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
            self.record(rows)

    def recover_in_flight(self):
        """A cell that was running when the process died is recorded as an error, not run again."""
        pending = cli.take_in_flight(self.out_dir, stem=self.stem)
        if pending is not None and cell_key(pending, self.key) not in self.done:
            self.record([{**pending, "status": "error", "error": DIED_ERROR}])
