"""The measuring core: the one way to time, weigh and count a step, run a sweep's cells (here or on Ray), and
build a suite's cells and command line."""
