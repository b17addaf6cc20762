"""REPORT.md's sections of the suites that run after the scaling suite: the op breakdown (profiling), decoding, and
the steadiness of the machine (the profiled steps against the scaling suite's times of the same cells)."""

from bench import analysis
from bench.analysis import ok, summaries
from bench.report.markdown import table, tokens

STEADY = 0.25  # a median profiled / timed ratio further than this from 1: the machine's speed changed


def steadiness_section(run_dir, figs, found):
    """The cells timed by the scaling suite and profiled later in the same run (bench.analysis.summaries.profile_drift):
    their time in each, and, when the median ratio is off by more than STEADY, a finding that the machine's
    speed changed during the run, so that the times of the suites after the scaling suite (profiling,
    decode) are not taken at face value."""
    drift = summaries.profile_drift(analysis.load_scaling(run_dir), analysis.load_csv(run_dir, "op_breakdown.csv"))
    if drift.empty:
        return [], []
    median = drift.ratio.median()
    rows = [
        (r.model, r.mode, tokens(r.seq_len), f"{r.time_ms:,.1f}", f"{r.step_ms:,.1f}", f"{r.ratio:.2f}")
        for r in drift.itertuples()
    ]
    lines = [
        "## Steadiness of the machine",
        "",
        "The same cells timed by the scaling suite and, minutes later, profiled (the profiler's own overhead "
        f"is a few percent): median profiled / timed {median:.2f} over {len(drift)} cells.",
        "",
    ]
    bullets = []
    if abs(median - 1) > STEADY:
        warning = (
            f"the machine's speed changed during the run: profiled steps took {median:.2f}x the scaling "
            "suite's time for the same cells; the times of the suites run after the scaling suite "
            "(profiling, decode) are suspect"
        )
        lines += [f"**Warning:** {warning}.", ""]
        bullets.append(warning)
    return lines + table(["model", "mode", "seq_len", "scaling ms", "profiled ms", "ratio"], rows), bullets


def ops_section(run_dir, figs, found):
    df = analysis.load_csv(run_dir, "op_breakdown.csv")
    if df is None:
        return [], []
    shares = summaries.op_shares(df)
    cats = list(dict.fromkeys(shares.category))
    rows = []
    for (model, mode, length), g in shares.groupby(["model", "mode", "seq_len"], sort=False):
        by = g.set_index("category").share
        total = f"{g.time_ms.sum():,.1f}" if "time_ms" in g else ""
        rows.append((model, mode, tokens(length), total, *(f"{by[c]:.0%}" if c in by else "" for c in cats)))
    lines = ["## Op breakdown", "", "Share of the step's time per profiler category:", ""]
    return lines + table(["model", "mode", "seq_len", "total ms", *cats], rows) + figs("op_breakdown.png"), []


def decode_section(run_dir, figs, found):
    df = analysis.load_csv(run_dir, "decode.csv")
    if df is None or ok(df).empty:
        return [], []
    speed, lines, bullets = summaries.decode_speedup(df), ["## Decoding", ""], []
    if not speed.empty:
        lines += ["Time per new token (ms): carrying a state (recurrent, kv_cache) vs re-running the prefix:", ""]
        lines += table(
            ["model", "method", "dtype", "prompt_len", "method ms", "reforward ms", "speed-up"],
            [
                (
                    r.model,
                    r.method,
                    getattr(r, "dtype", ""),
                    tokens(r.prompt_len),
                    f"{r.step_ms:.3f}",
                    f"{r.reforward:.3f}",
                    f"{r.speedup:.1f}×",
                )
                for r in speed.itertuples()
            ],
        )
        for (model, method), g in speed.groupby(["model", "method"], sort=False):
            r = g.loc[g.prompt_len.idxmax()]
            bullets.append(
                f"decode {model}: {method} {r.speedup:.1f}× faster per token than reforward "
                f"at prompt_len {tokens(r.prompt_len)}"
            )
    return lines + figs("decode.png"), bullets
