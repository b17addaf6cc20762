"""REPORT.md's Roofline section (pandas, no matplotlib, no torch): the machine's measured limits, each model's
roofline fraction per mode at the longest common length (findings.csv's roofline_frac rows), the cells above
their roof, and each profiled stage's fraction of its own roof (bench.analysis.roofline)."""

from bench import analysis
from bench.analysis import roofline
from bench.floors import positive, rate
from bench.report.markdown import table, tokens
from bench.schema import OPTIONS


def limits_lines(limits):
    """One line of the limits: each dtype's matrix-product rate, the bandwidth, the launch floor on CUDA, and
    whether they were measured in the run or read from a file."""
    rates = ", ".join(
        f"{dtype} {roofline.rate_text(r)}" for dtype in limits["matmul_flops_per_s"] if (r := rate(limits, dtype))
    )
    launch = f"; kernel launch floor {limits['launch_s'] * 1e6:.3g} µs" if positive(limits.get("launch_s")) else ""
    if limits.get("source"):
        origin = f"read from `{limits['source']}` (`--limits`)"
    else:
        took = f" in {limits['seconds']:.1f} s" if positive(limits.get("seconds")) else ""
        threads = f", {limits['threads']} threads" if limits.get("threads") else ""
        origin = f"measured in this run (`python -m bench.limits`{took}{threads})"
    return [
        f"The machine's limits, {origin}: matrix product {rates}; copy bandwidth "
        f"{limits['bandwidth_bytes_per_s'] / 1e9:.3g} GB/s{launch}.",
        "",
    ]


def fraction_lines(cells):
    """The table of at_common_length's cells, and a finding per (mode, dtype)."""
    if not cells:
        return [], []
    rows = [
        (
            c["label"],
            c["mode"],
            c["dtype"],
            tokens(c["seq_len"]),
            f"{c['roofline_frac']:.3f}",
            "" if c["repeat_range"] is None else "{:.3f}..{:.3f}".format(*c["repeat_range"]),
            "" if c["binding"] is None else c["binding"][0],
            roofline.ms_text(c["floor_ms"]),
            roofline.ms_text(c["time_ms"]),
        )
        for c in cells
    ]
    lines = [
        "Each model's roofline fraction at the longest length every model of the mode and dtype ran (`floor_ms / "
        "time_ms`, findings.csv's roofline_frac rows): the step's floor is the longer of its counted FLOPs at the "
        "dtype's matrix-product rate (compute) and its minimum bytes at the copy bandwidth (memory). It compares "
        "one cell with limits measured once, so it has no interval; the repeats' column is the fraction over the "
        "order-statistic interval of the cell's median time, which leaves out the limits' own noise:",
        "",
        *table(
            ["model", "mode", "dtype", "seq_len", "roofline_frac", "over its repeats", "bound", "floor ms", "time ms"],
            rows,
        ),
    ]
    bullets = []
    for key in dict.fromkeys((c["mode"], c["dtype"], c["seq_len"]) for c in cells):
        each = ", ".join(
            f"{c['label']} {c['roofline_frac']:.2f}" for c in cells if (c["mode"], c["dtype"], c["seq_len"]) == key
        )
        bullets.append(f"{key[0]} {key[1]}, seq_len {tokens(key[2])}: roofline fraction {each}")
    return lines, bullets


def above_lines(df):
    """A flag line per cell whose roofline_frac exceeds roofline.ABOVE, and one finding naming how many."""
    above = roofline.above_roof(df)
    if above.empty:
        return [], []
    lines = []
    for r in above.itertuples():
        options = ", ".join(f"{o}={getattr(r, o)}" for o in OPTIONS if getattr(r, o, "") != "")
        where = f"{r.model} {r.mode} {r.dtype} seq_len {tokens(r.seq_len)}" + (f" ({options})" if options else "")
        lines.append(
            f"**Above its roof:** {where}: roofline_frac {r.roofline_frac:.3f} > {roofline.ABOVE}: a limit or a "
            "count is wrong."
        )
    cells = f"{len(above)} cell{'s' if len(above) != 1 else ''}"
    bullet = f"{cells} above {roofline.ABOVE} of the roofline: a limit or a count is wrong"
    return [*(f"- {line}" for line in lines), ""], [bullet]


def stage_lines(ops):
    """Per profiled cell, each stage's fraction of its binding roof (c: compute, m: memory) and the stage farthest
    from it, with its share of the step's time."""
    stages = roofline.stage_fractions(ops)
    if stages.empty:
        return []
    categories = list(dict.fromkeys(stages.category))
    rows = []
    for (model, mode, dtype, length), g in stages.groupby(["model", "mode", "dtype", "seq_len"], sort=False):
        by = g.set_index("category")
        far = by.fraction.idxmin()
        shown = [f"{by.fraction[c]:.3f} {by.binding[c][0]}" if c in by.index else "" for c in categories]
        share = f", {by.share[far]:.0%} of the step" if by.share[far] == by.share[far] else ""
        rows.append((model, mode, dtype, tokens(length), *shown, f"{far} ({by.fraction[far]:.3f}{share})"))
    return [
        "Each profiled stage's fraction of its own roof (op_breakdown.csv: the larger of peak_frac and "
        "bandwidth_frac; c: compute-bound, its FLOPs at the matrix-product rate; m: memory-bound, its minimum "
        "bytes at the copy bandwidth), and per cell the stage farthest from its roof:",
        "",
        *table(["model", "mode", "dtype", "seq_len", *categories, "farthest from its roof"], rows),
    ]


def roofline_section(run_dir, figs, found):
    """The limits, the roofline fractions at the longest common length, the cells above their roof, each stage's
    fraction of its roof, and roofline.png; nothing when the run has none of them."""
    df, limits = analysis.load_scaling(run_dir), roofline.limits_of(run_dir)
    fractions, bullets = fraction_lines(roofline.at_common_length(df, limits))
    flags, flagged = above_lines(df)
    stages = stage_lines(analysis.load_csv(run_dir, "op_breakdown.csv"))
    if not (limits or fractions or stages):
        return [], []
    lines = ["## Roofline", ""] + (limits_lines(limits) if limits else [])
    return lines + flags + fractions + stages + figs("roofline.png"), flagged + bullets
