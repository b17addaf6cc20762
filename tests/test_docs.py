"""The documentation against the code: README.md and docs/*.md say nothing the code does not do.

- The column tables of docs/suites.md are `bench.schema.markdown(name)`, one block per CSV between
  `<!-- schema:NAME -->` and `<!-- /schema -->` (regenerate with `python -m bench.schema`).
- Every `python -m ...`, `python run_all.py ...` and `python3 bootstrap.py ...` line in a code block is checked.
  Each is PARSED: its module imports and `make_parser().parse_args(argv)` accepts its flags (an unknown flag
  raises bench.usage.UsageError). One that finishes in seconds on a CPU (`--list`, `python -m bench.schema`,
  the read side on the committed CPU reference) is also RUN in-process through the module's `main(argv)`; one
  that takes longer (`--preset smoke`, figures) is RUN under the `slow` marker; any other (CUDA, minutes,
  network) is only parsed.
- Placeholders, when run: `results/<run_id>` (and `results/baselines/cpu-quick` itself) is a fresh copy of the
  committed `results/baselines/cpu-quick`, and every `--out DIR` is a directory under tmp_path, so a run writes
  nothing into the repository.
"""

import csv
import importlib
import importlib.util
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench import schema
from bench.usage import Parser

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PAGES = (README, ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md")))
BASELINE = ROOT / "results" / "baselines" / "cpu-quick"
SCRIPTS = {"run_all.py": "run_all", "bootstrap.py": "bootstrap"}
TOOLS = ("pytest", "ruff")  # third-party modules: importable, flags known (pytest's) or a known subcommand (ruff's)
NO_ARGS = ("bench.schema",)  # commands that take no arguments, hence no parser
# seconds on the committed run
READ_SIDE = ("bench.schema", "bench.report", "bench.analysis", "bench.regress")
COMMAND_LINE = re.compile(r"\s*(?:[A-Z_][A-Z0-9_]*=\S*\s+)*(?:python3?|\.venv/bin/python)\s")
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
SCHEMA_BLOCK = re.compile(r"^<!-- schema:(\S+) -->\n(.*?)^<!-- /schema -->$", re.S | re.M)
LINK = re.compile(r"\]\(([^)\s#]+)(?:#[^)]*)?\)")


@dataclass(frozen=True)
class Command:
    where: str  # page:line
    module: str  # bench.scaling, run_all, bootstrap, pytest, ruff
    argv: tuple

    @property
    def how(self):
        """run (seconds), slow (a minute or so), or parse (CUDA, minutes, network)."""
        if self.module in READ_SIDE or "--list" in self.argv:
            return "run"
        if "smoke" in self.argv and self.argv[self.argv.index("smoke") - 1] == "--preset":
            return "slow"
        if self.module == "bench.plots" and "--out" in self.argv:  # without --out it writes into plots/
            return "slow"
        return "parse"

    def __str__(self):
        return f"{self.where} {self.module} {shlex.join(self.argv)}".strip()


def commands():
    found = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for block in FENCE.finditer(text):
            first = text.count("\n", 0, block.start(1)) + 1
            for offset, line in enumerate(block.group(1).replace("\\\n", " ").splitlines()):
                if not COMMAND_LINE.match(line):
                    continue
                words = shlex.split(line, comments=True)
                while re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", words[0]):  # VAR=value before the command
                    words.pop(0)
                where = f"{page.relative_to(ROOT)}:{first + offset}"
                if words[1] == "-m":
                    found.append(Command(where, words[2], tuple(words[3:])))
                else:
                    found.append(Command(where, SCRIPTS.get(words[1], words[1]), tuple(words[2:])))
    return found


COMMANDS = commands()


def test_readme_is_a_front_door():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; the reference belongs in docs/"


def test_links_resolve():
    broken = [
        f"{page.relative_to(ROOT)}: {target}"
        for page in PAGES
        for target in LINK.findall(page.read_text(encoding="utf-8"))
        if "://" not in target and not (page.parent / target).exists()
    ]
    assert not broken


def test_commands_are_found():
    """The extraction works, and every command names a module this test knows how to check."""
    assert len(COMMANDS) >= 30, [str(c) for c in COMMANDS]
    known = ("run_all", "bootstrap", *TOOLS)
    assert all(c.module.startswith("bench.") or c.module in known for c in COMMANDS), [str(c) for c in COMMANDS]
    assert {c.how for c in COMMANDS} == {"run", "slow", "parse"}


# --- the column tables -------------------------------------------------------------------------------------


def schema_blocks():
    return SCHEMA_BLOCK.findall((ROOT / "docs" / "suites.md").read_text(encoding="utf-8"))


def test_every_csv_has_one_column_table():
    names = [name for name, _ in schema_blocks()]
    assert sorted(names) == sorted(schema.TABLES), "docs/suites.md needs one schema block per CSV of bench.schema"


@pytest.mark.parametrize("name", schema.TABLES)
def test_column_table_is_generated(name):
    blocks = dict(schema_blocks())
    assert name in blocks, f"docs/suites.md has no <!-- schema:{name} --> block"
    assert blocks[name].strip("\n") == schema.markdown(name).strip("\n"), (
        f"docs/suites.md's {name} table differs from bench.schema: paste `python -m bench.schema`'s block"
    )


# --- every command parses ----------------------------------------------------------------------------------


def check_parses(command, pytestconfig):
    if command.module == "bootstrap":
        bootstrap = importlib.import_module("bootstrap")
        assert command.argv and command.argv[0] in bootstrap.COMMANDS, f"bootstrap.py takes {list(bootstrap.COMMANDS)}"
        inner = "run_all" if command.argv[0] == "run" else "pytest"  # options after run/test go to run_all/pytest
        return check_parses(Command(command.where, inner, command.argv[1:]), pytestconfig)
    if command.module == "pytest":  # this session's own parser knows every option, the plugins' included
        args, unknown = pytestconfig._parser.parse_known_and_unknown_args(list(command.argv))
        assert not unknown, f"pytest does not take {unknown}"
        missing = [path for path in args.file_or_dir if not (ROOT / path).exists()]
        assert not missing, f"no such test path: {missing}"
        return None
    if command.module == "ruff":
        assert importlib.util.find_spec("ruff"), "ruff is not installed (requirements.txt pins it)"
        assert command.argv[:1] in (("check",), ("format",)), command.argv
        return None
    module = entry_point(command.module)
    if command.module in NO_ARGS:
        assert not command.argv, f"{command.module} takes no arguments"
        return None
    parser = module.make_parser()
    assert isinstance(parser, Parser), f"{command.module}.make_parser() should return a bench.usage.Parser"
    return parser.parse_args(list(command.argv))  # UsageError on an unknown flag or a missing argument


@pytest.mark.parametrize("command", COMMANDS, ids=str)
def test_command_parses(command, pytestconfig):
    check_parses(command, pytestconfig)


# --- the quick ones run ------------------------------------------------------------------------------------


def substitute(argv, tmp_path):
    """results/<run_id>, and the committed CPU reference named as itself, -> a copy of that reference; --out DIR ->
    a directory under tmp_path. So no documented command writes into the repository."""
    run = tmp_path / "run"
    out = []
    for i, word in enumerate(argv):
        if "<run_id>" in word or word.rstrip("/") == str(BASELINE.relative_to(ROOT)):
            if not run.exists():  # without its REPORT.md: what a command writes there is then plain to see
                shutil.copytree(BASELINE, run, ignore=shutil.ignore_patterns("REPORT.md"))
            word = str(run)
        elif i and argv[i - 1] == "--out":
            word = str(tmp_path / "out" / Path(word).name)
        out.append(word)
    return out


def entry_point(name):
    """Where the main() of `python -m name` lives: the module, or else a package's __main__."""
    module = importlib.import_module(name)
    if not hasattr(module, "main") and hasattr(module, "__path__") and importlib.util.find_spec(f"{name}.__main__"):
        return importlib.import_module(f"{name}.__main__")
    return module


def execute(module_name, argv, capsys):
    """The command's exit code, stdout and stderr: in-process through main(argv), else as `python -m`."""
    module = entry_point(module_name)
    if hasattr(module, "main"):
        code = module.main(argv)
        captured = capsys.readouterr()
        return code, captured.out, captured.err
    done = subprocess.run([sys.executable, "-m", module_name, *argv], cwd=ROOT, capture_output=True, text=True)
    return done.returncode, done.stdout, done.stderr


def header(path):
    with open(path, newline="", encoding="utf-8") as f:
        return tuple(next(csv.reader(f)))


def statuses(path):
    """The statuses of the rows; `ok` for every row of a CSV without a status (a training's loss curve)."""
    with open(path, newline="", encoding="utf-8") as f:
        return {row.get("status", "ok") for row in csv.DictReader(f)}


def check_output(command, argv, out, err, tmp_path):
    """Something about what the command printed or wrote, beyond its exit code."""
    out_dir = Path(argv[argv.index("--out") + 1]) if "--out" in argv else None
    if "--list" in argv:
        lines = out.splitlines()
        assert lines and all("model=" in line for line in lines), out
        assert f"{len(lines)} cells" in err
    elif command.module == "bench.schema":
        assert out == "\n".join(schema.markdown(name) for name in schema.TABLES)
    elif command.module == "bench.regress" and "--spread" in argv:  # the GPU reference's two passes, docs/gpu.md
        assert "largest 2.8%" in out.splitlines()[-1] and "tolerance 8%" in out.splitlines()[-1], out
    elif command.module == "bench.regress":
        assert " 0 regressions" in out.splitlines()[-1], out  # the reference against its own copy
    elif command.module == "bench.report":
        report = tmp_path / "run" / "REPORT.md"
        assert out.strip() == str(report)
        assert report.read_text(encoding="utf-8").startswith("# GSS Bench report")
    elif command.module == "bench.analysis":
        assert header(tmp_path / "run" / "findings.csv") == schema.TABLES["findings.csv"].columns
        assert any(re.match(r"crossover +fwd", line) and " gss " in line for line in out.splitlines()), out
    elif command.module == "bench.plots":
        assert len(list(out_dir.glob("*.png"))) >= 10, sorted(out_dir.iterdir())
        assert (out_dir / "REPORT.md").exists()
        assert not (tmp_path / "run" / "REPORT.md").exists(), "rendering with --out leaves the run directory untouched"
    else:  # a smoke run: every CSV of the suite(s), with the schema's header and measured rows
        suite = command.module.removeprefix("bench.")
        tables = [t for t in schema.TABLES.values() if command.module == "run_all" or t.suite == suite]
        for table in tables:
            path = out_dir / table.name
            assert header(path) == table.columns, path
            assert "ok" in statuses(path), path
        if command.module == "run_all":
            assert (out_dir / "REPORT.md").exists()


def run_and_check(command, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    argv = substitute(list(command.argv), tmp_path)
    code, out, err = execute(command.module, argv, capsys)
    assert code == 0, f"{command} exited {code}: {err[-2000:]}"
    check_output(command, argv, out, err, tmp_path)


@pytest.mark.parametrize("command", [c for c in COMMANDS if c.how == "run"], ids=str)
def test_command_runs(command, tmp_path, capsys, monkeypatch):
    run_and_check(command, tmp_path, capsys, monkeypatch)


@pytest.mark.slow
@pytest.mark.parametrize("command", [c for c in COMMANDS if c.how == "slow"], ids=str)
def test_slow_command_runs(command, tmp_path, capsys, monkeypatch):
    run_and_check(command, tmp_path, capsys, monkeypatch)
