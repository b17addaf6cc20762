"""The power curve of the A/B gate (bench.ab.power): the share of cells flagged against the slow-down planted, from
power.csv, one line per threshold."""

from bench.plots.style import _axes, _finish, _save
from bench.results import read_rows


def shares(rows, flagged, cells):
    """{threshold: [(planted percent, share of `cells` flagged over its runs), ...]} from power.csv's rows."""
    pooled = {}
    for r in rows:
        point = pooled.setdefault(float(r["threshold_pct"]), {}).setdefault(float(r["planted_pct"]), [0, 0])
        point[0] += int(r[flagged])
        point[1] += int(r[cells])
    return {t: [(p, f / n) for p, (f, n) in sorted(points.items()) if n] for t, points in sorted(pooled.items())}


def plot_power(csv_path, out_path):
    """Left: the planted model's cells flagged (at 0, A/A: its false alarms); right: every other model's cells
    flagged (false alarms), one line per threshold; returns the figure's path."""
    rows = read_rows(csv_path)
    model = rows[0]["model"] if rows else "model"
    fig, (left, right) = _axes(2, width=5.2, height=4.0)
    panels = ((left, "flagged", "cells", f"{model}: share of its cells flagged"),)
    panels += ((right, "other_flagged", "other_cells", "other models: share of their cells flagged"),)
    for ax, flagged, cells, title in panels:
        for threshold, points in shares(rows, flagged, cells).items():
            ax.plot(*zip(*points, strict=True), marker="o", label=f"threshold {threshold:g}%")
        ax.set_xlabel(f"slow-down planted in {model} (%)")
        ax.set_ylim(-0.03, 1.03)
        ax.grid(True, alpha=0.3)
        _finish(ax, title, loc="lower right" if ax is left else "upper left")
    return _save(fig, out_path)
