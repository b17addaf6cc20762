"""REPORT.md's sections on what the models learn and how exactly they compute (pandas, no matplotlib, no torch):
language modelling (learning-rate selection, bits/byte against the floors, the lambda_imag_exp and kernel_N
ablations, length generalisation), associative recall and numerics. Each section returns (Markdown lines,
findings), the findings being the one-line facts REPORT.md lists first."""

import pandas as pd

from bench import analysis
from bench.analysis import ok, summaries
from bench.report.markdown import format_float, on, pm, rates, seeds, stat_at, table, tokens
from bench.schema import SYNTHETIC_BLOCK_LEN


def rate_note(r):
    """What a reader must know of a selection: nothing selected, or a chosen rate at the edge of its grid."""
    if len(r.candidates) < 2:
        return "one rate: nothing selected"
    return f"the {r.side} rate tried: the grid may not bracket the optimum" if r.edge else ""


def rate_phrase(r):
    """The selected rate(s), with the note in brackets."""
    note = rate_note(r)
    return ", ".join(f"{v:g}" for v in r.selected) + (f" ({note})" if note else "")


OLDER_LM = (
    "This perplexity.csv predates learning-rate selection (it has no split column): every model trained at "
    "one rate and was evaluated on held-out text only, read here as test rows of that rate."
)


OLDER_RECALL = (
    "Accuracy on held-out sequences, mean ± std over seeds. This recall.csv predates learning-rate "
    "selection and chance_accuracy: one rate for every model, and its generator's chance was not "
    "recorded (it is not 1 / num_kv_pairs)."
)


def lm_section(run_dir, figs, found):
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
            (r.corpus, r.label, rates(r.candidates), rates(r.selected), format_float(r.val_bpb), rate_note(r))
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
                format_float(r.window_floor),
                format_float(r.window_gap, "+.3f"),
                format_float(r.floor),
                format_float(r.gap, "+.3f"),
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
            f"source's {SYNTHETIC_BLOCK_LEN}-byte blocks; it is the optimum only in that sense. "
            f"Knowing the phase is worth at most log2({SYNTHETIC_BLOCK_LEN})/T bits per byte "
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
        out.append((corpus, label, *(stat_at(by, x) for x in ratios), format_float(change, "+.3f")))
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
                *(format_float(floors.get(x)) for x in ratios),
                format_float(floors.iloc[-1] - floors.iloc[0], "+.3f"),
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


def recall_section(run_dir, figs, found):
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
            format_float(r.chance, ".4g"),
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


def numerics_section(run_dir, figs, found):
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
