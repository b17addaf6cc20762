"""GSS Bench's measuring and reporting code, in floors: a module imports only from the floors below it.

    floor 3  run_all.py            preset -> every suite -> CSVs, figures, REPORT.md, the gate
    floor 2  suites                bench.scaling, bench.perplexity, bench.profiling, bench.decode, bench.numerics:
                                   cells -> rows; no suite imports another, and only run_all imports a suite
             read side             bench.analysis < findings (< analysis's command, __main__) < summaries
                                   < report_sections < report < plots; regress_load < regress: CSVs -> findings (with
                                   intervals: findings.csv), figures, the gate; torch-free (plots alone: matplotlib)
    floor 1  ground                models/ (knows nothing of bench), then bench.schema, bench.usage, bench.stats,
                                   bench.results and bench.refine (torch-free), env, timing, memory, flops, cuda_checks,
                                   synthetic, data, recall, training, config, executor, sweep, cli, estimate

IMPORT_ORDER below is that map as data, and tests/test_imports.py holds the code to it: a module may import
a module listed before it (floor by floor; within a floor, only an earlier one), never a suite unless it is
run_all, and a TORCH_FREE module nothing that imports torch.
"""

FLOORS = {
    "ground": (
        "models",
        "bench.schema",
        "bench.usage",
        "bench.stats",
        "bench.results",
        "bench.refine",
        "bench.env",
        "bench.timing",
        "bench.memory",
        "bench.flops",
        "bench.cuda_checks",
        "bench.synthetic",
        "bench.data",
        "bench.recall",
        "bench.training",
        "bench.config",
        "bench.executor",
        "bench.sweep",
        "bench.cli",
        "bench.estimate",
    ),
    "suites": ("bench.scaling", "bench.perplexity", "bench.profiling", "bench.decode", "bench.numerics"),
    "read side": (
        "bench.analysis",
        "bench.findings",
        "bench.analysis.__main__",
        "bench.summaries",
        "bench.report_sections",
        "bench.report",
        "bench.plots",
        "bench.regress_load",
        "bench.regress",
    ),
    "top": ("run_all",),
}
IMPORT_ORDER = tuple(module for floor in FLOORS.values() for module in floor)
SUITES = FLOORS["suites"]
TORCH_FREE = ("bench.schema", "bench.usage", "bench.stats", "bench.results", "bench.refine", *FLOORS["read side"])
