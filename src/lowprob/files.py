"""Crash-safe files: whole-file writes that are atomic, and append-only JSON lines that resume.

Long jobs append one JSON row per line and flush; a crash can leave at most a torn last line, which
``read_jsonl`` drops (and, with ``repair``, cuts off so that appending can continue cleanly).
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def atomic_write(path: str | Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` in one step: readers see the old file or the new, never half."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


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
