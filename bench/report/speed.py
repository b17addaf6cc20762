"""REPORT.md's sections on speed and memory (pandas, no matplotlib, no torch): the scaling suite's sweeps (crossovers,
exponents, time and memory at the key lengths, the kernel ablations) with findings.csv's intervals, and gss-fast
against gss (the suites after it: profiled.py). Each section returns (Markdown lines, findings), the findings being
the one-line facts REPORT.md lists first."""

import itertools
import math
import re
from types import SimpleNamespace

import pandas as pd

from bench import analysis
from bench.analysis import findings, ok, refine
from bench.report.markdown import table, tokens
from bench.schema import OPTIONS, REFERENCE_MODEL

# What the times table is, and what it is not: the speed-ups are findings.csv's paired median ratios.
MEDIANS = (
    " (each cell's median over its own repeats; a speed-up is the median of the paired rounds' ratios, in the "
    "findings below, not a ratio of two of these medians)"
)

REPLAYS = (
    "; a replayed column: the median of the cell's steps replayed from a CUDA graph (gpu_ms, free of the launches); "
    "fastest on the clock of the group's findings"
)


def slope_rows(found):
    """findings.csv's slope rows with the sweep's label and the first and last length fitted (from detail)."""
    if found is None or found.empty:
        return []
    out = []
    for r in found[found.finding == "slope"].itertuples():
        first, last = re.search(r"seq_len (\d+)\.\.(\d+)", r.span).groups()
        label = " ".join(p for p in (r.model, r.options) if p)
        out.append(SimpleNamespace(**r._asdict(), label=label, first=int(first), last=int(last)))
    return out


def scaling_section(run_dir, figs, found):
    """The scaling sweeps: crossovers with the reference model, fitted exponents, time and memory at the key lengths,
    the kernel ablations, then findings.csv (`found`) with its intervals, then the figures."""
    df = analysis.load_scaling(run_dir)
    if df is None:
        return [], []
    lines, bullets, pairs = ["## Scaling", ""], [], analysis.modes_dtypes(df)
    rows, gss_models = [], [m for m in ("gss", "gss-fast") if m in set(df.model)]
    for mode, dtype in pairs:
        texts = {
            m: [t for _, _, t in analysis.crossovers(df, mode=mode, dtype=dtype, a=m, b=REFERENCE_MODEL)]
            for m in gss_models
        }
        rows += [(mode, dtype, *row) for row in itertools.zip_longest(*texts.values(), fillvalue="")]
        bullets += [f"{mode} {dtype}: {text}" for t in texts.values() for text in t]
    if rows:
        lines += [
            f"Crossover of {' and of '.join(gss_models)} with {REFERENCE_MODEL} (interpolated on log-log axes between "
            "measured lengths):",
            "",
            *table(["mode", "dtype", *(f"{m} vs {REFERENCE_MODEL}" for m in gss_models)], rows),
        ]
    slopes = {}
    for r in slope_rows(found):
        low_high = f" [{r.ci_low:.2f}..{r.ci_high:.2f}]" if pd.notna(r.ci_low) else ""
        shown = f"{r.value:.2f}{low_high} ({tokens(r.first)}..{tokens(r.last)})"
        slopes.setdefault(r.label, {})[(r.mode, r.dtype)] = (shown, f"{r.value:.2f}")
    if slopes:
        lines += [
            "Fitted exponent k of time ~ seq_len^k [95% interval] over the longest max(3, n/2) of each sweep's n "
            "lengths (findings.csv's slope rows; over three lengths equally spaced on the log axis, the secant):",
            "",
        ]
        lines += table(
            ["model", *(f"{m} {d}" for m, d in pairs)],
            [(m, *(v[p][0] if p in v else "" for p in pairs)) for m, v in slopes.items()],
        )
        for mode, dtype in pairs:
            text = ", ".join(f"{m} {v[(mode, dtype)][1]}" for m, v in slopes.items() if (mode, dtype) in v)
            bullets.append(f"{mode} {dtype}: fitted exponents {text}")
    for value, what, unit, best, note in (
        ("time_ms", "Median time per step", "ms", "fastest", MEDIANS),
        ("peak_mem_mb", "Peak memory", "MiB", "lowest memory", ""),
    ):
        out, frames = [], {p: analysis.at_lengths(df, mode=p[0], dtype=p[1], value=value) for p in pairs}
        replays = replay_frames(df, frames) if value == "time_ms" else {}
        note += REPLAYS if replays else ""
        lines += [f"{what} ({unit}) at the longest length all models reached and the longest any reached{note}:", ""]
        columns = list(dict.fromkeys(c for frame in frames.values() for c in frame.columns))  # every mode's sweeps
        for (mode, dtype), frame in frames.items():
            graph, clock = replays.get((mode, dtype), (None, analysis.EAGER))
            for length, r in frame.iterrows():
                # the winner on the clock of the group's findings
                least = (r if clock == analysis.EAGER else graph.loc[length]).dropna()
                winner = ", ".join(least.index[least == least.min()])  # every model of a tie
                shown = [f"{v:,.1f}" if pd.notna(v) else "" for v in r.reindex(columns)]
                if graph is not None:
                    shown = [
                        x for pair in zip(shown, map(replayed_ms, graph.loc[length].reindex(columns))) for x in pair
                    ]
                out.append((mode, dtype, tokens(length), *shown, winner))
                least_ms = (
                    f"{least.min():,.1f} {unit}"
                    if clock == analysis.EAGER
                    else f"{replayed_ms(least.min())} ms replayed"
                )
                bullets.append(
                    f"{mode} {dtype}, seq_len {tokens(length)}: {best} {winner} ({least_ms})"
                    + analysis.absent(df, r.index[r.isna()], mode=mode, dtype=dtype, length=length)
                )
        header = [x for c in columns for x in (c, *([f"{c} replayed"] if replays else ()))]
        lines += table(["mode", "dtype", "seq_len", *header, best], out) if out else []
    replay_lines, replay_bullets = replay_section(df)
    lines, bullets = lines + replay_lines, bullets + replay_bullets
    for option, by in (("kernel_N", ["lambda_imag_exp"]), ("conv_kernel", [])):
        abl = analysis.option_ablation(df, option)
        if abl is None:
            continue
        values = sorted(abl.x.unique())
        out, clocks = [], set()
        for key, g in abl.groupby(["model", "mode", "dtype", "seq_len", *by]):
            g, clock = analysis.on_clock(g)  # on a GPU, where every cell of the row was graph-replayed: gpu_ms
            clocks.add(clock)
            t = pd.to_numeric(g.time_ms).groupby(g.x).median()
            if clock == analysis.EAGER:
                ratio = f"{paired_ratio(g, t.index[-1], t.index[0]):.2f}×"
            else:  # the replays of two cells ran one after the other: the ratio of their medians
                ratio = f"{t.iloc[-1] / t.iloc[0]:.2f}× replayed"
            shown = (
                "" if v not in t else f"{t[v]:,.1f}" if clock == analysis.EAGER else replayed_ms(t[v]) for v in values
            )
            out.append((*key[:3], tokens(key[3]), *key[4:], *shown, ratio))
        order = analysis.ordered_models(abl.model)
        out.sort(key=lambda r: (order.index(r[0]), r[1], r[2], [v != "true" for v in r[4 : 4 + len(by)]]))
        full = set(abl.x[analysis.full_taps(abl)]) if option == "conv_kernel" else set()
        names = [tokens(v) + (" (full)" if v in full else "") for v in values]
        replayed_rows = (
            " A row marked replayed (CUDA, every cell of it graph-replayed) gives the replays' medians (gpu_ms) and "
            "the ratio of the two medians (the replays of two cells ran one after the other, unpaired)."
            if analysis.GRAPH in clocks
            else ""
        )
        lines += [
            f"Effect of {option} on the median time per step (ms), at one length; the last column is the median of "
            "the paired rounds' time ratios of the largest and the smallest value (one interleaved group):"
            + replayed_rows,
            "",
        ]
        largest = "largest / smallest (paired)"
        header = ["model", "mode", "dtype", "seq_len", *by, *(f"{option}={n}" for n in names), largest]
        lines += table(header, out)
    figures = figs("time_*.png", "memory_*.png", "flops_*.png", "ablation_*.png")
    return lines + intervals_section(found) + figures, bullets


def replayed_ms(value):
    """A graph-replayed time in the times table: short steps are what it is for, so two decimals."""
    return f"{value:,.2f}" if pd.notna(value) else ""


def replay_frames(df, frames):
    """{(mode, dtype): (frame seq_len x label of the median graph-replayed gpu_ms at the lengths of that group's
    times table (frames), the clock of the group's findings)}; {} when no cell of the run has gpu_ms."""
    if not analysis.replayed(df).any():
        return {}
    out = {}
    for (mode, dtype), frame in frames.items():
        series = analysis.length_series(df, mode=mode, dtype=dtype, value="gpu_ms")
        graph = pd.DataFrame({m: s.reindex(frame.index) for m, s in series.items()}, index=frame.index)
        out[mode, dtype] = (
            graph.reindex(columns=frame.columns),
            analysis.clock(df[(df["mode"] == mode) & (df.dtype == dtype)]),
        )
    return out


def replay_section(df):
    """Where a CUDA run has graph-replayed times (or says why it has none): how many ok CUDA cells have gpu_ms, the
    clock the findings of each (mode, dtype) read, and each cell without gpu_ms with its reason (gpu_note)."""
    good = ok(df)
    cuda = good[good.device.astype(str).str.startswith("cuda")]
    has = analysis.replayed(cuda)
    if cuda.empty or not (has.any() or cuda.gpu_note.astype(str).str.strip().ne("").any()):
        return [], []
    coverage = f"{int(has.sum())} of {len(cuda)} ok CUDA cells graph-replayed (gpu_ms)"
    clocks = {p: analysis.clock(df[(df["mode"] == p[0]) & (df.dtype == p[1])]) for p in analysis.modes_dtypes(df)}
    on = {k: ", ".join(f"{m} {d}" for (m, d), c in clocks.items() if c == k) for k in (analysis.GRAPH, analysis.EAGER)}
    clock = "; ".join(
        f"{what} in {on[k]}"
        for k, what in (
            (
                analysis.GRAPH,
                "the graph-replayed gpu_ms (unpaired intervals from each cell's own replays, no drift gauge)",
            ),
            (analysis.EAGER, "the eager time_ms (paired rounds: not every cell there has gpu_ms)"),
        )
        if on[k]
    )
    lines = ["### CUDA graph replays", "", f"{coverage}. The findings read {clock}.", ""]
    rows = [
        (
            r.model,
            r.mode,
            r.dtype,
            tokens(r.seq_len),
            ", ".join(f"{c}={v}" for c in OPTIONS if (v := getattr(r, c)) != "" and pd.notna(v)),
            r.gpu_note or "(no reason recorded)",
        )
        for r in cuda[~has].itertuples()
    ]
    if rows:
        lines += [
            "The ok CUDA cells without gpu_ms, and why (gpu_note); their eager time_ms stands:",
            "",
            *table(["model", "mode", "dtype", "seq_len", "options", "reason"], rows),
        ]
    return lines, [coverage]


def paired_ratio(cells, a, b):
    """Time at option value a / at b of an ablation's cells at one length (one interleaved group): the median of
    their paired rounds' ratios (refine.log_ratios), where each value has one cell with its repeats; else the ratio
    of their medians."""
    x, y = cells[cells.x == a], cells[cells.x == b]
    if len(x) == len(y) == 1:
        (log_ratio,), _ = refine.log_ratios({0: x.iloc[0]}, {0: y.iloc[0]}, [0], resamples=0)
        return math.exp(log_ratio)
    return x.time_ms.median() / y.time_ms.median()


def intervals_section(found):
    """findings.csv's timing findings as a table, each with its 95% interval (the trainings' are in their sections)."""
    found = None if found is None else found[found.finding.isin(findings.TIMING)]
    if found is None or found.empty:
        return []
    older = (
        " They are empty where the cells have no recorded repeats (`times_ms`: runs from before it was recorded)."
        if found.ci_low.isna().any()
        else ""
    )
    if found.detail.str.contains(analysis.REPLAYED, regex=False).any():
        older += (
            " Where detail names clock cuda_graph, a comparison is of the cells' graph-replayed medians (gpu_ms), "
            "its interval a bootstrap of each cell's replays on its own, and a slope has no drift gauge."
        )
    return [
        "### Findings with 95% intervals",
        "",
        "From `findings.csv` (`python -m bench.analysis`): each sweep's slope over its longest max(3, ⌈n/2⌉) "
        f"lengths and its difference from {REFERENCE_MODEL}'s over the lengths both reached, the crossover of every "
        f"two models that cross, each model's speed-up over {REFERENCE_MODEL} at their longest common length, and "
        "gss's over dss and gss-fast's over gss at every length. A comparison at one length is the median of the "
        "two cells' paired rounds' time ratios (round i of each ran back to back), a slope is fitted to each "
        "length's time relative to the drift gauge timed in the same rounds. Intervals: 2.5th..97.5th "
        f"percentiles over {findings.RESAMPLES:,} bootstrap resamples of those rounds (a speed-up's: the "
        "distribution-free interval of its median, from the order statistics of its rounds' ratios); a "
        "crossover's counts the resamples without one at the grid's edge (its end then that length) and is "
        "withheld where it reaches past both ends: the noise within this run only (`python -m bench.analysis` "
        f"with several runs gives each finding's range across them).{older}",
        "",
        *table(list(findings.HEADER), findings.display(found)),
    ]


def fast_section(run_dir, figs, found):
    """gss-fast against gss, the same function: gss's time / gss-fast's per mode and length with its 95% interval
    (findings.csv's speedup rows with other = gss), and their peak memory at each length."""
    rows = findings.speedups(found, "gss-fast", "gss")
    if rows.empty:
        return [], []
    df = analysis.load_scaling(run_dir)

    def memory(mode, dtype, length):  # gss-fast's peak memory / gss's at one length of their length sweeps
        peak = analysis.length_series(df, mode=mode, dtype=dtype, value="peak_mem_mb", models=["gss", "gss-fast"])
        fast, ref = (peak.get(m, {}).get(length, math.nan) for m in ("gss-fast", "gss"))
        return f"{fast / ref:.2f}" if ref > 0 and fast == fast else ""

    shown, bullets = [], []
    replays = rows.detail.str.contains(analysis.REPLAYED, regex=False)
    for r, replayed in zip(rows.itertuples(), replays, strict=True):
        length = int(r.span.split("at seq_len ")[-1])
        shown.append(
            (
                r.mode,
                r.dtype,
                tokens(length),
                f"{r.value:.2f}x",
                findings.interval(r.ci_low, r.ci_high, "x"),
                memory(r.mode, r.dtype, length),
                *([analysis.GRAPH if replayed else "eager (paired)"] if replays.any() else []),
            )
        )
    for (mode, dtype), part in rows.groupby(["mode", "dtype"], sort=False):
        each = ", ".join(
            f"{r.value:.2f}x at {tokens(int(r.span.split('at seq_len ')[-1]))}"
            f" ({findings.interval(r.ci_low, r.ci_high, 'x') or 'no interval'})"
            for r in part.itertuples()
        )
        bullets.append(f"gss-fast vs gss, {mode} {dtype} (the same function): {each}")
    lines = [
        "## gss-fast: gss's function, implemented faster",
        "",
        "gss-fast has gss's parameters and outputs (models/gss_fast.py: the kernel in real arithmetic, cached while "
        "autograd is off, the convolution's backward in real transforms; inference in place and, on the CPU, "
        "its position-wise part in blocks). Its speed-up over gss is the median over the rounds of each length's "
        "interleaved group of gss's time / gss-fast's in the round (findings.csv), with its 95% interval:",
        "",
        *table(
            [
                "mode",
                "dtype",
                "seq_len",
                "speed-up" if replays.any() else "speed-up (paired)",
                "95% interval",
                "gss-fast peak memory / gss's",
                *(["clock"] if replays.any() else []),
            ],
            shown,
        ),
    ]
    return lines, bullets
