import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from bench import results as R
from bench.core import env as E
from bench.results import ResultsError, RowWriter, format_value, read_rows

REPO = Path(__file__).resolve().parent.parent
COLS = ("model", "batch", "compiled", "time_ms", "error")
SCALING = R.KEY_COLUMNS["scaling.csv"]


def test_format_value():
    assert format_value(None) == ""
    assert format_value(True) == "true"
    assert format_value(False) == "false"
    assert format_value(0) == "0"
    assert format_value(12345678901) == "12345678901"
    assert format_value(1.0) == "1"
    assert format_value(3.14159265) == "3.14159"
    assert format_value(1e-7) == "1e-07"
    assert format_value(1234567.0) == "1.23457e+06"
    assert format_value(float("nan")) == ""
    assert format_value(float("inf")) == "inf"
    assert format_value("a b,c") == "a b,c"
    assert format_value(torch.tensor(2.5)) == "2.5"
    assert format_value(torch.tensor(7)) == "7"
    assert format_value(torch.tensor(True)) == "true"
    assert format_value(Path("x/y")) == "x/y"
    with pytest.raises(TypeError):
        format_value(object())


def test_append_read_roundtrip(tmp_path):
    path = tmp_path / "t.csv"
    with RowWriter(path, COLS) as w:
        w.append({"model": "gss", "batch": 4, "compiled": True, "time_ms": 1.234567891, "error": None})
        w.append({"model": "conv, big", "compiled": False, "time_ms": float("nan"), "error": "boom\nline2"})
    assert path.read_text() == (
        'model,batch,compiled,time_ms,error\ngss,4,true,1.23457,\n"conv, big",,false,,boom line2\n'
    )
    assert read_rows(path) == [
        {"model": "gss", "batch": "4", "compiled": "true", "time_ms": "1.23457", "error": ""},
        {"model": "conv, big", "batch": "", "compiled": "false", "time_ms": "", "error": "boom line2"},
    ]
    # reopening appends below the existing rows, header not repeated
    with RowWriter(path, COLS) as w:
        w.append({"model": "m3"})
    assert [r["model"] for r in read_rows(path, columns=COLS)] == ["gss", "conv, big", "m3"]


def test_header_mismatch_raises(tmp_path):
    path = tmp_path / "t.csv"
    RowWriter(path, COLS).close()
    with pytest.raises(ValueError, match="does not match"):
        RowWriter(path, ("model", "batch"))
    with pytest.raises(ResultsError, match="t.csv"):
        read_rows(path, columns=("model",))


def test_unknown_key_raises(tmp_path):
    with RowWriter(tmp_path / "t.csv", COLS) as w, pytest.raises(ValueError, match="unknown columns \\['bogus'\\]"):
        w.append({"model": "x", "bogus": 1})
    assert read_rows(tmp_path / "t.csv") == []


def test_malformed_rows_raise(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,b\n1,2\n1,2,3\n")
    with pytest.raises(ResultsError, match=r"t\.csv: line 3 has 3 fields"):
        read_rows(path)
    with pytest.raises(ResultsError):
        RowWriter(path, ("a", "b"))
    with pytest.raises(ResultsError, match="cannot read .*missing.csv: No such file"):
        read_rows(tmp_path / "missing.csv")


def test_torn_last_line_repaired(tmp_path):
    path = tmp_path / "t.csv"
    with RowWriter(path, COLS) as w:
        w.append({"model": "a", "batch": 1})
    with open(path, "ab") as f:
        f.write(b"b,2,tr")  # a write cut short by a kill
    assert read_rows(path) == [{"model": "a", "batch": "1", "compiled": "", "time_ms": "", "error": ""}]
    with RowWriter(path, COLS) as w:
        assert path.read_text() == "model,batch,compiled,time_ms,error\na,1,,,\n"
        w.append({"model": "c", "batch": 3})
    assert path.read_text() == "model,batch,compiled,time_ms,error\na,1,,,\nc,3,,,\n"
    torn_header = tmp_path / "h.csv"
    torn_header.write_bytes(b"model,ba")
    assert read_rows(torn_header) == []
    RowWriter(torn_header, COLS).close()
    assert torn_header.read_text() == "model,batch,compiled,time_ms,error\n"


def test_sigkill_mid_append_leaves_parseable_file(tmp_path):
    path = tmp_path / "k.csv"
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(REPO)!r})
        from bench.results import RowWriter
        w = RowWriter({str(path)!r}, ("i", "payload"))
        i = 0
        while True:
            w.append({{"i": i, "payload": "x" * 5000}})
            i += 1
    """)
    proc = subprocess.Popen([sys.executable, "-c", script])
    try:  # no deadline: the writer appends until it is killed, however slowly a loaded machine runs it
        while proc.poll() is None and not (path.exists() and path.read_bytes().count(b"\n") > 21):
            time.sleep(0.01)  # until the header and more than 20 rows
        assert proc.poll() is None, f"the writer exited early with code {proc.returncode}"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    rows = read_rows(path)
    assert len(rows) > 20
    assert [int(r["i"]) for r in rows] == list(range(len(rows)))
    assert all(r["payload"] == "x" * 5000 for r in rows)
    RowWriter(path, ("i", "payload")).close()  # repairs if needed
    assert path.read_bytes().endswith(b"\n")
    assert len(read_rows(path)) == len(rows)


def test_in_flight_roundtrip(tmp_path):
    key = {"model": "gss", "batch": 2, "compiled": False, "dim": None}
    assert R.pending_in_flight(tmp_path, stem="scaling") is None
    R.mark_in_flight(tmp_path, key, stem="scaling")
    assert (tmp_path / "scaling.inflight.json").exists()
    assert R.pending_in_flight(tmp_path, stem="perplexity") is None
    assert R.pending_in_flight(tmp_path, stem="scaling") == key
    R.clear_in_flight(tmp_path, stem="scaling")
    assert R.pending_in_flight(tmp_path, stem="scaling") is None
    R.clear_in_flight(tmp_path, stem="scaling")  # idempotent
    assert [p.name for p in tmp_path.iterdir()] == []


def test_a_row_read_back_and_a_fresh_row_have_the_same_cell_key(tmp_path):
    path = tmp_path / "t.csv"
    fresh = {"model": "gss", "batch": 8, "compiled": True, "time_ms": 2.0}
    with RowWriter(path, COLS) as w:
        w.append(fresh)
    [back] = read_rows(path)
    keys = ["model", "batch", "compiled", "time_ms", "error"]
    assert R.cell_key(back, keys) == R.cell_key(fresh, keys) == ("gss", "8", "true", "2", "")


def _scaling_row(model, batch, **extra):
    row = dict.fromkeys(SCALING, "")
    row.update(model=model, mode="fwd", dtype="float32", device="cpu", batch=batch, seq_len=128, compiled=False)
    row.update(extra)
    return row


def _shard(dir_, rows, *, env=None):
    dir_.mkdir(parents=True)
    with RowWriter(dir_ / "scaling.csv", SCALING + ("time_ms",)) as w:
        for row in rows:
            w.append(row)
    if env is not None:
        (dir_ / "env.json").write_text(json.dumps(env))
    return dir_


def test_merge_union(tmp_path):
    a = _shard(tmp_path / "a", [_scaling_row("gss", 1, time_ms=1.5)], env={"torch": "x"})
    b = _shard(tmp_path / "b", [_scaling_row("gss", 2, time_ms=2.5), _scaling_row("conv", 1)], env={"torch": "y"})
    out = tmp_path / "out"
    written = R.merge_runs(out, [a, b])
    assert sorted(p.name for p in written) == ["env.json", "scaling.csv"]
    rows = read_rows(out / "scaling.csv", columns=SCALING + ("time_ms",))
    got = [(r["model"], r["batch"], r["time_ms"]) for r in rows]
    assert got == [("gss", "1", "1.5"), ("gss", "2", "2.5"), ("conv", "1", "")]
    assert json.loads((out / "env.json").read_text()) == {"torch": "x", "merged_from": [str(a), str(b)]}


def test_merge_duplicate_refuses_and_writes_nothing(tmp_path):
    a = _shard(tmp_path / "a", [_scaling_row("gss", 1)])
    b = _shard(tmp_path / "b", [_scaling_row("gss", 1, time_ms=3.0)])
    out = tmp_path / "out"
    with pytest.raises(ResultsError, match=r"duplicate cell \(model=gss, mode=fwd.*batch=1"):
        R.merge_runs(out, [a, b])
    assert not out.exists()


def test_merge_header_mismatch_and_unknown_csv(tmp_path):
    a = _shard(tmp_path / "a", [_scaling_row("gss", 1)])
    b = tmp_path / "b"
    b.mkdir()
    (b / "scaling.csv").write_text("model,batch\ngss,2\n")
    with pytest.raises(ResultsError, match="header differs"):
        R.merge_runs(tmp_path / "out", [a, b])
    assert not (tmp_path / "out").exists()
    (b / "scaling.csv").unlink()
    (b / "other.csv").write_text("x\n1\n")
    with pytest.raises(ResultsError, match="no key columns known for \\[.other.csv.\\]"):
        R.merge_runs(tmp_path / "out", [a, b])
    assert not (tmp_path / "out").exists()
    (b / "other.csv").unlink()
    R.merge_runs(tmp_path / "out", [a, b])
    with pytest.raises(ResultsError, match="already contains"):  # never clobber an earlier merge
        R.merge_runs(tmp_path / "out", [a, b])


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "bench.results", *map(str, args)], cwd=REPO, capture_output=True, text=True
    )  # no timeout: a loaded machine may take longer


def test_cli_merge_ok_and_bad_input(tmp_path):
    a = _shard(tmp_path / "a", [_scaling_row("gss", 1)])
    b = _shard(tmp_path / "b", [_scaling_row("gss", 2)])
    dup = _shard(tmp_path / "dup", [_scaling_row("gss", 1)])
    blocker = tmp_path / "file"
    blocker.write_text("")
    bad = [
        (tmp_path / "o1", a, tmp_path / "missing"),  # missing shard dir
        (tmp_path / "o2", a, dup),  # duplicate cell
        (blocker / "sub", a, b),  # unwritable OUT
        ("--keys", "model", tmp_path / "o3", a),  # no such flag
    ]
    for args in bad:
        r = _cli("merge", *args)
        assert r.returncode == 2, r
        assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1, r.stderr
        assert "Traceback" not in r.stderr
    r = _cli("merge")
    assert r.returncode == 2 and r.stderr.startswith("error: ") and r.stderr.count("\n") == 1
    assert not any((tmp_path / n).exists() for n in ("o1", "o2", "o3"))
    r = _cli("merge", tmp_path / "ok", a, b)
    assert r.returncode == 0, r.stderr
    assert len(read_rows(tmp_path / "ok" / "scaling.csv")) == 2


def test_environment_and_write_env(tmp_path):
    env = E.environment()
    for k in (
        "python",
        "platform",
        "torch",
        "torch_cuda",
        "cudnn",
        "cuda_available",
        "cuda_device_count",
        "cuda_devices",
        "cpu_model",
        "cpu_count",
        "torch_num_threads",
        "hostname",
        "git_commit",
        "git_dirty",
        "timestamp_utc",
    ):
        assert k in env
    assert env["torch"] == torch.__version__ and env["cpu_count"] == os.cpu_count()
    path = E.write_env(tmp_path, config={"batch": [1, 2], "out": Path("x")}, argv=["bench.py", "--name", "a b"])
    saved = json.loads(path.read_text())
    assert saved["config"] == {"batch": [1, 2], "out": "x"}
    assert saved["command"] == "bench.py --name 'a b'"


def test_git_dirty_counts_code_changes_not_run_outputs(tmp_path, monkeypatch):
    def git(*args):
        subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True, capture_output=True
        )

    git("init", "-q")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("add", "code.py")
    git("commit", "-qm", "code")
    monkeypatch.setattr(E, "REPO_ROOT", tmp_path)
    assert E.environment()["git_dirty"] is False
    for d in ("results/baselines/cpu", "plots/baselines/cpu"):  # a run writing its own baseline stays clean
        (tmp_path / d).mkdir(parents=True)
        (tmp_path / d / "scaling.csv").write_text("model\n")
    env = E.environment()
    assert env["git_dirty"] is False and len(env["git_commit"].strip()) == 40
    (tmp_path / "code.py").write_text("x = 2\n")
    assert E.environment()["git_dirty"] is True
    git("checkout", "-q", "code.py")
    (tmp_path / "new.py").write_text("")  # an untracked source file changes what runs
    assert E.environment()["git_dirty"] is True


def test_run_id_paths_and_writable_dir(tmp_path):
    rid = R.new_run_id()
    assert len(rid) == 20 and rid[8] == "-" and rid[15] == "-"
    assert R.RESULTS_DIR == R.REPO_ROOT / "results" and (R.REPO_ROOT / "bench" / "results.py").exists()
    assert R.ensure_writable_dir(tmp_path / "x" / "y") == tmp_path / "x" / "y"
    assert list((tmp_path / "x" / "y").iterdir()) == []
    (tmp_path / "f").write_text("")
    with pytest.raises(ResultsError, match="cannot write to"):
        R.ensure_writable_dir(tmp_path / "f" / "sub")
