"""GSS Bench's measuring and reporting code, in floors: a module imports only from the floors below it.

    top        bench/ab/                    two revisions' models/ timed side by side in paired rounds: the A/B gate
               bench/gpu_steps.py           the GPU command's steps beside the suites (limits once, the repeat
                                            pass's cells, bench.ab.power's A/A and plant, the KV-cache checks)
               run_all.py                   preset -> every suite -> CSVs, figures, REPORT.md, the gate
    suites     bench/scaling/               layer cells -> scaling.csv (interleaved groups, crossover refinement)
               bench/perplexity/            trainings and MQAR recall, with their corpora, synthetic source and loop
               bench/profiling.py, decode.py, numerics.py
                                            a spec in, rows out; no suite imports another, only run_all imports one
    read side  bench/analysis/              rows -> findings with intervals (findings.csv), summaries, refine
               bench/report/                REPORT.md from a run's CSVs
               bench/plots/                 figures (the only matplotlib)
               bench/regress/               the gate: a run against a reference, verdicts
                                            torch-free: CSVs in, so any laptop re-makes them
    core       bench/core/                  the one way to time, weigh and count a step (timing, memory, flops),
                                            run a sweep's cells here or on Ray (sweep, executor), build a suite's
                                            cells and command line (config, cli), estimate device time, env.json;
                                            the GPU command's checks (cuda_checks, kv_checks: the KV-cache step)
    ground     models/                      the layers and LMs (knows nothing of bench)
               bench/columns.py, schema.py  what every column means; every CSV's columns and keys
               bench/usage.py, stats.py, floors.py, results.py
                                            bad input; intervals and noise; a step's roofline floor from the
                                            machine's limits; rows, CSV and env.json I/O (torch-free)

FLOORS below is that map as data, and tests/test_imports.py holds the code to it: a module may import a module
listed before it (floor by floor; within a floor, only an earlier one), never a suite unless it is run_all, and a
TORCH_FREE module nothing that imports torch. COMPAT lists old import paths kept for users (bench.timing,
bench.recall): each re-exports its new home and nothing imports it.
"""

FLOORS = {
    "ground": (
        "models",
        "bench.columns",
        "bench.schema",
        "bench.usage",
        "bench.stats",
        "bench.floors",
        "bench.results",
    ),
    "core": (
        "bench.core",
        "bench.core.env",
        "bench.core.timing",
        "bench.core.graphs",
        "bench.core.paired",
        "bench.core.memory",
        "bench.core.flops",
        "bench.core.stages",
        "bench.core.cuda_checks",
        "bench.core.config",
        "bench.core.limits",
        "bench.core.prepare",
        "bench.core.executor",
        "bench.core.sweep",
        "bench.core.kv_checks",
        "bench.core.cli",
        "bench.core.estimate",
    ),
    "read side": (
        "bench.analysis.refine",
        "bench.analysis.load",
        "bench.analysis",
        "bench.analysis.series",
        "bench.analysis.zoology",
        "bench.analysis.quality",
        "bench.analysis.roofline",
        "bench.analysis.findings",
        "bench.analysis.coverage",
        "bench.analysis.__main__",
        "bench.analysis.summaries",
        "bench.report",
        "bench.plots",
        "bench.regress.load",
        "bench.regress",
    ),
    "suites": ("bench.scaling", "bench.perplexity", "bench.profiling", "bench.decode", "bench.numerics"),
    "top": ("bench.ab", "bench.gpu_steps", "run_all", "bench.limits", "bench.timing", "bench.recall"),
}
IMPORT_ORDER = tuple(module for floor in FLOORS.values() for module in floor)
SUITES = FLOORS["suites"]
COMPAT = ("bench.timing", "bench.recall")
TORCH_FREE = (*(m for m in FLOORS["ground"] if m != "models"), *FLOORS["read side"])  # the ground but models
