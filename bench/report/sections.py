"""The findings sections of REPORT.md, one per CSV (scaling, language modelling, recall, op breakdown,
decoding, numerics): each reads its CSV through bench.analysis and bench.analysis.summaries and returns (Markdown lines,
findings), the findings being the one-line facts REPORT.md lists first. bench.report puts them together with
the environment, the failed cells and the commands to reproduce (pandas, no matplotlib, no torch)."""

import itertools

import pandas as pd

from bench import analysis
from bench.analysis import ok, summaries


def table(header, rows):
    """A Markdown table (a blank line after it); empty cells for None and NaN."""

    def cell(v):
        return "" if v is None or (isinstance(v, float) and pd.isna(v)) else str(v).replace("|", "\\|")

    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    return lines + ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows] + [""]


def pm(mean, std, *, n=None, digits=3):
    """mean ± std; a single seed has no spread to show."""
    return f"{mean:.{digits}f}" if n == 1 else f"{mean:.{digits}f} ± {std:.{digits}f}"


def stat_at(stats, key, *, digits=3):
    """pm of one row of a seed-stats frame indexed by key; empty where it is missing."""
    if key not in stats.index:
        return ""
    return pm(stats.at[key, "mean"], stats.at[key, "std"], n=stats.at[key, "n"], digits=digits)


def on(corpus):
    return f" on {corpus}" if corpus else ""


def seeds(n):
    return f"{n} seed{'s' if n != 1 else ''}"


def tokens(v):
    return f"{int(v):,}" if pd.notna(v) else ""


def scaling_section(run_dir, figs, *, intervals=()):
    """The scaling findings; `intervals`, the lines of bench.report's table of findings.csv, go before the figures."""
    df = analysis.load_scaling(run_dir)
    if df is None:
        return [], []
    lines, findings, pairs = ["## Scaling", ""], [], analysis.modes_dtypes(df)
    rows, gss_models = [], [m for m in ("gss", "gss-fast") if m in set(df.model)]
    for mode, dtype in pairs:
        texts = {m: [t for _, _, t in analysis.crossovers(df, mode=mode, dtype=dtype, a=m)] for m in gss_models}
        rows += [(mode, dtype, *row) for row in itertools.zip_longest(*texts.values(), fillvalue="")]
        findings += [f"{mode} {dtype}: {text}" for t in texts.values() for text in t]
    if rows:
        lines += [
            f"Crossover of {' and of '.join(gss_models)} with attention (interpolated on log-log axes between "
            "measured lengths):",
            "",
            *table(["mode", "dtype", *(f"{m} vs attention" for m in gss_models)], rows),
        ]
    slopes = {}
    for mode, dtype in pairs:
        for model, s in analysis.sweeps(df, mode=mode, dtype=dtype).items():
            fit, upper = analysis.fitted_slope(s), analysis.fitted_lengths(s.dropna().index)
            if fit is not None:
                slopes.setdefault(model, {})[(mode, dtype)] = f"{fit:.2f} ({tokens(upper[0])}..{tokens(upper[-1])})"
    if slopes:
        lines += ["Fitted exponent k of time ~ seq_len^k over the longest max(3, n/2) of each sweep's n lengths:", ""]
        lines += table(
            ["model", *(f"{m} {d}" for m, d in pairs)], [(m, *(v.get(p, "") for p in pairs)) for m, v in slopes.items()]
        )
        for mode, dtype in pairs:
            text = ", ".join(f"{m} {v[(mode, dtype)].split()[0]}" for m, v in slopes.items() if (mode, dtype) in v)
            findings.append(f"{mode} {dtype}: fitted exponents {text}")
    for value, what, unit, best in (
        ("time_ms", "Time per step", "ms", "fastest"),
        ("peak_mem_mb", "Peak memory", "MiB", "lowest memory"),
    ):
        lines += [f"{what} ({unit}) at the longest length all models reached and the longest any reached:", ""]
        out, frames = [], {p: analysis.at_lengths(df, mode=p[0], dtype=p[1], value=value) for p in pairs}
        columns = list(dict.fromkeys(c for frame in frames.values() for c in frame.columns))  # every mode's sweeps
        for (mode, dtype), frame in frames.items():
            for length, r in frame.iterrows():
                least = r.dropna()
                winner = ", ".join(least.index[least == least.min()])  # every model of a tie
                out.append(
                    (
                        mode,
                        dtype,
                        tokens(length),
                        *(f"{v:,.1f}" if pd.notna(v) else "" for v in r.reindex(columns)),
                        winner,
                    )
                )
                findings.append(
                    f"{mode} {dtype}, seq_len {tokens(length)}: {best} {winner} ({least.min():,.1f} {unit})"
                    + analysis.absent(df, r.index[r.isna()], mode=mode, dtype=dtype, length=length)
                )
        lines += table(["mode", "dtype", "seq_len", *columns, best], out) if out else []
    for option, by in (("kernel_N", ["lambda_imag_exp"]), ("conv_kernel", [])):
        abl = analysis.option_ablation(df, option)
        if abl is None:
            continue
        values = sorted(abl.x.unique())
        out = []
        for key, g in abl.groupby(["model", "mode", "dtype", "seq_len", *by]):
            t = g.groupby("x").time_ms.median()
            out.append(
                (
                    *key[:3],
                    tokens(key[3]),
                    *key[4:],
                    *(f"{t[v]:,.1f}" if v in t else "" for v in values),
                    f"{t.iloc[-1] / t.iloc[0]:.2f}×",
                )
            )
        order = analysis.ordered_models(abl.model)
        out.sort(key=lambda r: (order.index(r[0]), r[1], r[2], [v != "true" for v in r[4 : 4 + len(by)]]))
        full = set(abl[abl.x == abl.seq_len].x) if option == "conv_kernel" else set()
        names = [tokens(v) + (" (full)" if v in full else "") for v in values]
        lines += [f"Effect of {option} on time per step (ms), at one length:", ""]
        header = ["model", "mode", "dtype", "seq_len", *by, *(f"{option}={n}" for n in names), "largest / smallest"]
        lines += table(header, out)
    return lines + list(intervals) + figs("time_*.png", "memory_*.png", "flops_*.png", "ablation_*.png"), findings


def rate_note(r):
    """What a reader must know of a selection: nothing selected, or a chosen rate at the edge of its grid."""
    if len(r.candidates) < 2:
        return "one rate: nothing selected"
    return f"the {r.side} rate tried: the grid may not bracket the optimum" if r.edge else ""


def rate_phrase(r):
    """The selected rate(s), with the note in brackets."""
    note = rate_note(r)
    return ", ".join(f"{v:g}" for v in r.selected) + (f" ({note})" if note else "")


def rates(values):
    return ", ".join(f"{v:g}" for v in values)


def number(v, fmt=".3f"):
    return f"{v:{fmt}}" if pd.notna(v) else ""


OLDER_LM = (
    "This perplexity.csv predates learning-rate selection (it has no split column): every model trained at "
    "one rate and was evaluated on held-out text only, read here as test rows of that rate."
)
OLDER_RECALL = (
    "Accuracy on held-out sequences, mean ± std over seeds. This recall.csv predates learning-rate "
    "selection and chance_accuracy: one rate for every model, and its generator's chance was not "
    "recorded (it is not 1 / num_kv_pairs)."
)


def lm_section(run_dir, figs):
    ppl = analysis.load_csv(run_dir, "perplexity.csv")
    if ppl is None or summaries.reported(ppl).empty:
        curves = figs("lm_train_curves.png")
        return (["## Language modelling", "", *curves] if curves else []), []
    older = ppl.attrs.get("older")
    lines = [
        "## Language modelling",
        "",
        OLDER_LM
        if older
        else "Every bits/byte below is on the test split, from "
        "the trainings at each model's selected learning rate (the lowest validation bits/byte at the training "
        "length, first seed); validation rows only select the rate.",
        "",
    ]
    sel, findings = summaries.lr_selection(ppl), []
    lines += ["Learning-rate selection (validation bits/byte at the selected rate):", ""]
    lines += table(
        ["corpus", "model", "rates tried", "selected", "validation bits/byte", "note"],
        [
            (r.corpus, r.label, rates(r.candidates), rates(r.selected), number(r.val_bpb), rate_note(r))
            for r in sel.itertuples()
        ],
    )
    findings += [
        f"learning rate selected{on(corpus)}: " + ", ".join(f"{r.label} {rate_phrase(r)}" for r in g.itertuples())
        for corpus, g in sel.groupby("corpus", sort=False)
    ]
    bpb = summaries.bpb_table(ppl)
    lines += [
        "Test bits/byte at the training length (mean ± std over seeds), and the gaps of the mean to the floors:",
        "",
    ]
    lines += table(
        [
            "corpus",
            "model",
            "lr",
            "bits/byte",
            "seeds",
            "window floor",
            "gap to window floor",
            "entropy floor",
            "gap to entropy floor",
        ],
        [
            (
                r.corpus,
                r.label,
                r.lr,
                pm(r.mean, r.std, n=r.n),
                r.n,
                number(r.window_floor),
                number(r.window_gap, "+.3f"),
                number(r.floor),
                number(r.gap, "+.3f"),
            )
            for r in bpb.itertuples()
        ],
    )
    windows = bpb.dropna(subset=["window_floor"])
    if len(windows):
        T = int(windows["T"].min())
        lines += [
            f"Window floor: the least expected bits/byte any predictor can reach on the scored bytes of these "
            f"windows, with the context each window holds and knowing the window's phase in the synthetic "
            f"source's {summaries.SYNTHETIC_BLOCK_LEN}-byte blocks; it is the optimum only in that sense. "
            f"Knowing the phase is worth at most log2({summaries.SYNTHETIC_BLOCK_LEN})/T bits per byte "
            f"({summaries.phase_bound_bpb(T):.3f} at T = {T}): the best predictor that must infer the phase sits "
            "up to that much above it. The entropy floor is the source's infinite-context rate, which no window "
            "reaches.",
            "",
        ]
    for corpus, g in bpb.groupby("corpus", sort=False):
        r = g.loc[g["mean"].idxmin()]
        gaps = (
            (
                f"; {r.window_gap:+.3f} above the window floor {r.window_floor:.3f} (the optimum for these windows, "
                f"knowing the phase), {r.gap:+.3f} above the entropy floor {r.floor:.3f}"
            )
            if pd.notna(r.window_floor)
            else ""
        )
        findings.append(
            f"best bits/byte{on(corpus)}: {r.label} {pm(r['mean'], r['std'], n=r.n)} ({seeds(r.n)}, lr {r.lr}){gaps}"
        )
    deltas = summaries.lambda_deltas(ppl)
    if not deltas.empty:
        lines += [
            "lambda_imag_exp ablation, each option set at its selected rate, paired by seed (Δ = true − false; "
            "negative: the imaginary exponent helps):",
            "",
        ]
        lines += table(
            ["corpus", "model", "kernel_N", "true", "false", "Δ true − false", "pairs"],
            [
                (
                    r.corpus,
                    r.model,
                    r.kernel_N,
                    pm(r.true_mean, r.true_std, n=r.n),
                    pm(r.false_mean, r.false_std, n=r.n),
                    pm(r.delta_mean, r.delta_std, n=r.n),
                    r.n,
                )
                for r in deltas.itertuples()
            ],
        )
        findings += [
            f"lambda_imag_exp{on(r.corpus)}, {r.model} kernel_N={r.kernel_N}: Δ bits/byte (true − false) "
            f"{r.delta_mean:+.3f}" + (f" ± {r.delta_std:.3f}" if r.n > 1 else "") + f" over {seeds(r.n)}"
            for r in deltas.itertuples()
        ]
    kn = summaries.kernel_n_bpb(ppl)
    if not kn.empty:
        lines += ["Effect of kernel_N on test bits/byte (pooled over lambda_imag_exp and seeds):", ""]
        lines += table(
            ["corpus", "model", "kernel_N", "bits/byte", "trainings"],
            [(r.corpus, r.model, r.kernel_N, pm(r.mean, r.std, n=r.n), r.n) for r in kn.itertuples()],
        )
    return lines + length_lines(summaries.length_generalisation(ppl), findings, older) + figs("lm_*.png"), findings


def length_lines(gen, findings, older=False):
    """The length-generalisation table (a window-floor row per synthetic corpus); appends its findings."""
    ratios = sorted(gen.ratio.unique())
    if len(ratios) < 2:
        return []
    out = []
    for (corpus, label), g in gen.groupby(["corpus", "label"], sort=False):
        by = g.set_index("ratio")
        change = by["mean"].iloc[-1] - by["mean"].iloc[0] if len(by) > 1 else float("nan")
        out.append((corpus, label, *(stat_at(by, x) for x in ratios), number(change, "+.3f")))
        if pd.notna(change):
            first, last = by.index[0], by.index[-1]
            floors = by.window_floor
            floor = (
                f" (window floor {floors[first]:.3f} -> {floors[last]:.3f})"
                if pd.notna(floors[first]) and pd.notna(floors[last])
                else ""
            )
            findings.append(
                f"length generalisation{on(corpus)}, {label}: bits/byte {by.at[first, 'mean']:.3f} "
                f"at {first:g}× -> {by.at[last, 'mean']:.3f} at {last:g}×{floor}"
            )
    for corpus, g in gen.dropna(subset=["window_floor"]).groupby("corpus", sort=False):
        floors = g.groupby("ratio").window_floor.max()
        out.append(
            (
                corpus,
                "window floor",
                *(number(floors.get(x)) for x in ratios),
                number(floors.iloc[-1] - floors.iloc[0], "+.3f"),
            )
        )
    how = (
        "each multiple scored its own windows, the older protocol"
        if older
        else "the same target bytes at every multiple, only the context grows"
    )
    return [
        f"Length generalisation: test bits/byte when evaluated at a multiple of the training length ({how}):",
        "",
        *table(["corpus", "model", *(f"{x:g}×" for x in ratios), "change 1× → longest"], out),
    ]


def versus_chance(r):
    """Accuracy against chance in words the numbers support."""
    if pd.isna(r.chance):
        return "chance not recorded"
    within = r.n > 1 and abs(r.mean - r.chance) <= r.std
    return f"{r.ratio:.{2 if r.ratio < 10 else 1}f}× chance" + (", within one std of chance" if within else "")


def recall_section(run_dir, figs):
    df = analysis.load_csv(run_dir, "recall.csv")
    if df is None or ok(df).empty:
        return [], []
    stats = summaries.recall_stats(df)
    if stats.empty:
        return ["## Associative recall", "", "No ok training at a selected rate.", ""], []
    rows = [
        (
            r.label,
            tokens(r.seq_len),
            number(r.chance, ".4g"),
            pm(r.mean, r.std, n=r.n),
            r.n,
            versus_chance(r),
            rates(r.selected),
            rates(r.candidates),
            rate_note(r),
        )
        for r in stats.itertuples()
    ]
    findings = [
        f"recall at seq_len {tokens(length)}"
        + (f" (chance {g.chance.iloc[0]:.4g})" if g.chance.notna().all() else "")
        + ": "
        + ", ".join(f"{r.label} {pm(r.mean, r.std, n=r.n)} ({versus_chance(r)})" for r in g.itertuples())
        for length, g in stats.groupby("seq_len", sort=False)
    ]
    for label, g in stats.groupby("label", sort=False):
        phrases = [rate_phrase(r) for r in g.itertuples()]
        findings.append(
            f"recall learning rate, {label}: "
            + (
                f"{phrases[0]} at every seq_len"
                if len(set(phrases)) == 1
                else ", ".join(f"{p} at seq_len {tokens(L)}" for p, L in zip(phrases, g.seq_len, strict=True))
            )
        )
    intro = (
        OLDER_RECALL
        if df.attrs.get("older")
        else "Accuracy on the test draw at each model's selected learning "
        "rate (the best accuracy on a validation draw, first seed), mean ± std over seeds, beside chance "
        "(answering with a random one of the sequence's values: 1 / num_kv_pairs):"
    )
    lines = ["## Associative recall", "", intro, ""]
    header = ["model", "seq_len", "chance", "accuracy", "seeds", "against chance", "lr", "rates tried", "note"]
    return lines + table(header, rows) + figs("recall.png"), findings


def ops_section(run_dir, figs):
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


def decode_section(run_dir, figs):
    df = analysis.load_csv(run_dir, "decode.csv")
    if df is None or ok(df).empty:
        return [], []
    speed, lines, findings = summaries.decode_speedup(df), ["## Decoding", ""], []
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
            findings.append(
                f"decode {model}: {method} {r.speedup:.1f}× faster per token than reforward "
                f"at prompt_len {tokens(r.prompt_len)}"
            )
    return lines + figs("decode.png"), findings


def numerics_section(run_dir, figs):
    df = analysis.load_csv(run_dir, "numerics.csv")
    if df is None or ok(df).empty:
        return [], []
    worst = summaries.numerics_worst(df)
    lines = ["## Numerics", "", "Worst relative error against the reference, per dtype:", ""]
    lines += table(
        ["dtype", "error", "worst", "model", "seq_len"],
        [(r.dtype, r.error, f"{r.value:.2e}", r.model, tokens(r.seq_len)) for r in worst.itertuples()],
    )
    findings = [
        f"numerics {r.dtype}: worst {r.error} {r.value:.2e} ({r.model}, seq_len {tokens(r.seq_len)})"
        for r in worst.itertuples()
    ]
    return lines + figs("numerics.png"), findings


# In REPORT.md's order; each is section(run_dir, figs), figs(*patterns) giving the Markdown images of the
# figures that match, and returns (Markdown lines, findings), empty when there is nothing to report.
SECTIONS = (scaling_section, lm_section, recall_section, ops_section, decode_section, numerics_section)
