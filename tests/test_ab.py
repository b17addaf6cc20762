"""python -m bench.ab: two sides' models/ loaded apart in one process, from directories and from revisions of a
real temporary git repository; ab.csv, env.json and the exit codes; bad input (one line, exit 2, nothing left
behind); nothing left behind after a run, an exception or Ctrl-C either."""

import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap

import pytest
import torch

import bench.ab
import bench.core.env
import models
from bench.ab import COLUMNS, main, sides
from bench.ab.verdict import VERDICTS
from bench.core.paired import PairedTiming
from bench.results import read_rows

LAYER = """
import torch
from torch import nn


class Toy(nn.Module):
    '''x @ W, `factor` times: W = I * FACTOR, so the output tells the tree and the FLOPs the work.'''

    def __init__(self, dim, factor, device=None):
        super().__init__()
        self.weight = nn.Parameter(torch.eye(dim, device=device) * FACTOR)
        self.factor = factor

    def forward(self, x):
        for _ in range(self.factor):
            x = x @ self.weight
        return x

    def num_params(self):
        return self.weight.numel()
"""
INIT = """
from .layer import Toy

NAMES = {names!r}
OPTIONS = {{"conv": ("kernel_H", "dim_expansion_factor", "conv_kernel"), "attention": ("heads", "head_dim")}}


def options_of(name):
    return OPTIONS[name]


def build_layer(name, *, dim, device=None, dtype=None, **options):
    return Toy(dim, {factor}, device=device)
"""


def toy_tree(root, factor, names=("conv",), broken=False):
    """A models/ package whose conv layer multiplies by factor ** factor with `factor` matmuls."""
    (root / "models").mkdir(parents=True, exist_ok=True)
    (root / "models" / "__init__.py").write_text(INIT.format(names=tuple(names), factor=factor))
    layer = LAYER.replace("FACTOR", str(factor)) + ("\nraise ImportError('broken')\n" if broken else "")
    (root / "models" / "layer.py").write_text(textwrap.dedent(layer))
    return root


def git(repo, *args):
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture
def repo(tmp_path):
    """A git checkout: commit 1 holds a toy tree of factor 1, commit 2 (HEAD) of factor 2 that also has attention."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    git(repo, "config", "user.email", "ab@test")
    git(repo, "config", "user.name", "ab test")
    for factor, names in ((1, ("conv",)), (2, ("conv", "attention"))):
        toy_tree(repo, factor, names)
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", f"factor {factor}")
    return repo


@pytest.fixture(autouse=True)
def quick_env(request, monkeypatch):
    """env.json without the environment's probes (git status of this checkout, CUDA): seconds each run otherwise;
    the real command's test keeps them."""
    if "real_command" not in request.node.name:
        monkeypatch.setattr(bench.core.env, "environment", dict)


@pytest.fixture
def temp(tmp_path, monkeypatch):
    """Where the runs' exports go (tempfile's directory), so that a test sees whatever is left there."""
    path = tmp_path / "temp"
    path.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(path))
    return path


@pytest.fixture
def fake_rounds(monkeypatch):
    """Paired rounds without a clock: every round's ratio head / base is `fake_rounds.ratio` (1 unless set)."""

    class Fake:
        ratio = 1.0

        def __call__(self, base, head, *, device, **how):
            base(), head()  # the steps run: a broken one raises, as it would
            return PairedTiming((10.0,) * 10, (10.0 * self.ratio,) * 10, 0, "converged", "fake")

    fake = Fake()
    monkeypatch.setattr(bench.ab, "measure_pairs", fake)
    return fake


TINY = ["--models", "conv,attention", "--seq-lens", "8", "--dim", "4", "--modes", "fwd", "--device", "cpu"]


def left_behind(repo, temp, out):
    """What a run may not leave: a worktree, an export, a loaded side's package, or (after bad input) the run dir."""
    loaded = [m for m in sys.modules if m.startswith("_ab_")]
    return git(repo, "worktree", "list").count("\n") - 1, list(temp.iterdir()), loaded, out.exists()


def test_each_side_loads_its_own_tree_beside_the_harness(tmp_path, temp):
    a, b = toy_tree(tmp_path / "a", 1), toy_tree(tmp_path / "b", 3)
    names = models.NAMES
    sources = [sides.resolve(str(a), "base", tmp_path), sides.resolve(str(b), "head", tmp_path)]
    with sides.opened(sources) as (base, head):
        x = torch.ones(1, 2, 4)
        assert torch.equal(base.models.build_layer("conv", dim=4)(x), x)
        assert torch.equal(head.models.build_layer("conv", dim=4)(x), x * 27)
        for side, tree in ((base, a), (head, b)):
            name = side.models.__name__
            files = [m.__file__ for k, m in sys.modules.items() if k == name or k.startswith(name + ".")]
            assert len(files) == 2 and all(f.startswith(str(tree / "models")) for f in files)
    assert names == models.NAMES and not [m for m in sys.modules if m.startswith("_ab_")]


def test_a_side_whose_models_state_no_min_bytes_leaves_its_floor_column_empty(tmp_path, temp, fake_rounds):
    a, b = toy_tree(tmp_path / "a", 1), toy_tree(tmp_path / "b", 2)
    with open(b / "models" / "layer.py", "a") as layer:  # the head's layer states its minimum bytes
        layer.write("\n\nToy.min_bytes = lambda self, batch, seq_len, mode: 1000 * batch * seq_len\n")
    out = tmp_path / "out"
    assert main([str(a), str(b), *TINY, "--models", "conv", "--out", str(out)]) == 0
    (row,) = read_rows(out / "ab.csv", columns=COLUMNS)
    assert row["verdict"] == "same" and row["min_bytes_base"] == "" and row["min_bytes_head"] == str(1000 * 8)


def test_two_directories_compared_into_ab_csv_env_json_and_the_table(tmp_path, temp, fake_rounds, capsys):
    a, b = toy_tree(tmp_path / "a", 1), toy_tree(tmp_path / "b", 2, names=("conv", "attention"))
    out = tmp_path / "out"
    assert main([str(a), str(b), *TINY, "--out", str(out)]) == 0
    rows = {r["model"]: r for r in read_rows(out / "ab.csv", columns=COLUMNS)}
    conv, attention = rows["conv"], rows["attention"]
    assert conv["verdict"] == "same" and conv["rounds"] == "10" and float(conv["ratio"]) == 1.0
    assert (conv["params_base"], conv["params_head"]) == ("16", "16")
    assert float(conv["flops_head"]) == 2 * float(conv["flops_base"]) == 2 * 2 * 8 * 4 * 4
    assert attention["verdict"] == "one-sided" and attention["params_head"] == "16" and attention["params_base"] == ""
    env = json.loads((out / "env.json").read_text())["config"]["ab"]
    assert env["base"] == {"given": str(a), "directory": str(a)} and env["head"]["directory"] == str(b)
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:3] == ["model", "mode", "dtype"] and table[-1] == str(out / "ab.csv")
    assert [line.split()[0] for line in table[1:3]] == ["conv", "attention"]  # measured first, one-sided last


@pytest.mark.parametrize("ratio, code, word", [(1.10, 1, "regression"), (0.9, 0, "improvement"), (1.02, 0, "same")])
def test_exit_code_and_threshold(tmp_path, temp, fake_rounds, ratio, code, word):
    a, b = toy_tree(tmp_path / "a", 1), toy_tree(tmp_path / "b", 1)
    fake_rounds.ratio = ratio
    out = tmp_path / "out"
    assert main([str(a), str(b), *TINY, "--models", "conv", "--out", str(out), "--threshold", "5"]) == code
    assert [r["verdict"] for r in read_rows(out / "ab.csv")] == [word]


def test_revisions_are_exported_and_removed_and_no_worktree_is_left(repo, tmp_path, temp, fake_rounds):
    before = git(repo, "worktree", "list")
    out = tmp_path / "out"
    assert main(["HEAD~1", "HEAD", "--repo", str(repo), *TINY, "--out", str(out)]) == 0
    rows = {r["model"]: r for r in read_rows(out / "ab.csv")}
    assert float(rows["conv"]["flops_head"]) == 2 * float(rows["conv"]["flops_base"])
    assert rows["attention"]["verdict"] == "one-sided"
    env = json.loads((out / "env.json").read_text())["config"]["ab"]
    assert env["base"]["commit"] == git(repo, "rev-parse", "HEAD~1").strip()
    assert git(repo, "worktree", "list") == before and list(temp.iterdir()) == []


def test_head_defaults_to_the_working_tree_with_its_uncommitted_changes(repo, tmp_path, temp, fake_rounds):
    toy_tree(repo, 3)  # uncommitted
    out = tmp_path / "out"
    assert main(["HEAD", "--repo", str(repo), *TINY, "--models", "conv", "--out", str(out)]) == 0
    (row,) = read_rows(out / "ab.csv")
    assert float(row["flops_head"]) == 3 / 2 * float(row["flops_base"])
    env = json.loads((out / "env.json").read_text())["config"]["ab"]
    assert env["head"] == {"given": "working tree", "directory": str(repo)}


@pytest.mark.parametrize("error", [RuntimeError("a bug"), KeyboardInterrupt()])
def test_nothing_is_left_after_an_exception_or_ctrl_c(repo, tmp_path, temp, monkeypatch, error):
    def broken(*args):
        raise error

    monkeypatch.setattr(bench.ab, "compare", broken)
    out = tmp_path / "out"
    argv = ["HEAD~1", "HEAD", "--repo", str(repo), *TINY, "--out", str(out)]
    if isinstance(error, KeyboardInterrupt):
        assert main(argv) == 130
    else:
        with pytest.raises(RuntimeError, match="a bug"):
            main(argv)
    assert left_behind(repo, temp, out)[:3] == (0, [], [])


def test_sigterm_unwinds_like_ctrl_c():
    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt), bench.ab.sigterm_as_interrupt():
        os.kill(os.getpid(), signal.SIGTERM)  # the handler raises as the call returns
    assert signal.getsignal(signal.SIGTERM) is previous


def test_a_failing_side_is_an_error_row_and_the_run_goes_on(tmp_path, temp, monkeypatch):
    a, b = toy_tree(tmp_path / "a", 1), toy_tree(tmp_path / "b", 1)

    def broken(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(bench.ab, "measure_pairs", broken)
    out = tmp_path / "out"
    assert main([str(a), str(b), *TINY, "--models", "conv", "--out", str(out)]) == 0
    (row,) = read_rows(out / "ab.csv")
    assert row["verdict"] == "error" and row["error"] == "rounds: RuntimeError: out of memory"


BAD = {
    "unknown revision": (["nosuchrev"], "neither a directory nor a revision"),
    "directory without models": (["{empty}"], "no models/ package"),
    "revision outside a checkout": (["HEAD", "--repo", "{empty}"], "not a git checkout"),
    "base is the working tree": (["{repo}"], "is the working tree"),
    "head directory without models": (["HEAD", "{empty}"], "no models/ package"),
    "threshold zero": (["HEAD~1", "--threshold", "0"], "--threshold"),
    "threshold negative": (["HEAD~1", "--threshold=-3"], "--threshold"),
    "threshold text": (["HEAD~1", "--threshold", "abc"], "--threshold"),
    "threshold nan": (["HEAD~1", "--threshold", "nan"], "--threshold"),
    "no cells": (["HEAD~1", "--models", "conv", "--conv-kernel", "full"], "the grid is empty"),
    "unknown model": (["HEAD~1", "--models", "nosuch"], "unknown model"),
    "a side that does not import": (["{broken}"], "cannot compare"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(case, repo, tmp_path, temp, capsys):
    argv, message = BAD[case]
    (tmp_path / "empty").mkdir()
    paths = dict(repo=repo, empty=tmp_path / "empty", broken=toy_tree(tmp_path / "broken", 1, broken=True))
    out = tmp_path / "out"
    argv = [a.format(**paths) for a in argv]
    assert main([*argv, *(["--repo", str(repo)] if "--repo" not in argv else []), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err
    assert left_behind(repo, temp, out) == (0, [], [], False)


def test_an_existing_ab_csv_is_not_overwritten(tmp_path, temp, capsys):
    a = toy_tree(tmp_path / "a", 1)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "ab.csv").write_text("kept\n")
    assert main([str(a), str(a), *TINY, "--out", str(tmp_path / "out")]) == 2
    assert "exists" in capsys.readouterr().err and (tmp_path / "out" / "ab.csv").read_text() == "kept\n"


def test_list_prints_the_cells_of_the_gate_preset(repo, temp, capsys):
    assert main(["HEAD~1", "--repo", str(repo), "--list", "--device", "cpu"]) == 0
    cells = capsys.readouterr().out.splitlines()
    assert len(cells) == len(models.NAMES) * 2 * 2  # every layer, two lengths, fwd and fwdbwd
    assert {c.split()[0] for c in cells} == {f"model={m}" for m in models.NAMES}


def test_the_real_command_compares_the_last_commit_with_the_working_tree(tmp_path, temp):
    out = tmp_path / "out"
    argv = ["HEAD", "--models", "conv", "--seq-lens", "64", "--dim", "32", "--modes", "fwd", "--budget", "0.2"]
    assert main([*argv, "--device", "cpu", "--out", str(out)]) in (0, 1)
    (row,) = read_rows(out / "ab.csv")
    assert row["verdict"] in VERDICTS[:3] and int(row["rounds"]) >= 10
    assert row["params_base"] == row["params_head"] and row["flops_base"] == row["flops_head"]
    assert len(row["ratios"].split()) == int(row["rounds"]) and list(temp.iterdir()) == []
