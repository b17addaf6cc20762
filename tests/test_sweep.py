"""The one sweep runner, tested once with fake cells and fake measurements (no model, no timing): failure rows,
skip after an OOM, resume, a cell that killed the process, several rows and CSVs per cell, and shards."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from bench import scaling
from bench.core.cli import shard
from bench.core.sweep import Rows, Sweep
from bench.results import DIED_ERROR, mark_in_flight, read_rows
from bench.schema import TABLES

CPU = torch.device("cpu")
ROOT = Path(__file__).resolve().parent.parent
TINY = ["--preset", "smoke", "--device", "cpu", "--dim", "16", "--kernel-n", "4", "--kernel-h", "8"]


def numerics_key(model="gss", seq_len=16, dtype="float32"):
    return dict(model=model, dtype=dtype, device="cpu", seq_len=seq_len, dim=8, batch=1)


def sweep(tmp_path, csv="numerics.csv", resume=False, **kwargs):
    return Sweep(csv, out_dir=tmp_path, run_id="r", device=CPU, resume=resume, **kwargs)


def statuses(path):
    return [(r["model"], r["seq_len"], r["status"]) for r in read_rows(path)]


def test_rows_are_written_with_the_table_columns_and_run_id(tmp_path):
    sweep(tmp_path).run(numerics_key(), lambda device: dict(out_rel_err=0.5, grad_rel_err=0.25, status="ok"))
    (row,) = read_rows(tmp_path / "numerics.csv")
    assert tuple(row) == TABLES["numerics.csv"].columns
    assert (row["run_id"], row["out_rel_err"], row["grad_rel_err"], row["status"]) == ("r", "0.5", "0.25", "ok")


def test_a_failure_is_a_row_and_the_sweep_goes_on(tmp_path):
    s = sweep(tmp_path)

    def broken(device):
        raise ValueError("bad shape")

    s.run(numerics_key(seq_len=16), broken)
    s.run(numerics_key(seq_len=32), lambda device: dict(status="ok"))
    rows = read_rows(tmp_path / "numerics.csv")
    assert [(r["seq_len"], r["status"], r["error"]) for r in rows] == [
        ("16", "error", "ValueError: bad shape"),
        ("32", "ok", ""),
    ]
    assert not (tmp_path / "numerics.inflight.json").exists()


def test_an_oom_skips_the_longer_cells_of_its_series_only(tmp_path):
    s = sweep(tmp_path)

    def oom(device):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 bytes")

    s.run(numerics_key(seq_len=32), oom)
    ran = []
    for model, length in [("gss", 16), ("gss", 64), ("attention", 64)]:
        s.run(numerics_key(model, length), lambda device, m=model, n=length: ran.append((m, n)) or dict(status="ok"))
    assert ran == [("gss", 16), ("attention", 64)]
    assert statuses(tmp_path / "numerics.csv") == [
        ("gss", "32", "oom"),
        ("gss", "16", "ok"),
        ("gss", "64", "skipped"),
        ("attention", "64", "ok"),
    ]
    assert read_rows(tmp_path / "numerics.csv")[2]["error"] == "skipped after an OOM at seq_len=32"


def test_another_dtype_is_another_series(tmp_path):
    s = sweep(tmp_path)
    s.run(numerics_key(seq_len=16), lambda device: (_ for _ in ()).throw(torch.OutOfMemoryError("CUDA out of memory")))
    s.run(numerics_key(seq_len=32, dtype="bfloat16"), lambda device: dict(status="ok"))
    assert [r["status"] for r in read_rows(tmp_path / "numerics.csv")] == ["oom", "ok"]


def test_resume_runs_only_the_cells_not_recorded_and_remembers_ooms(tmp_path):
    first = sweep(tmp_path)
    first.run(numerics_key(seq_len=16), lambda device: dict(status="ok"))
    first.run(
        numerics_key(model="conv", seq_len=16), lambda device: (_ for _ in ()).throw(torch.OutOfMemoryError("oom"))
    )
    first.writer.close()
    again, ran = sweep(tmp_path, resume=True), []
    for model, length in [("gss", 16), ("gss", 32), ("conv", 32)]:
        again.run(
            numerics_key(model, length), lambda device, m=model, n=length: ran.append((m, n)) or dict(status="ok")
        )
    assert ran == [("gss", 32)]
    assert statuses(tmp_path / "numerics.csv")[2:] == [("gss", "32", "ok"), ("conv", "32", "skipped")]


def test_without_resume_recorded_rows_are_not_read(tmp_path):
    sweep(tmp_path).run(numerics_key(), lambda device: dict(status="ok"))
    ran = []
    sweep(tmp_path).run(numerics_key(), lambda device: ran.append(1) or dict(status="ok"))
    assert ran == [1]


def test_a_cell_that_killed_the_process_is_an_error_row_not_a_rerun(tmp_path):
    mark_in_flight(tmp_path, numerics_key(seq_len=32), stem="numerics")
    s, ran = sweep(tmp_path, resume=True), []
    for length in (16, 32):
        s.run(numerics_key(seq_len=length), lambda device, length=length: ran.append(length) or dict(status="ok"))
    assert ran == [16]
    rows = read_rows(tmp_path / "numerics.csv")
    assert [(r["seq_len"], r["status"], r["error"]) for r in rows] == [("32", "error", DIED_ERROR), ("16", "ok", "")]
    assert not (tmp_path / "numerics.inflight.json").exists()


def test_a_keyboard_interrupt_leaves_no_marker_so_resume_runs_the_cell_again(tmp_path):
    s = sweep(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        s.run(numerics_key(), lambda device: (_ for _ in ()).throw(KeyboardInterrupt()))
    assert not (tmp_path / "numerics.inflight.json").exists()
    assert read_rows(tmp_path / "numerics.csv") == []


def test_the_marker_names_the_cell_while_it_runs(tmp_path):
    s, seen = sweep(tmp_path), []

    def measure(device):
        seen.append((tmp_path / "numerics.inflight.json").read_text())
        return dict(status="ok")

    s.run(numerics_key(seq_len=48), measure)
    assert '"seq_len": 48' in seen[0] and '"model": "gss"' in seen[0]


def op_key(seq_len=16):
    return dict(
        model="gss",
        mode="fwd",
        seq_len=seq_len,
        dtype="float32",
        device="cpu",
        batch=1,
        dim=8,
        kernel_N=4,
        kernel_H=8,
        lambda_imag_exp=True,
        conv_kernel=None,
        compiled=False,
    )


def test_a_cell_of_several_rows_is_done_only_when_its_last_row_is_in(tmp_path):
    completes = lambda r: r["category"] == "other" or r["status"] != "ok"  # noqa: E731
    s = sweep(tmp_path, csv="op_breakdown.csv", completes=completes)
    s.run(op_key(), lambda device: [dict(category="norm", status="ok"), dict(category="other", status="ok")])
    assert [r["category"] for r in read_rows(tmp_path / "op_breakdown.csv")] == ["norm", "other"]
    with open(tmp_path / "op_breakdown.csv", "a") as f:  # a run killed between the rows of the next cell
        f.write(",".join(["gss", "fwd", "32", "norm"] + [""] * 16 + ["ok", ""] + [""] * 5) + "\n")
    s.writer.close()
    again, ran = sweep(tmp_path, csv="op_breakdown.csv", resume=True, completes=completes), []
    for length in (16, 32):
        again.run(
            op_key(length), lambda device, length=length: ran.append(length) or [dict(category="other", status="ok")]
        )
    assert ran == [32]


def lm_keys(seq_len=32):
    base = dict(
        model="gss",
        corpus="synthetic",
        corpus_sha256="abc",
        seed=0,
        kernel_N=8,
        lambda_imag_exp=True,
        conv_kernel=None,
        train_seq_len=seq_len,
        steps=3,
        kernel_H=16,
        dim=16,
        depth=1,
        batch=2,
        lr=0.002,
        dtype="float32",
        device="cpu",
    )
    return [{**base, "eval_seq_len": m * seq_len} for m in (1, 2)]


def test_rows_known_in_advance_are_zipped_and_other_csvs_written_beside(tmp_path):
    s = sweep(tmp_path, csv="perplexity.csv", also=("train_curve.csv",))
    curve = [dict(model="gss", seed=0, step=3, loss=1.5)]
    s.run(
        lm_keys(),
        lambda device: Rows(
            [dict(bits_per_byte=2.0, status="ok"), dict(bits_per_byte=2.5, status="ok")],
            also={"train_curve.csv": curve},
        ),
    )
    rows = read_rows(tmp_path / "perplexity.csv")
    assert [(r["eval_seq_len"], r["bits_per_byte"]) for r in rows] == [("32", "2"), ("64", "2.5")]
    (point,) = read_rows(tmp_path / "train_curve.csv")
    assert (point["run_id"], point["step"], point["loss"]) == ("r", "3", "1.5")


def test_a_failed_cell_of_rows_known_in_advance_fails_every_row_and_writes_no_other_csv(tmp_path):
    s = sweep(tmp_path, csv="perplexity.csv", also=("train_curve.csv",))
    s.run(lm_keys(32), lambda device: (_ for _ in ()).throw(torch.OutOfMemoryError("out of memory")))
    s.run(lm_keys(64), lambda device: Rows([dict(status="ok")] * 2))
    rows = read_rows(tmp_path / "perplexity.csv")
    assert [(r["train_seq_len"], r["eval_seq_len"], r["status"]) for r in rows] == [
        ("32", "32", "oom"),
        ("32", "64", "oom"),
        ("64", "64", "skipped"),
        ("64", "128", "skipped"),
    ]
    assert read_rows(tmp_path / "train_curve.csv") == []


@pytest.mark.parametrize("count", [1, 2, 3, 7])
def test_shards_are_disjoint_cover_every_cell_and_are_balanced(count):
    cells = list(range(20))
    parts = [shard(cells, (i, count)) for i in range(count)]
    assert sorted(c for p in parts for c in p) == cells
    assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert parts[0] == cells[::count]
    assert shard(cells, None) == cells


HANGING_RUN = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {root!r})
    from bench import scaling
    real = scaling.measure_cells
    def hang(cells, timing, limits, device):
        if any(cell.model == "gss" and cell.seq_len == 16 and cell.mode == "fwd" for cell in cells):
            time.sleep(600)
        return real(cells, timing, limits, device)
    scaling.measure_cells = hang
    sys.exit(scaling.main({argv!r}))
""")


@pytest.mark.slow
def test_a_sweep_killed_by_sigkill_mid_cell_resumes_without_duplicate_or_missing_cells(tmp_path):
    """End to end, through a real suite: the process is SIGKILLed while a cell runs."""
    argv = [*TINY, "--models", "gss,conv", "--seq-lens", "8,16,32", "--out", str(tmp_path)]
    child = subprocess.Popen(
        [sys.executable, "-c", HANGING_RUN.format(root=str(ROOT), argv=argv)],
        stderr=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
    )
    marker = tmp_path / "scaling.inflight.json"
    while not (marker.exists() and '"seq_len": 16' in marker.read_text()) and child.poll() is None:
        time.sleep(0.05)  # no deadline: the child hangs in that cell, however slow the machine is
    assert child.poll() is None, "the child exited before reaching the hanging cell"
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    before = read_rows(tmp_path / "scaling.csv")
    assert [(r["model"], r["mode"], r["seq_len"]) for r in before] == [("gss", "fwd", "8"), ("conv", "fwd", "8")]
    assert scaling.main(argv) == 2  # the directory holds a run: refuse rather than overwrite it
    assert scaling.main([*argv, "--resume"]) == 0
    rows = read_rows(tmp_path / "scaling.csv")
    keys = [tuple(r[c] for c in TABLES["scaling.csv"].key) for r in rows]
    assert len(keys) == len(set(keys)) == 2 * 2 * 3  # 2 models x 2 modes x 3 lengths, each once
    died = [r for r in rows if r["status"] == "error"]  # the group's marker names its first cell
    assert [(r["model"], r["mode"], r["seq_len"], r["error"]) for r in died] == [("gss", "fwd", "16", DIED_ERROR)]
    assert rows[:2] == before  # what was written before the kill is kept as it was
    assert scaling.main([*argv, "--resume"]) == 0 and read_rows(tmp_path / "scaling.csv") == rows


def test_a_group_records_each_cell_its_own_way_and_leaves_out_done_ones(tmp_path):
    s = sweep(tmp_path)
    s.run(numerics_key(model="conv"), lambda device: dict(status="ok"))  # already measured
    s.oom_at[s.series_of(numerics_key(model="attention", seq_len=8))] = 8  # attention ran out of memory at 8
    keys = [numerics_key(model=m) for m in ("gss", "conv", "attention", "gss-direct")]
    asked = []

    def measure(pending, device):
        asked.append(pending)
        return [dict(out_rel_err=0.5, status="ok"), ValueError("bad shape")]

    s.run_group(keys, measure)
    assert asked == [[0, 3]]  # conv is done, attention skipped: the group times gss and gss-direct
    rows = read_rows(tmp_path / "numerics.csv")
    assert [(r["model"], r["status"], r["error"]) for r in rows] == [
        ("conv", "ok", ""),
        ("attention", "skipped", "skipped after an OOM at seq_len=8"),
        ("gss", "ok", ""),
        ("gss-direct", "error", "ValueError: bad shape"),
    ]
    assert not (tmp_path / "numerics.inflight.json").exists()


def test_a_group_whose_measuring_breaks_records_every_cell_and_a_done_group_measures_nothing(tmp_path):
    s = sweep(tmp_path)
    keys = [numerics_key(model=m) for m in ("gss", "conv")]

    def broken(pending, device):
        raise RuntimeError("allocator")

    s.run_group(keys, broken)
    assert statuses(tmp_path / "numerics.csv") == [("gss", "16", "error"), ("conv", "16", "error")]
    s.run_group(keys, lambda pending, device: pytest.fail("a done group is not measured again"))
