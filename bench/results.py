"""Tidy result rows: crash-safe CSV append/resume, in-flight markers, shard merge.

A row is one line (newlines in values become spaces) written by one O_APPEND write, so a
SIGKILL leaves at worst an unterminated last line, which readers ignore and writers cut.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import secrets
import sys
import tempfile
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.schema import KEY_COLUMNS
from bench.usage import Parser, UsageError, fail

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_ROOT / "results"
ENV_FILE = "env.json"  # written by bench.core.env
DIED_ERROR = "process died in this cell"


class ResultsError(ValueError):
    """Bad results input or output (malformed file, duplicate cell, unwritable dir)."""


def format_value(v: Any) -> str:
    """The one value convention of every CSV: None/NaN -> "", bools lower-case, floats .6g."""
    if v is None:
        return ""
    if not isinstance(v, (str, bool, int, float)) and hasattr(v, "item"):
        v = v.item()  # numpy / torch scalar
    if isinstance(v, (str, os.PathLike)):
        return os.fspath(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.6g}"
    raise TypeError(f"cannot format {type(v).__name__} value {v!r} for a results CSV")


def _one_line(s: str) -> str:
    return s.replace("\r\n", " ").replace("\n", " ").replace("\r", " ")


def _csv_line(values: Sequence[str]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow([_one_line(v) for v in values])
    return buf.getvalue()


def _parse(path: Path, data: bytes) -> tuple[list[str], list[dict[str, str]]]:
    try:
        records = list(csv.reader(io.StringIO(data.decode("utf-8"))))
    except (UnicodeDecodeError, csv.Error) as e:
        raise ResultsError(f"{path}: malformed CSV: {e}") from e
    if not records:
        return [], []
    header = records[0]
    if not header or "" in header or len(set(header)) != len(header):
        raise ResultsError(f"{path}: malformed header {header}")
    rows = []
    for lineno, rec in enumerate(records[1:], start=2):
        if len(rec) != len(header):
            raise ResultsError(f"{path}: line {lineno} has {len(rec)} fields, header has {len(header)}")
        rows.append(dict(zip(header, rec)))
    return header, rows


def _check_header(path: Path, header: Sequence[str], columns: Sequence[str] | None) -> None:
    if header and columns is not None and list(header) != list(columns):
        raise ResultsError(f"{path}: header {list(header)} does not match expected columns {list(columns)}")


def _read(path: Path, columns: Sequence[str] | None = None) -> tuple[list[str], list[dict[str, str]]]:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ResultsError(f"cannot read {path}: {e.strerror or e}") from e
    header, rows = _parse(path, data[: data.rfind(b"\n") + 1])
    _check_header(path, header, columns)
    return header, rows


def read_table(path: str | os.PathLike) -> tuple[list[str], list[dict[str, str]]]:
    """(header, complete rows as strings) of a results CSV (an empty header for an empty file); a torn last line
    is ignored."""
    return _read(Path(path))


def read_rows(path: str | os.PathLike, *, columns: Sequence[str] | None = None) -> list[dict[str, str]]:
    """Complete rows of a results CSV as strings; a torn last line is ignored."""
    return _read(Path(path), columns)[1]


class RowWriter:
    """Appends one row at a time with a single O_APPEND write plus fsync."""

    def __init__(self, path: str | os.PathLike, columns: Sequence[str]):
        self.path = Path(path)
        self.columns = tuple(columns)
        if not self.columns or len(set(self.columns)) != len(self.columns):
            raise ValueError(f"{self.path}: columns must be non-empty and unique: {list(self.columns)}")
        data = self.path.read_bytes() if self.path.exists() else b""
        keep = data[: data.rfind(b"\n") + 1]
        header, _ = _parse(self.path, keep)
        _check_header(self.path, header, self.columns)  # before touching the file
        self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        if len(keep) < len(data):
            os.ftruncate(self._fd, len(keep))
            os.fsync(self._fd)
        if not header:
            _write_line(self._fd, _csv_line(self.columns))

    def append(self, row: Mapping[str, Any]) -> None:
        if unknown := [k for k in row if k not in self.columns]:
            raise ValueError(f"{self.path.name}: unknown columns {unknown}; known: {list(self.columns)}")
        if self._fd is None:
            raise ValueError(f"{self.path}: writer is closed")
        _write_line(self._fd, _csv_line([format_value(row.get(c)) for c in self.columns]))

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
        self._fd = None

    def __enter__(self) -> RowWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _write_line(fd: int, line: str) -> None:
    data = line.encode("utf-8")
    while data:  # one write, unless it comes back short (e.g. disk nearly full)
        data = data[os.write(fd, data) :]
    os.fsync(fd)


def cell_key(row: Mapping[str, Any], key_columns: Sequence[str]) -> tuple[str, ...]:
    """Key of one cell; a row read back from CSV and a fresh row give the same key."""
    return tuple(_one_line(format_value(row.get(c))) for c in key_columns)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """A temporary path beside `path` to write the whole file at, renamed to `path` when the block ends (removed if
    it raises): a reader sees the old file or the new, never a part."""
    fd, tmp = tempfile.mkstemp(dir=Path(path).parent, prefix=f".{Path(path).name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide results from other users
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write a whole file so that a reader sees the old text or the new, never a part (fsynced first)."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def read_env(run_dir: str | os.PathLike, *, strict: bool = False) -> dict[str, Any] | None:
    """The one reader of a run's env.json (bench.core.env writes it): its object, or None where the run has none.
    A malformed or unreadable one is None too, or, with `strict`, a ResultsError naming it."""
    path = Path(run_dir) / ENV_FILE
    if not path.exists():
        return None
    try:
        env = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(env, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as e:
        if strict:
            raise ResultsError(f"{path}: malformed env.json: {e}") from e
        return None
    return env


def _inflight_path(run_dir: str | os.PathLike, stem: str) -> Path:
    return Path(run_dir) / f"{stem}.inflight.json"


def mark_in_flight(run_dir: str | os.PathLike, key: Mapping[str, Any], *, stem: str) -> None:
    """Record the cell about to run, so a resume can tell which cell killed the process."""
    payload = {"key": dict(key), "pid": os.getpid(), "started_utc": datetime.now(UTC).isoformat(timespec="seconds")}
    atomic_write_text(_inflight_path(run_dir, stem), json.dumps(payload, default=format_value) + "\n")


def clear_in_flight(run_dir: str | os.PathLike, *, stem: str) -> None:
    _inflight_path(run_dir, stem).unlink(missing_ok=True)


def pending_in_flight(run_dir: str | os.PathLike, *, stem: str) -> dict[str, Any] | None:
    """The key of the cell that was running when the process died, or None."""
    path = _inflight_path(run_dir, stem)
    try:
        return dict(json.loads(path.read_text(encoding="utf-8"))["key"])
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as e:
        raise ResultsError(f"{path}: malformed in-flight marker: {e}") from e


@contextlib.contextmanager
def in_flight(run_dir: str | os.PathLike, key: Mapping[str, Any], *, stem: str):
    """Mark a cell as running; a process killed inside leaves the marker for --resume to find."""
    mark_in_flight(run_dir, key, stem=stem)
    try:
        yield
    except KeyboardInterrupt:  # the user stopped the run: --resume runs this cell again
        clear_in_flight(run_dir, stem=stem)
        raise
    clear_in_flight(run_dir, stem=stem)


def take_in_flight(run_dir: str | os.PathLike, *, stem: str) -> dict[str, Any] | None:
    """The pending cell's key (see pending_in_flight), removing its marker."""
    pending = pending_in_flight(run_dir, stem=stem)
    clear_in_flight(run_dir, stem=stem)
    return pending


def ensure_writable_dir(path: str | os.PathLike) -> Path:
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        raise ResultsError(f"cannot write to {path}: {e.strerror or e}") from e
    return path


def new_run_id() -> str:
    return f"{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def merge_runs(out_dir: str | os.PathLike, shard_dirs: Sequence[str | os.PathLike]) -> list[Path]:
    """Join the CSVs (and env.json) of shard run dirs into OUT_DIR; writes nothing on error."""
    out_dir, shards = Path(out_dir), [Path(d) for d in shard_dirs]
    if missing := [str(d) for d in shards if not d.is_dir()]:
        raise ResultsError(f"not a directory: {', '.join(missing)}")
    names = sorted({p.name for d in shards for p in d.glob("*.csv")})
    if not names:
        raise ResultsError(f"no .csv files in shard directories {[str(d) for d in shards]}")
    if unknown := [n for n in names if n not in KEY_COLUMNS]:
        raise ResultsError(f"no key columns known for {unknown} (known: {sorted(KEY_COLUMNS)})")
    outputs = {n: _merge_csv(n, shards, KEY_COLUMNS[n]) for n in names}
    outputs = {name: text for name, text in outputs.items() if text is not None}
    env = next((env for d in shards if (env := read_env(d, strict=True)) is not None), {})
    env["merged_from"] = [str(d) for d in shards]
    outputs[ENV_FILE] = json.dumps(env, indent=2, default=str) + "\n"
    if clash := [n for n in outputs if (out_dir / n).exists()]:  # never clobber (or merge into a shard)
        raise ResultsError(f"{out_dir}: already contains {', '.join(clash)}")
    ensure_writable_dir(out_dir)
    for name, text in outputs.items():
        atomic_write_text(out_dir / name, text)
    return [out_dir / n for n in outputs]


def _merge_csv(name: str, shards: Sequence[Path], key_cols: Sequence[str]) -> str | None:
    header, first, lines, seen = None, None, [], {}
    for path in (d / name for d in shards if (d / name).exists()):
        h, rows = _read(path)
        if not h:
            continue
        if header is None:
            header, first = h, path
            if missing := [c for c in key_cols if c not in header]:
                raise ResultsError(f"{path}: key columns {missing} missing from header")
        elif h != header:
            raise ResultsError(f"{path}: header differs from {first}")
        for row in rows:
            k = cell_key(row, key_cols)
            if k in seen:
                cell = ", ".join(f"{c}={v}" for c, v in zip(key_cols, k))
                raise ResultsError(f"duplicate cell ({cell}) in {seen[k]} and {path}")
            seen[k] = path
            lines.append(_csv_line([row[c] for c in header]))
    return None if header is None else _csv_line(header) + "".join(lines)


def make_parser() -> Parser:
    parser = Parser(prog="python -m bench.results", description="Results utilities.")
    sub = parser.add_subparsers(dest="command", required=True)
    merge = sub.add_parser("merge", help="join shard run directories OUT <- SHARD...")
    merge.add_argument("out")
    merge.add_argument("shards", nargs="+")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = make_parser().parse_args(argv)
        written = merge_runs(args.out, args.shards)
    except (UsageError, ResultsError, OSError) as e:
        return fail(e)
    print("\n".join(map(str, written)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
