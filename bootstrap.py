#!/usr/bin/env python3
"""Set up (or reuse) the local virtual environment, then run GSS Bench inside it.

    python3 bootstrap.py run [run_all.py options]     # the main job
    python3 bootstrap.py test [pytest options]        # the tests

Needs only Python >= 3.11 and the package registry. Torch: a torch already importable in the
environment is kept (a GPU user's CUDA build); otherwise torch==TORCH_VERSION is installed, from
GSS_BENCH_TORCH_INDEX when set (e.g. https://download.pytorch.org/whl/cpu for the CPU wheel).
GSS_BENCH_SYSTEM_SITE=1 creates the environment with access to the system's packages (and its torch).
"""

import hashlib
import os
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = Path(os.environ.get("GSS_BENCH_VENV", ROOT / ".venv"))
TORCH_VERSION = "2.13.0"
REQUIREMENTS, CONSTRAINTS = ROOT / "requirements.txt", ROOT / "constraints.txt"
COMMANDS = {"run": ["run_all.py"], "test": ["-m", "pytest"]}


def venv_python():
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def say(message):
    print(f"[bootstrap] {message}", file=sys.stderr, flush=True)


def pip(*args):
    subprocess.run([str(venv_python()), "-m", "pip", "install", "--disable-pip-version-check", "-q", *args], check=True)


def installed_torch():
    probe = subprocess.run(
        [str(venv_python()), "-c", "import torch; print(torch.__version__)"], capture_output=True, text=True
    )
    return probe.stdout.strip() if probe.returncode == 0 else None


def fingerprint():
    digest = hashlib.sha256(TORCH_VERSION.encode())
    for path in (REQUIREMENTS, CONSTRAINTS):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def ensure_environment():
    stamp = VENV / ".gss-bench-installed"
    if not venv_python().exists():
        say(f"creating {VENV}")
        venv.create(VENV, with_pip=True, system_site_packages=os.environ.get("GSS_BENCH_SYSTEM_SITE") == "1")
    if stamp.exists() and stamp.read_text() == fingerprint():
        return
    torch_version = installed_torch()
    if torch_version is None:
        index = os.environ.get("GSS_BENCH_TORCH_INDEX")
        say(f"installing torch=={TORCH_VERSION}" + (f" from {index}" if index else ""))
        pip(f"torch=={TORCH_VERSION}", *(["--index-url", index] if index else []))
        torch_version = installed_torch()
    else:
        say(f"keeping the installed torch {torch_version}")
    say("installing the pinned dependencies")
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as keep_torch:
        keep_torch.write(f"torch=={torch_version}\n")  # never let a dependency swap the torch build
    try:
        pip("-r", str(REQUIREMENTS), "-c", str(CONSTRAINTS), "-c", keep_torch.name)
    finally:
        os.unlink(keep_torch.name)
    stamp.write_text(fingerprint())


def main(argv):
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: python3 bootstrap.py {{{','.join(COMMANDS)}}} [options]", file=sys.stderr)
        return 2
    if sys.version_info < (3, 11):
        print("error: GSS Bench needs Python 3.11 or newer", file=sys.stderr)
        return 2
    try:
        ensure_environment()
    except subprocess.CalledProcessError as error:
        print(f"error: setting up {VENV} failed ({error}); see pip's output above", file=sys.stderr)
        return 2
    command = [str(venv_python()), *COMMANDS[argv[0]], *argv[1:]]
    return subprocess.run(command, cwd=ROOT).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
