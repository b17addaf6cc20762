"""REPORT.md's section on the GSS paper's comparison (pandas, no torch): gss's speed-up over dss against the
paper's 2-3x, and the bits/byte of the models it compares, trained under the same protocol."""

import pandas as pd

from bench import analysis
from bench.analysis import findings, summaries
from bench.report.markdown import ci, table

PAPER_MODELS = ("gss", "dss", "gss-hybrid", "attention", "attention-chunked")  # the GSS paper's comparison
PAPER_SPEEDUP = (2.0, 3.0)  # "2-3x speedup over vanilla DSS on TPUs"


def claim(low, high):
    """Whether a speed-up's 95% interval supports the paper's 2-3x: within, above or below it, or neither."""
    if low >= PAPER_SPEEDUP[0] and high <= PAPER_SPEEDUP[1]:
        return "within 2-3x"
    if low > PAPER_SPEEDUP[1] or high < PAPER_SPEEDUP[0]:
        return "above 3x" if low > PAPER_SPEEDUP[1] else "below 2x"
    return "overlaps the 2-3x edge"


def paper_section(run_dir, figs, found):
    """The GSS paper's comparisons: gss's speed-up over dss per mode and length, with intervals (findings.csv), and
    the bits/byte of gss, dss, gss-hybrid, attention and attention-chunked trained under the same protocol."""
    rows = findings.speedups(found, "gss", "dss")
    ppl = analysis.load_csv(run_dir, "perplexity.csv")
    bpb = None if ppl is None else summaries.bpb_table(ppl)
    bpb = None if bpb is None else bpb[bpb.label.isin(PAPER_MODELS)]  # the comparison's cells, not an ablation's
    if rows.empty and (bpb is None or bpb.empty):
        return [], []
    lines, bullets = (
        [
            "## The GSS paper's comparison: GSS, DSS and GSS-Hybrid",
            "",
            'The paper reports GSS "2-3x" faster than DSS on TPUs, and GSS-Hybrid (chunked attention in '
            "some layers) better in perplexity. Here on this run's device:",
            "",
        ],
        [],
    )
    if not rows.empty:
        shown = [
            (
                r.mode,
                r.dtype,
                getattr(r, "span", r.detail).removeprefix("at seq_len "),
                f"{r.value:.2f}x",
                findings.interval(r.ci_low, r.ci_high, "x"),
                "" if pd.isna(r.ci_low) else claim(r.ci_low, r.ci_high),
            )
            for r in rows.itertuples()
        ]
        lines += [
            "gss's speed-up over dss: the median over the paired rounds of each length's interleaved group of dss's "
            "time / gss's in the round (findings.csv), with its 95% interval:",
            "",
        ]
        lines += table(["mode", "dtype", "seq_len", "speed-up (paired)", "95% interval", "vs the paper"], shown)
        lines += figs("gss_vs_dss.png")
        for (mode, dtype), part in rows.groupby(["mode", "dtype"], sort=False):
            r = part.iloc[-1]
            bullets.append(
                f"GSS vs DSS, {mode} {dtype}: gss {r.value:.2f}x faster {r.get('span', r.detail)} (95% "
                f"{findings.interval(r.ci_low, r.ci_high, 'x') or 'no interval'}; the paper: 2-3x on TPUs)"
            )
    if bpb is not None and not bpb.empty:
        lines += [
            "Test bits/byte at the training length (mean and 95% interval over seeds, each model at its selected "
            "rate):",
            "",
        ]
        lines += table(
            ["corpus", "model", "bits/byte", "seeds", "lr"],
            [(r.corpus, r.label, ci(r.mean, r.ci_low, r.ci_high), r.n, r.lr) for r in bpb.itertuples()],
        )
    return lines, bullets
