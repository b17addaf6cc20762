"""REPORT.md's sections on what the models learn and how exactly they compute (pandas, no matplotlib, no torch):
language modelling (learning-rate selection, bits/byte against the floors, the lambda_imag_exp and kernel_N
ablations, length generalisation), associative recall and numerics. Each section returns (Markdown lines,
findings), the findings being the one-line facts REPORT.md lists first."""

import pandas as pd

from bench import analysis
from bench.analysis import ok, quality, summaries
from bench.report.markdown import ci, format_float, on, rates, seeds, stat_at, table, tokens
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
    "Accuracy on held-out sequences, mean and 95% interval over seeds. This recall.csv predates learning-rate "
    "selection and the key-blind floor and ceiling: one rate for every model, and what key-blind answers score "
    "was not recorded (it is not 1 / num_kv_pairs)."
)
INTERVALS = "Intervals are 95% over seeds, Student's t on the seeds' values (n - 1 degrees of freedom; one seed: none)"


def ranking(items, apart, *, order=" < "):
    """Items (label, mean, low, high) in order, best first, with their intervals, then which pairs separate (a
    before b when apart(a, b)) and which do not: a ranking only where the intervals support one."""
    out = ", ".join(f"{label} {ci(mean, low, high)}" for label, mean, low, high in items)
    ahead, level = [], []
    for i, a in enumerate(items):
        behind = [b[0] for b in items[i + 1 :] if apart(a, b)]
        ahead += [f"{a[0]}{order}{', '.join(behind)}"] if behind else []
        level += [f"{a[0]} ≈ {b[0]}" for b in items[i + 1 :] if not apart(a, b)]
    return out + "".join(
        f"; {name}: {'; '.join(p)}" for name, p in (("separated", ahead), ("not separated", level)) if p
    )


def lm_ranking(g):
    """An LmGroup's models by mean bits/byte, neighbours separated where their paired difference excludes 0."""
    stats = {label: quality.seed_interval(g.by_seed[label].to_numpy()) for label, _ in g.labels}
    items = sorted(((label, *stats[label][:3]) for label, _ in g.labels), key=lambda i: i[1])
    return ranking(items, lambda a, b: quality.excludes_zero(quality.paired(g.by_seed[a[0]], g.by_seed[b[0]])))


def diff_lines(ppl, findings):
    """The paired differences of the models of each LmGroup, and a finding per group ranking them."""
    rows = []
    for g in quality.lm_groups(ppl):
        if len(g.labels) < 2:
            continue
        for i, (a, _) in enumerate(g.labels):
            for b, _ in g.labels[i + 1 :]:
                stats = quality.paired(g.by_seed[a], g.by_seed[b])
                lower = a if stats[0] < 0 else b
                verdict = f"{lower} lower" if quality.excludes_zero(stats) else "not separated"
                rows.append((g.corpus, a, b, ci(*stats[:3], digits=4), stats[3], verdict))
        findings.append(
            f"bits/byte ranking{on(g.corpus)} at seq_len {tokens(g.seq_len)} (lower first; separated where the "
            f"paired difference's 95% interval excludes 0): {lm_ranking(g)}"
        )
    if not rows:
        return []
    return [
        "Paired differences of test bits/byte at the training length (model − other, the seeds both trained; 95% "
        "interval: Student's t on the differences), a model lower only where the interval excludes 0:",
        "",
        *table(["corpus", "model", "other", "Δ bits/byte", "seeds", "verdict"], rows),
    ]


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
        "length, first seed, over the grid and any rate tried past its edge); validation rows only select the rate. "
        + INTERVALS
        + ".",
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
        "Test bits/byte at the training length (mean and 95% interval over seeds), and the gaps of the mean to the "
        "floors:",
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
                ci(r.mean, r.ci_low, r.ci_high),
                r.n,
                format_float(r.window_floor),
                format_float(r.window_gap, "+.3f"),
                format_float(r.floor),
                format_float(r.gap, "+.3f"),
            )
            for r in bpb.itertuples()
        ],
    )
    lines += diff_lines(ppl, findings)
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
            f"lowest mean bits/byte{on(corpus)}: {r.label} {ci(r['mean'], r.ci_low, r.ci_high)} "
            f"({seeds(r.n)}, lr {r.lr}){gaps}"
        )
    deltas = summaries.lambda_deltas(ppl)
    if not deltas.empty:
        lines += [
            "lambda_imag_exp ablation, each option set at its selected rate, paired by seed (Δ = true − false; "
            "negative: the imaginary exponent helps; 95% intervals over seeds):",
            "",
        ]
        lines += table(
            ["corpus", "model", "kernel_N", "true", "false", "Δ true − false", "pairs"],
            [
                (
                    r.corpus,
                    r.model,
                    r.kernel_N,
                    ci(r.true_mean, r.true_low, r.true_high),
                    ci(r.false_mean, r.false_low, r.false_high),
                    ci(r.delta_mean, r.delta_low, r.delta_high),
                    r.n,
                )
                for r in deltas.itertuples()
            ],
        )
        findings += [
            f"lambda_imag_exp{on(r.corpus)}, {r.model} kernel_N={r.kernel_N}: Δ bits/byte (true − false) "
            f"{r.delta_mean:+.3f}"
            + (f" ({r.delta_low:+.3f}..{r.delta_high:+.3f})" if r.n > 1 else "")
            + f" over {seeds(r.n)}"
            for r in deltas.itertuples()
        ]
    kn = summaries.kernel_n_bpb(ppl)
    if not kn.empty:
        lines += ["Effect of kernel_N on test bits/byte (pooled over lambda_imag_exp and seeds, 95% interval):", ""]
        lines += table(
            ["corpus", "model", "kernel_N", "bits/byte", "trainings"],
            [(r.corpus, r.model, r.kernel_N, ci(r.mean, r.ci_low, r.ci_high), r.n) for r in kn.itertuples()],
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


def versus_key_blind(r):
    """Accuracy against what key-blind answers score, in words the interval supports (the mean with one seed)."""
    if pd.isna(r.ceiling):
        return "ceiling not recorded"
    low, high = (r.mean, r.mean) if pd.isna(r.ci_low) else (r.ci_low, r.ci_high)
    if low > r.ceiling:
        return "above the key-blind ceiling"
    return "below the key-blind ceiling" if high < r.ceiling else "not separated from the key-blind ceiling"


def cell_text(r):
    """A recall cell in words: seq_len, pairs, width and vocabulary where recorded."""
    parts = [f"seq_len {tokens(r.seq_len)}"]
    parts += [f"{int(r.num_kv_pairs)} pairs"] if pd.notna(getattr(r, "num_kv_pairs", None)) else []
    parts += [f"dim {int(r.dim)}"] if pd.notna(getattr(r, "dim", None)) else []
    return ", ".join(parts + ([f"vocab {int(r.vocab):,}"] if pd.notna(getattr(r, "vocab", None)) else []))


def recall_ranking(g):
    """A recall cell's models by mean accuracy, best first, neighbours apart where their intervals separate."""
    items = sorted(((r.label, r.mean, r.ci_low, r.ci_high) for r in g.itertuples()), key=lambda i: -i[1])
    return ranking(items, lambda a, b: quality.separated(a[2:], b[2:]), order=" > ")


def recall_section(run_dir, figs, found):
    df = analysis.load_csv(run_dir, "recall.csv")
    if df is None or ok(df).empty:
        return [], []
    stats = summaries.recall_stats(df)
    if stats.empty:
        return ["## Associative recall", "", "No ok training at a selected rate.", ""], []
    cell = [c for c in summaries.RECALL_CELL if c in stats.columns]
    rows = [
        (
            r.label,
            cell_text(r),
            format_float(r.floor, ".4g"),
            format_float(r.ceiling, ".3f"),
            ci(r.mean, r.ci_low, r.ci_high),
            r.n,
            versus_key_blind(r),
            rates(r.selected),
            rates(r.candidates),
            rate_note(r),
        )
        for r in stats.itertuples()
    ]
    findings = []
    for _, g in stats.groupby(cell, sort=False):
        first = g.iloc[0]
        blind = (
            f" (floor {first.floor:.4g}, key-blind ceiling {first.ceiling:.3f}"
            + (
                f", {first.key_collision_rate:.1%} of keys repeated as filler"
                if pd.notna(first.key_collision_rate)
                else ""
            )
            + ")"
            if pd.notna(first.ceiling)
            else ""
        )
        findings.append(
            f"recall at {cell_text(first)}{blind}, best first (separated where the 95% intervals do not "
            f"overlap): {recall_ranking(g)}"
        )
    for label, g in stats.groupby("label", sort=False):
        phrases = [rate_phrase(r) for r in g.itertuples()]
        findings.append(
            f"recall learning rate, {label}: "
            + (
                f"{phrases[0]} at every cell"
                if len(set(phrases)) == 1
                else ", ".join(f"{p} at {cell_text(r)}" for p, r in zip(phrases, g.itertuples(), strict=True))
            )
        )
    unrecorded = (
        " The key-blind floor and ceiling were not recorded in this recall.csv (a run from before they existed)."
        if stats.ceiling.isna().all()
        else ""
    )
    intro = (
        OLDER_RECALL
        if df.attrs.get("older")
        else "Accuracy on the test draw at each model's selected learning rate (the best accuracy on a validation "
        "draw, first seed), mean and 95% interval over seeds, beside what answers blind to the keys score: the "
        "floor (a random value token, 1 / the number of value tokens) and the ceiling (the best rule that answers "
        "the j-th query with the value of one fixed pair rank, by simulating the generator; 1 / num_kv_pairs is "
        "neither). " + INTERVALS + ", clipped to [0, 1]." + unrecorded
    )
    lines = ["## Associative recall", "", intro, ""]
    header = ["model", "cell", "floor", "ceiling", "accuracy", "seeds", "against the ceiling", "lr", "rates tried"]
    return lines + table([*header, "note"], rows) + figs("recall.png"), findings


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
