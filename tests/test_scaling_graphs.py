"""The scaling suite's CUDA rows: every ok cell's step replayed from a CUDA graph after the group's eager timing
(bench.core.graphs, faked here), its gpu columns, and roofline_frac against gpu_ms where it has one."""

import torch

from bench import scaling
from bench.core.config import Cell
from bench.core.graphs import GraphTiming
from bench.core.prepare import Prepared
from bench.core.timing import Timing
from bench.results import format_value

LIMITS = dict(matmul_flops_per_s={"bfloat16": 1e12}, bandwidth_bytes_per_s=1e12)
CELL = Cell("gss", "fwd", "bfloat16", batch=1, seq_len=1024, dim=64)
PREPARED = Prepared(CELL, step=None, params=10, flops=1e9, peak_mem_mb=1.0, min_bytes=1e6)  # a 1 ms floor
EAGER = Timing.of([4.0] * 10)


def test_a_cuda_row_carries_its_graph_replayed_time_and_its_roofline_is_taken_against_it():
    row = scaling.row_of(PREPARED, EAGER, LIMITS, GraphTiming(2.0, (2.0, 2.5, 1.5), 40))
    assert (row["gpu_ms"], row["gpu_times_ms"], row["gpu_note"]) == (2.0, "2 2.5 1.5", "")
    assert row["roofline_frac"] == 0.5 and row["time_ms"] == 4.0  # floor 1 ms over gpu_ms; the eager time stands
    failed = scaling.row_of(PREPARED, EAGER, LIMITS, "capture: RuntimeError: not permitted")
    assert (failed["gpu_ms"], failed["gpu_times_ms"], failed["gpu_note"]) == (
        "",
        "",
        "capture: RuntimeError: not permitted",
    )
    assert failed["roofline_frac"] == 0.25  # against the eager time
    cpu = scaling.row_of(PREPARED, EAGER, LIMITS)
    assert not {"gpu_ms", "gpu_times_ms", "gpu_note"} & set(cpu) and cpu["roofline_frac"] == 0.25
    # a re-summary of a row's eager rounds (the crossover refinement's cut) keeps a gpu row's roofline_frac
    written = {k: format_value(v) for k, v in {**CELL.key_row("cuda:X"), **row}.items()}
    cut = scaling.cut_row(written, [8.0] * 10, None)
    assert cut["time_ms"] == 8.0 and cut["roofline_frac"] == written["roofline_frac"] == "0.5"
    written_cpu = {k: format_value(v) for k, v in {**CELL.key_row("cpu"), **cpu}.items()}
    assert scaling.cut_row(written_cpu, [8.0] * 10, None)["roofline_frac"] == 0.125


def test_every_ok_cuda_cell_is_replayed_after_the_groups_eager_timing_and_no_cpu_cell_is(monkeypatch):
    log = []

    def prepare(cell, device):
        if cell.model == "conv":
            raise RuntimeError("planted")
        return Prepared(cell, step=cell.model, params=10, flops=1e9, peak_mem_mb=1.0, min_bytes=1e6)

    def group(steps, *, device, gauge, **timing):
        log.append(("eager", tuple(steps)))
        return [EAGER for _ in steps]

    def replayed(step, *, device):
        log.append(("graph", step))
        return GraphTiming(1.0, (1.0,) * 10, 20) if step == "gss" else "capture: RuntimeError: planted"

    monkeypatch.setattr(scaling, "prepare_cell", prepare)
    monkeypatch.setattr(scaling, "measure_group", group)
    monkeypatch.setattr(scaling, "gauge_step", lambda device: None)
    monkeypatch.setattr(scaling, "graph_time", replayed)
    cells = [Cell(m, "fwd", "bfloat16", batch=1, seq_len=1024, dim=64) for m in ("gss", "conv", "attention")]
    gss, conv, attention = scaling.measure_cells(cells, {}, LIMITS, torch.device("cuda"))
    assert log == [("eager", ("gss", "attention")), ("graph", "gss"), ("graph", "attention")]
    assert gss["gpu_ms"] == 1.0 and gss["roofline_frac"] == 1.0 and isinstance(conv, RuntimeError)
    assert attention["gpu_ms"] == "" and attention["gpu_note"] == "capture: RuntimeError: planted"
    log.clear()
    rows = scaling.measure_cells(cells, {}, LIMITS, torch.device("cpu"))
    assert log == [("eager", ("gss", "attention"))] and "gpu_ms" not in rows[0]
