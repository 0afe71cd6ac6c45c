"""Crash-safe files: whole-file writes that are atomic, and append-only JSON lines that resume.

Long jobs append one JSON row per line and flush; a crash can leave at most a torn last line, which
``read_jsonl`` drops (and, with ``repair``, cuts off so that appending can continue cleanly).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary sibling to write ``path``'s new content to; it replaces ``path`` only if the block succeeds.

    Readers see the old file or the new, never half of one, whatever writer fills the temporary file.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


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
