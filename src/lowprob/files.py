"""Crash-safe files: whole-file writes that are atomic, and append-only JSON lines that resume.

Long jobs append one JSON row per line and flush; a crash can leave at most a torn last line, which
``read_jsonl`` drops (and, with ``repair``, cuts off so that appending can continue cleanly). Where a
job will write is checked before it starts (``prepare_output``), so no work is lost to a bad path.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lowprob.errors import LowprobError


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary sibling to write ``path``'s new content to; it replaces ``path`` only if the block succeeds.

    Readers see the old file or the new, never half of one, whatever writer fills the temporary file.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # some writers (safetensors) create private files
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def prepare_output(path: str | Path, kind: str = "file") -> Path:
    """Create the directory ``path`` will be written in (or, for ``kind="directory"``, ``path`` itself).

    Called before a job starts, so that a missing or unwritable location is a clear error up front
    instead of a traceback after the first hour of work.
    """
    path = Path(path)
    directory = path if kind == "directory" else path.parent
    if kind != "directory" and path.is_dir():
        raise LowprobError(f"{path} is a directory: give a file name to write")
    if kind == "directory" and path.exists() and not path.is_dir():
        raise LowprobError(f"{path} is a file: give a directory to write results in")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LowprobError(f"cannot create {directory} to write {path}: {exc.strerror}") from None
    if not os.access(directory, os.W_OK):
        raise LowprobError(f"cannot write to {directory}: permission denied")
    return path


def atomic_write(path: str | Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` in one step."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def read_jsonl(path: str | Path, repair: bool = False) -> list[dict]:
    """The complete rows of a JSON-lines file ([] if it does not exist); ``repair`` truncates a torn tail."""
    path = Path(path)
    if not path.exists():
        return []
    data = path.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]
    if repair and len(complete) != len(data):
        with path.open("r+b") as f:
            f.truncate(len(complete))
    return [json.loads(line) for line in complete.decode().splitlines() if line.strip()]
