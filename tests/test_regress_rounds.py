"""bench.regress --relative against a refined reference cell: a cell's time ratio is taken over the reference's
rounds it ran beside (a crossover's refinement adds rounds to the cells around it, later)."""

import statistics

from bench.stats import standard_error_ms, time_beside
from tests.test_regress import gate, scaling_rows, slower_repeats


def refined(model, seq_len, extra, factor):
    """A crossover's refinement: `extra` rounds appended to the cell's repeats, run while the machine was `factor`
    times slower, its median taken over all of them."""

    def edit(row):
        if row["model"] == model and row["seq_len"] == seq_len:
            times = [float(t) for t in row["times_ms"].split()] + [row["time_ms"] * factor] * extra
            row.update(
                times_ms=" ".join(f"{t:.6g}" for t in times), repeats=len(times), time_ms=statistics.median(times)
            )

    return edit


def test_relative_times_use_the_reference_rounds_run_beside_the_cell(tmp_path, capsys):
    """A baseline whose gss and attention cells at 512 were refined while the machine ran 2x slower: conv's ratio
    to attention there is taken over attention's first 10 rounds, the ones conv ran beside, so an identical
    conv passes and a doubled conv fails (over all 40, attention's median would double and hide the doubling)."""
    spread = [0.97, 0.98, 0.99, 1.0, 1.0, 1.0, 1.0, 1.01, 1.02, 1.03]

    def both(row):
        refined("gss", 512, 30, 2.0)(row)
        refined("attention", 512, 30, 2.0)(row)

    base = scaling_rows(spread=spread, edit=both)
    # planted rows, no clock: the refined attention cell's median over all 40 rounds is its planted 20 ms doubled
    assert [r["time_ms"] for r in base if r["seq_len"] == 512 and r["model"] == "attention"] == [40.0]
    code, out, _ = gate(tmp_path / "same", capsys, base, scaling_rows(spread=spread), "--relative")
    assert code == 0 and "0 regressions" in out, out
    code, out, _ = gate(
        tmp_path / "doubled",
        capsys,
        base,
        scaling_rows(spread=spread, edit=slower_repeats("conv", 512, 2.0)),
        "--relative",
    )
    assert code == 1 and "model=conv" in out.splitlines()[0] and "+100.0%" in out.splitlines()[0], out


def test_time_beside():
    row = dict(time_ms=5.0, time_iqr_ms=1.0, repeats=6, times_ms="1 2 3 10 10 10")
    assert time_beside(row, 3)[0] == 2.0  # the first three rounds
    assert time_beside(row, 6) == (5.0, standard_error_ms(row))  # all of them: the row's
    assert time_beside(row, 9)[0] == 5.0
    assert time_beside({**row, "times_ms": ""}, 3) == (
        5.0,
        standard_error_ms({**row, "times_ms": ""}),
    )  # no repeat times (older runs): the row's
