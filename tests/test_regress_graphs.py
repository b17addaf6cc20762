"""bench.regress on CUDA runs with graph-replayed times (gpu_ms, gpu_times_ms): a cell is gated on them where both
runs (and, with --relative, both references) have them, whatever its length; elsewhere on its eager time, from
MIN_TIMED_MS up, as before; the spread reports them; malformed ones exit 2. Planted rows, no clock."""

import math
import statistics

import pytest

from bench import regress
from bench.stats import NOISE_SIGMAS, median_standard_error
from tests.test_regress import COLUMNS, scaling_rows, write

GPU_COLUMNS = ("gpu_ms", "gpu_times_ms", "gpu_note")
WITH_GPU = (*COLUMNS, *(c for c in GPU_COLUMNS if c not in COLUMNS))
OLDER = tuple(c for c in COLUMNS if c not in GPU_COLUMNS)  # a run from before the columns
CUDA = "cuda:NVIDIA H200"
SHORT = 0.05  # every planted step at this scale is under MIN_TIMED_MS on CUDA: 0.5-4 ms eager
REPLAYS = (0.99, 1.0, 1.01, 0.995, 1.005, 1.0, 0.998, 1.002, 1.0, 1.0)  # a graph's replays over their median


def replayed(*, factor=0.5, only=None, slower=None, replays=REPLAYS):
    """An edit giving each cell (or those `only` names by model) a graph-replayed time of `factor` its eager time,
    `slower` = (model, seq_len, x) times more for one cell, with its replays spread as `replays`."""

    def edit(row):
        if only is not None and row["model"] not in only:
            return
        ms = row["time_ms"] * factor
        if slower and (row["model"], row["seq_len"]) == slower[:2]:
            ms *= slower[2]
        row.update(gpu_ms=ms, gpu_times_ms=" ".join(f"{ms * r:.6g}" for r in replays), gpu_note="")

    return edit


def cuda_run(path, *, columns=WITH_GPU, scale=SHORT, **rows):
    return write(path, "scaling.csv", columns, scaling_rows(device=CUDA, scale=scale, **rows))


def compared(tmp_path, base_rows, cur_rows, *, relative=True, base_columns=WITH_GPU, cur_columns=WITH_GPU):
    base = cuda_run(tmp_path / "base", columns=base_columns, **base_rows)
    cur = cuda_run(tmp_path / "cur", columns=cur_columns, **cur_rows)
    return regress.compare(base, cur, relative=relative)


def kinds(gate, kind):
    return [f for f in gate.findings if f.kind == kind]


@pytest.mark.parametrize("relative", [True, False])
def test_short_cuda_steps_are_gated_on_their_graph_replayed_times(tmp_path, relative):
    """Eager steps of 0.5-4 ms: not gated on their eager times; with gpu_ms on both sides, every cell is, so a
    graph-replayed slow-down of 30% fails and an eager one of 3x alone (a host's launches) does not."""
    gate = compared(
        tmp_path / "gpu", dict(edit=replayed()), dict(edit=replayed(slower=("gss", 1024, 1.3))), relative=relative
    )
    (regression,) = kinds(gate, "regression")
    assert "model=gss" in regression.cell and "seq_len=1024" in regression.cell
    shown = "gpu_ms ratio to attention" if relative else "gpu_ms"
    assert regression.what.startswith(f"{shown} ") and "(+30.0%; tolerance 12%" in regression.what
    timed = 4 if relative else 6  # relative: the reference's own cells are not compared
    assert len(gate.time_changes) == len(gate.graph_timed) == timed and not gate.untimed
    assert [f.what for f in kinds(gate, "note")] == [
        f"{timed} cells' times gated on their graph-replayed gpu_ms (docs/measurement.md)"
    ]

    def eager_tripled(row):
        replayed()(row)
        if (row["model"], row["seq_len"]) == ("gss", 1024):
            row["time_ms"] *= 3

    gate = compared(tmp_path / "eager", dict(edit=replayed()), dict(edit=eager_tripled), relative=relative)
    assert not kinds(gate, "regression") and gate.time_changes[regression.cell] == pytest.approx(0.0)


@pytest.mark.parametrize("side", ["base", "cur"])
def test_a_run_without_the_columns_gates_as_before(tmp_path, side):
    """An older run (no gpu columns) against a run with them, either way round: eager times, steps under 10 ms not
    gated, as the gate did before; a slower eager step from 10 ms up still fails."""
    columns = dict(base_columns=OLDER) if side == "base" else dict(cur_columns=OLDER)
    gate = compared(tmp_path, dict(edit=replayed()), dict(edit=replayed(slower=("gss", 1024, 3.0))), **columns)
    assert not kinds(gate, "regression") and not gate.graph_timed and len(gate.untimed) == 4
    assert [f.what for f in kinds(gate, "note")] == [
        "4 cells' times not gated: a step under 10 ms on cuda is launch-bound (docs/gpu.md)"
    ]


def test_a_cell_or_reference_without_gpu_ms_on_either_side_falls_back_to_its_eager_time(tmp_path):
    """gss has no gpu_ms in the current run (its capture failed: gpu_note says why): its cells are eager and under
    10 ms, not gated; conv's are gated on gpu_ms. Without attention's gpu_ms, no cell is."""

    def uncaptured(row):
        replayed()(row)
        if row["model"] == "gss":
            row.update(gpu_ms="", gpu_times_ms="", gpu_note="capture: RuntimeError: operation not permitted")

    gate = compared(tmp_path / "gss", dict(edit=replayed()), dict(edit=uncaptured))
    assert sorted(c.split()[0] for c in gate.graph_timed) == ["model=conv"] * 2
    assert sorted(c.split()[0] for c, _ in gate.untimed) == ["model=gss"] * 2
    gate = compared(tmp_path / "ref", dict(edit=replayed()), dict(edit=replayed(only=("gss", "conv"))))
    assert not gate.graph_timed and len(gate.untimed) == 4


def test_the_replays_give_the_noise_term(tmp_path):
    """A 30% slower gpu_ms fails against tightly bound replays and passes against replays spread as widely; the
    noise is the two medians' standard errors from their replays (bench.stats), as times_ms gives the eager one."""
    wide = (0.4, 0.6, 0.8, 0.9, 1.0, 1.0, 1.1, 1.3, 1.6, 1.9)
    for replays, regressions in [(REPLAYS, 1), (wide, 0)]:
        noise = NOISE_SIGMAS * math.sqrt(2) * median_standard_error(sorted(replays)) / statistics.median(replays)
        base, cur = (dict(edit=replayed(replays=replays, slower=s)) for s in (None, ("gss", 1024, 1.3)))
        gate = compared(tmp_path / str(regressions), base, cur, relative=False)
        assert len(kinds(gate, "regression")) == regressions and (noise < 0.3) == bool(regressions)
        assert all(f"noise {noise:.1%})" in f.what for f in kinds(gate, "regression"))
        assert max(gate.time_changes.values()) == pytest.approx(0.3)


def test_the_spread_of_two_passes_is_taken_on_gpu_ms_where_both_have_it(tmp_path, capsys):
    first = cuda_run(tmp_path / "a", edit=replayed())
    second = cuda_run(tmp_path / "b", edit=replayed(slower=("gss", 512, 1.04)))
    spread = regress.ratio_spread(first, second)
    assert spread["cells"] == spread["graph_cells"] == 4 and spread["untimed_cells"] == 0
    assert spread["max"] == spread["graph_max"] == pytest.approx(0.04)
    assert regress.main(["--baseline", str(first), "--current", str(second), "--spread"]) == 0
    out = capsys.readouterr().out
    assert "time-ratio spread over 4 timed cells (4 on gpu_ms, largest 4.0%): largest 4.0%" in out
    older = cuda_run(tmp_path / "c", columns=OLDER, scale=40.0)  # eager steps from 20 ms up, no gpu_ms
    spread = regress.ratio_spread(older, cuda_run(tmp_path / "d", columns=OLDER, scale=40.0))
    assert spread["graph_cells"] == 0 and spread["graph_max"] is None and spread["cells"] == 4
    assert "on gpu_ms" not in regress.render_spread(spread)


@pytest.mark.parametrize(
    "values, message",
    [
        (dict(gpu_ms="abc", gpu_times_ms="1 2"), "gpu_ms='abc' in an ok cell (model=gss"),
        (dict(gpu_ms="0", gpu_times_ms="1 2"), "gpu_ms='0' in an ok cell (model=gss"),
        (dict(gpu_ms="1.5", gpu_times_ms="1 x"), "gpu_times_ms entry 'x' in an ok cell (model=gss"),
        (dict(gpu_ms="1.5", gpu_times_ms="1 -2"), "gpu_times_ms entry '-2' in an ok cell (model=gss"),
        (dict(gpu_ms="1.5", gpu_times_ms=""), "gpu_ms='1.5' without gpu_times_ms in an ok cell (model=gss"),
        (dict(gpu_ms="", gpu_times_ms="1 2"), "gpu_times_ms='1 2' without gpu_ms in an ok cell (model=gss"),
    ],
)
def test_malformed_graph_replayed_times_exit_2(tmp_path, capsys, values, message):
    def edit(row):
        replayed()(row)
        if (row["model"], row["seq_len"]) == ("gss", 512):
            row.update(values)

    base = cuda_run(tmp_path / "base", edit=replayed())
    cur = cuda_run(tmp_path / "cur", edit=edit)
    assert regress.main(["--baseline", str(base), "--current", str(cur)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1, err


def test_cpu_runs_with_empty_gpu_columns_gate_as_without_them(tmp_path, capsys):
    """A CPU run writes the columns empty: the same verdicts and lines as a run without them."""
    outputs = []
    for name, columns in (("with", WITH_GPU), ("without", OLDER)):
        base = write(tmp_path / name / "base", "scaling.csv", columns, scaling_rows())
        slower = scaling_rows(edit=lambda r: r.update(time_ms=r["time_ms"] * (2 if r["model"] == "gss" else 1)))
        cur = write(tmp_path / name / "cur", "scaling.csv", columns, slower)
        assert regress.main(["--baseline", str(base), "--current", str(cur), "--relative"]) == 1
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1] and "gpu_ms" not in outputs[0]
