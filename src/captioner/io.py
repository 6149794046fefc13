"""Atomic file writes: write a temporary file beside the target, then rename over it."""
from __future__ import annotations

import json
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _new_file_mode(path: Path) -> int:
    """The mode the file would get from a plain open(): the old file's, else 0o666 less the umask."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        umask = os.umask(0o022)  # reading the umask means setting it; put it straight back
        os.umask(umask)
        return 0o666 & ~umask


def atomic_write(path: str | Path, write: Callable[[str], None]) -> None:
    """Call `write(temp_path)`, then rename the temp file onto `path`; a kill leaves the old file intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_path = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        write(temp_path)
        os.chmod(temp_path, _new_file_mode(path))  # mkstemp makes 0600 files: others could not read a report or picture
        os.replace(temp_path, path)
    except BaseException:
        Path(temp_path).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda temp: Path(temp).write_text(text))


def atomic_write_json(path: str | Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")
