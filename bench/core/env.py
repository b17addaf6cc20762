"""env.json: where and with what a run happened (versions, devices, CPU, git commit), beside its CSVs."""

from __future__ import annotations

import json
import os
import platform
import shlex
import socket
import subprocess
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.results import ENV_FILE, REPO_ROOT, atomic_write_text, read_env


def _git(*args: str) -> str | None:
    try:
        r = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout if r.returncode == 0 else None


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            name = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), None)
    except OSError:
        name = None
    return name or platform.processor() or None


def environment() -> dict[str, Any]:
    """Where and with what a run happened; everything env.json needs except config/command."""
    import torch

    try:
        cudnn = torch.backends.cudnn.version()
    except Exception:  # cuDNN probing can fail on odd builds; the run should not
        cudnn = None
    count = torch.cuda.device_count() if (cuda := torch.cuda.is_available()) else 0
    # dirty: a change to the code; run outputs (results/, plots/, the baselines included) do not count
    commit, status = _git("rev-parse", "HEAD"), _git("status", "--porcelain", "--", ".", ":!results", ":!plots")
    return {
        "timestamp_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "hostname": socket.gethostname(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cudnn": cudnn,
        "cuda_available": cuda,
        "cuda_device_count": count,
        "cuda_devices": [torch.cuda.get_device_name(i) for i in range(count)],
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_num_threads": torch.get_num_threads(),
        "git_commit": commit.strip() if commit else None,
        "git_dirty": None if status is None else bool(status.strip()),
    }


def write_env(run_dir: str | os.PathLike, *, config: Mapping[str, Any], argv: Sequence[str], **fields: Any) -> Path:
    """env.json: the environment, the config and command line, and any further top-level `fields` (limits)."""
    env = {**environment(), "config": dict(config), "command": shlex.join(str(a) for a in argv), **fields}
    path = Path(run_dir) / ENV_FILE
    atomic_write_text(path, json.dumps(env, indent=2, default=str) + "\n")
    return path


def record(run_dir: str | os.PathLike, **fields: Any) -> Path | None:
    """Set top-level fields of env.json (keeping the rest); no env.json (no suite ran): nothing to do."""
    env = read_env(run_dir)
    if env is None:
        return None
    env.update(fields)
    path = Path(run_dir) / ENV_FILE
    atomic_write_text(path, json.dumps(env, indent=2, default=str) + "\n")
    return path


def record_command(run_dir: str | os.PathLike, argv: Sequence[str]) -> Path | None:
    """Set env.json's top-level command to the one that made the whole run (run_all.py), keeping each
    suite's own under config.suites."""
    return record(run_dir, command=shlex.join(str(a) for a in argv))
