"""Markdown helpers shared by REPORT.md's sections: tables, mean ± std, a mean with its interval, and how counts,
corpora, seeds, lengths and rates are written (pandas, no torch)."""

import pandas as pd


def table(header, rows):
    """A Markdown table (a blank line after it); empty cells for None and NaN."""

    def cell(v):
        return "" if v is None or (isinstance(v, float) and pd.isna(v)) else str(v).replace("|", "\\|")

    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    return lines + ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows] + [""]


def pm(mean, std, *, n=None, digits=3):
    """mean ± std; a single seed has no spread to show."""
    return f"{mean:.{digits}f}" if n == 1 else f"{mean:.{digits}f} ± {std:.{digits}f}"


def ci(mean, low, high, *, digits=3):
    """A mean with its 95% interval, "2.410 (2.391..2.429)"; the mean alone where there is none (one seed)."""
    if pd.isna(low) or pd.isna(high):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ({low:.{digits}f}..{high:.{digits}f})"


def stat_at(stats, key, *, digits=3):
    """ci (or, without intervals, pm) of one row of a seed-stats frame indexed by key; empty where it is missing."""
    if key not in stats.index:
        return ""
    if "ci_low" in stats.columns:
        return ci(stats.at[key, "mean"], stats.at[key, "ci_low"], stats.at[key, "ci_high"], digits=digits)
    return pm(stats.at[key, "mean"], stats.at[key, "std"], n=stats.at[key, "n"], digits=digits)


def on(corpus):
    return f" on {corpus}" if corpus else ""


def seeds(n):
    return f"{n} seed{'s' if n != 1 else ''}"


def tokens(v):
    return f"{int(v):,}" if pd.notna(v) else ""


def rates(values):
    return ", ".join(f"{v:g}" for v in values)


def format_float(v, fmt=".3f"):
    """v in `fmt`, or "" where it is missing (NaN)."""
    return f"{v:{fmt}}" if pd.notna(v) else ""
