"""Task bodies for tests/test_executor.py, imported by Ray workers from the project's working_dir."""

import os


def echo(value):
    return value


def fail():
    raise ValueError("planted")


def die(value):
    os._exit(1)  # the worker process ends without a word, as a segfault or the OOM killer would end it


def sleep_then_echo(value, seconds):
    import time

    time.sleep(seconds)
    return value
