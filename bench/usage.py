"""Bad input a user can cause, in one place (torch-free): the error, the one argument parser, the parsers of flag
values, and the one line on stderr with exit code 2 that every command prints for it."""

import argparse
import functools
import math
import sys
from pathlib import Path


class UsageError(ValueError):
    """Bad input a user can cause: the command prints one line and exits 2."""


class Parser(argparse.ArgumentParser):
    """Every command's argument parser: an error raises UsageError (no usage dump), which main() turns into
    `fail()`; `make_parser()` in each command module returns one, so the documentation's commands are checked.
    A flag's `type` converter (value_of, list_of) raises UsageError for a bad value, which reaches the caller in the
    converter's words: argparse would reword any ValueError as "invalid value"."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, allow_abbrev=False, **kwargs)  # --model is a typo, not --models

    def add_argument(self, *args, **kwargs):
        if (convert := kwargs.get("type")) is not None:
            kwargs["type"] = functools.wraps(convert)(functools.partial(_converted, convert))  # argparse names it
        return super().add_argument(*args, **kwargs)

    def parse_known_args(self, args=None, namespace=None):
        try:
            return super().parse_known_args(args, namespace)
        except _Refused as refused:
            raise refused.args[0] from None

    def error(self, message):
        raise UsageError(message)


class _Refused(Exception):
    """A converter's UsageError carried past argparse, which catches ValueError."""


def _converted(convert, text):
    try:
        return convert(text)
    except UsageError as error:
        raise _Refused(error) from None


def fail(message):
    """The one error line on stderr; returns the exit code 2."""
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr)
    return 2


def parse_list(text, name, convert):
    items = [item.strip() for item in str(text).split(",")]
    if not text or any(not item for item in items):
        raise UsageError(f"--{name} needs a comma-separated list, got {text!r}")
    return tuple(convert(item) for item in items)


def positive_int(text, name="value"):
    try:
        value = int(text)
    except (TypeError, ValueError):
        raise UsageError(f"--{name}: {text!r} is not an integer") from None
    if value <= 0:
        raise UsageError(f"--{name}: {value} is not positive")
    return value


def positive_number(text, name="value"):
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise UsageError(f"--{name}: {text!r} is not a number") from None
    if not 0 < value < math.inf:
        raise UsageError(f"--{name} must be a positive finite number, got {text}")
    return value


def boolean(text, name="value"):
    lowered = str(text).lower()
    if lowered not in ("true", "false"):
        raise UsageError(f"--{name}: {text!r} is not true or false")
    return lowered == "true"


def choice(text, name, valid):
    if text not in valid:
        raise UsageError(f"--{name}: unknown {name} {text!r}; valid: {', '.join(valid)}")
    return text


def one_of(valid, name):
    """A parser of one value (text, flag) -> text: one of `valid`, a `name` in the error ("unknown model 'x'")."""
    return lambda text, flag=None: choice(text, name, valid)


def value_of(parse, flag):
    """A flag's `type` converter: parse(text, flag), e.g. value_of(positive_int, "batch")."""
    return lambda text: parse(text, flag)


def list_of(parse, flag):
    """A flag's `type` converter of comma-separated text: a tuple of parse(item, flag)."""
    return lambda text: parse_list(text, flag, lambda item: parse(item, flag))


def parse_shard(text):
    """'I/N' -> (I, N) with 0 <= I < N."""
    try:
        index, count = (int(part) for part in str(text).split("/"))
    except ValueError:
        raise UsageError(f"--shard needs I/N (e.g. 0/4), got {text!r}") from None
    if count <= 0 or not 0 <= index < count:
        raise UsageError(f"--shard {text}: I must be in 0..N-1 with N >= 1")
    return index, count


def run_dir(text):
    """A run directory that exists, as a Path; otherwise the usage error every reader of runs gives."""
    path = Path(text)
    if not path.is_dir():
        raise UsageError(f"{text}: no such run directory")
    return path
