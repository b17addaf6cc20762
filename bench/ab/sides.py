"""The two sides of an A/B comparison: where each side's `models/` comes from (a git revision, exported into a
temporary directory, or a directory that holds one), and that package loaded under a name of its own, so that
both revisions' layers live in one process beside the harness's own `models` (models/ imports nothing outside
itself but by relative imports, so a package name is all that tells two revisions apart)."""

import contextlib
import importlib.util
import io
import itertools
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench.core.config import SWEPT_OPTIONS
from bench.core.prepare import prepare_cell
from bench.usage import UsageError

ROLES = ("base", "head")
TEMP_PREFIX = "gss-ab-"  # the temporary directory of a run's exports, removed when the run ends
_names = itertools.count()


class LoadError(Exception):
    """A side's models/ cannot be imported: the two sides cannot be compared."""


@dataclass(frozen=True)
class Source:
    """Where a side's models/ comes from: a commit of `repo`, or `directory` (which holds models/)."""

    role: str
    given: str  # as named on the command line ("working tree" for HEAD's default)
    commit: str | None = None
    directory: Path | None = None
    repo: Path | None = None

    def describe(self):
        """What env.json records of the side."""
        where = {"commit": self.commit} if self.commit else {"directory": str(self.directory)}
        return {"given": self.given, **where}


def _git(repo, *args):
    """git's stdout in `repo`, or None when it fails (not a checkout, unknown revision, no git)."""
    try:
        done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def resolve(text, role, repo):
    """The Source a command line names (None for HEAD: the working tree of `repo`, uncommitted changes included).
    A directory must hold models/; anything else is a revision of `repo`, which must be a git checkout. BASE
    cannot be the working tree. UsageError on bad input; nothing is written."""
    repo = Path(repo).resolve()
    if text is None:
        text, path = "working tree", repo
    else:
        path = Path(text)
        if not path.is_dir():
            return _revision(text, role, repo)
    if role == "base" and path.resolve() == repo:
        raise UsageError(f"BASE {text} is the working tree: name a revision or an exported tree (HEAD may be it)")
    if not (path / "models" / "__init__.py").is_file():
        raise UsageError(f"{text}: no models/ package in this directory")
    return Source(role, text, directory=path.resolve())


def _revision(text, role, repo):
    if _git(repo, "rev-parse", "--is-inside-work-tree") is None:
        raise UsageError(f"{text} is not a directory, and {repo} is not a git checkout in which to find a revision")
    commit = _git(repo, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{text}^{{commit}}")
    if commit is None:
        raise UsageError(f"{text}: neither a directory nor a revision of {repo}")
    commit = commit.decode().strip()
    if _git(repo, "cat-file", "-e", f"{commit}:models/__init__.py") is None:
        raise UsageError(f"{text} ({commit[:12]}) has no models/ package")
    return Source(role, text, commit=commit, repo=repo)


@dataclass(frozen=True)
class Side:
    """A side's models/ package, loaded: which cells it has, and their steps."""

    source: Source
    models: object  # the loaded package

    @property
    def role(self):
        return self.source.role

    def takes(self, cell):
        """Whether this revision has the cell's model and takes every option the cell sets (else: one-sided)."""
        if cell.model not in self.models.NAMES:
            return False
        taken = self.models.options_of(cell.model)
        return all(getattr(cell, o) is None or o in taken for o in SWEPT_OPTIONS)

    def prepare(self, cell, device):
        """The cell made ready to time from this side's registry, as the scaling suite makes it (one way)."""
        return prepare_cell(cell, device, self.models)


def load(tree, name):
    """The models/ package of directory `tree`, imported as package `name` (its modules as name.*)."""
    init = Path(tree) / "models" / "__init__.py"
    spec = importlib.util.spec_from_file_location(name, init, submodule_search_locations=[str(init.parent)])
    package = importlib.util.module_from_spec(spec)
    sys.modules[name] = package
    try:
        spec.loader.exec_module(package)
    except Exception as error:  # a revision whose models/ does not import beside this harness
        raise LoadError(f"{init.parent} does not import: {type(error).__name__}: {error}") from error
    return package


def export(source, into):
    """A commit's models/ written under directory `into` (git archive: no worktree is registered)."""
    data = _git(source.repo, "archive", "--format=tar", source.commit, "models")
    if data is None:
        raise LoadError(f"git archive of {source.given} ({source.commit[:12]}) failed")
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(into, filter="data")
    return into


def _forget(name):
    for module in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
        del sys.modules[module]


@contextlib.contextmanager
def opened(sources):
    """The Sides of `sources`, loaded; on leaving, by return, exception or Ctrl-C, their exports are removed and
    their packages forgotten."""
    tmp = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX))
    names = []
    try:
        sides = []
        for source in sources:
            tree = source.directory or export(source, tmp / source.role)
            names.append(f"_ab_{source.role}_models_{next(_names)}")
            sides.append(Side(source, load(tree, names[-1])))
        yield sides
    finally:
        for name in names:
            _forget(name)
        shutil.rmtree(tmp, ignore_errors=True)
