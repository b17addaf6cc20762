"""Findings from CSVs: slopes and crossovers on fixtures whose answers are known."""

import csv

import pytest

from bench.analysis import crossover, fitted_slope, headline, length_series, load_scaling
from bench.scaling import COLUMNS


def write_fixture(path, times):
    """times: {(model, mode): {seq_len: time_ms}} -> a scaling.csv in the suite's format."""
    with open(path / "scaling.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS)
        writer.writeheader()
        for (model, mode), series in times.items():
            for seq_len, time_ms in series.items():
                writer.writerow(dict(run_id="fixture", model=model, mode=mode, dtype="float32", device="cpu", batch=1,
                                     seq_len=seq_len, dim=64, compiled="false", time_ms=time_ms,
                                     status="ok" if time_ms is not None else "oom"))


LENGTHS = [256, 512, 1024, 2048, 4096, 8192]


def test_slope_and_crossover_of_power_laws(tmp_path):
    # gss = 2 L, attention = L^2 / 1000: equal at L = 2000, gss faster above it
    write_fixture(tmp_path, {("gss", "fwdbwd"): {L: 2.0 * L for L in LENGTHS},
                             ("attention", "fwdbwd"): {L: L * L / 1000 for L in LENGTHS}})
    df = load_scaling(tmp_path)
    gss, attention = length_series(df, "gss", mode="fwdbwd"), length_series(df, "attention", mode="fwdbwd")
    assert fitted_slope(gss) == pytest.approx(1.0) and fitted_slope(attention) == pytest.approx(2.0)
    assert crossover(gss, attention) == pytest.approx(2000.0)
    assert headline(tmp_path) == ["fwdbwd float32: gss faster than attention above seq_len 2000",
                                  "  attention: time ~ seq_len^2.00", "  gss: time ~ seq_len^1.00"]


def test_failed_cells_are_gaps_and_no_crossover_is_reported_as_none(tmp_path):
    write_fixture(tmp_path, {("gss", "fwd"): {256: 10.0, 512: 20.0, 1024: None},
                             ("attention", "fwd"): {256: 1.0, 512: 2.0, 1024: 4.0}})
    df = load_scaling(tmp_path)
    gss = length_series(df, "gss", mode="fwd")
    assert list(gss.index) == [256, 512]
    assert crossover(gss, length_series(df, "attention", mode="fwd")) is None
    assert fitted_slope(gss, upper_half=False) == pytest.approx(1.0)
