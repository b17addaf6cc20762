"""Bad input a user can cause, in one place (torch-free): the error, the one argument parser, and the one line
on stderr with exit code 2 that every command prints for it."""

import argparse
import sys


class UsageError(ValueError):
    """Bad input a user can cause: the command prints one line and exits 2."""


class Parser(argparse.ArgumentParser):
    """Every command's argument parser: an error raises UsageError (no usage dump), which main() turns into
    `fail()`; `make_parser()` in each command module returns one, so the documentation's commands are checked."""

    def error(self, message):
        raise UsageError(message)


def fail(message):
    """The one error line on stderr; returns the exit code 2."""
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr)
    return 2
