"""Crash-safe files: whole-file writes that are atomic, and append-only JSON lines that resume.

Long jobs append one JSON row per line and flush; a crash can leave at most a torn last line, which
``read_jsonl`` drops (and, with ``repair``, cuts off so that appending can continue cleanly). Where a
job will write is checked before it starts (``prepare_output``: writable, and no earlier output
replaced unless the user said so), and a job holds ``output_lock`` while it writes, so no work is
lost to a bad path and no two runs write into one place. Every JSON we write is strict
(``dumps_json``): a NaN or an infinity is a bug to fix at its source, never silent output; every
JSON file we read is parsed as strictly (``read_json``: nor a key twice in one object), and a bad one is
refused by name.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lowprob.errors import LowprobError


def dumps_json(obj: Any, **kw: Any) -> str:
    """``json.dumps`` that refuses NaN and infinities (``ValueError``), which strict parsers reject."""
    return json.dumps(obj, allow_nan=False, **kw)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary sibling to write ``path``'s new content to; it replaces ``path`` only if the block succeeds.

    Readers see the old file or the new, never half of one, whatever writer fills the temporary file.
    A failed write (full disk, read-only place), or a ``path`` that is no path (None), is a ``LowprobError``.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise LowprobError(f"give the file to write as a str or a pathlib.Path, got {path!r}")
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # some writers (safetensors) create private files
        os.replace(tmp, path)
    except OSError as exc:
        raise LowprobError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        tmp.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def prepare_output(path: str | Path, kind: str = "file", overwrite: bool = False,
                   hint: str = "pass --force to replace it, or choose another path") -> Path:
    """Create the directory ``path`` will be written in (or, for ``kind="directory"``, ``path`` itself).

    Called before a job starts, so that a bad location is a clear error up front instead of a
    traceback after the first hour of work: the directory is probed by creating a file in it. An
    existing file ``path`` is refused unless ``overwrite`` (``hint`` says how to allow it); what a
    directory may already hold is its job's to say.
    """
    path = Path(path)
    directory = path if kind == "directory" else path.parent
    if kind != "directory" and path.is_dir():
        raise LowprobError(f"{path} is a directory: give a file name to write")
    if kind == "directory" and path.exists() and not path.is_dir():
        raise LowprobError(f"{path} is a file: give a directory to write results in")
    if kind != "directory" and path.exists() and not overwrite:
        raise LowprobError(f"{path} already exists: {hint}")
    if directory.exists() and not directory.is_dir():
        raise LowprobError(f"{directory} is a file, not a directory: cannot write {path} in it")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LowprobError(f"cannot create {directory} to write {path}: {exc.strerror}") from None
    try:
        fd, probe = tempfile.mkstemp(dir=directory, prefix=".lowprob-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise LowprobError(f"cannot write to {directory}: {exc.strerror}") from None
    return path


@contextmanager
def output_lock(path: str | Path, job: str) -> Iterator[None]:
    """Hold an exclusive lock on the output ``path`` (a directory, or a file) while ``job`` writes it.

    A second run into the same place would interleave or duplicate its output: it fails at once,
    naming the holder. The lock is ``path/.lowprob.lock`` (``path.lock`` for a file); the kernel
    releases it if the holder dies, so a killed run never blocks the next one.
    """
    path = Path(path)
    lock = path / ".lowprob.lock" if path.is_dir() else path.with_name(path.name + ".lock")
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise LowprobError(f"another {job} is writing {path} (pid {holder}): wait for it to finish, "
                               f"or write somewhere else") from None
        try:
            if os.stat(lock).st_ino == os.fstat(fd).st_ino:
                break  # else its last holder removed it between our open and our lock: take the new one
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        lock.unlink(missing_ok=True)
        os.close(fd)


def atomic_write(path: str | Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` in one step."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object whose keys are distinct: with a key twice, ``json`` would silently keep the last value."""
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise ValueError(f"the key {key!r} appears twice in one object; keep one")
        obj[key] = value
    return obj


def _parse(text: str | bytes) -> Any:
    """JSON parsed strictly (no NaN or Infinity, no key twice in an object); ``ValueError`` says what is
    wrong and where."""
    try:
        return json.loads(text, parse_constant=_no_constant, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{exc.msg} at line {exc.lineno}, column {exc.colno}") from None


def read_bytes(path: str | Path, missing: str = "") -> bytes:
    """A file's bytes; a missing or unreadable one (a directory, no permission) is a LowprobError naming it,
    ``missing`` saying what to do about an absent file."""
    path = Path(path)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise LowprobError(f"{path} is missing" + (f": {missing}" if missing else "")) from None
    except OSError as exc:
        raise LowprobError(f"cannot read {path}: {exc.strerror or exc}") from None


def read_json(path: str | Path, missing: str = "") -> Any:
    """The value a JSON file holds, parsed strictly (no NaN or Infinity), like ``read_jsonl``'s rows.

    Every JSON file lowprob reads (configs, cards, targets, truths, references) comes through here,
    so a truncated or hand-edited one is a one-line error naming the file, never a parser traceback.
    ``missing`` says what to do about an absent file, for callers that need it to exist.
    """
    data = read_bytes(path, missing)
    try:
        return _parse(data)
    except ValueError as exc:  # bad JSON, not UTF-8, or a NaN or an infinity
        raise LowprobError(f"{path} is not valid JSON ({exc}): fix or delete it") from None


def read_jsonl(path: str | Path, repair: bool = False) -> list[dict]:
    """The complete rows of a JSON-lines file ([] if it does not exist); ``repair`` truncates a torn tail.

    Rows are parsed strictly (no NaN or Infinity). A bad complete line is not a crash's doing: it
    is refused with its file and line number rather than skipped, so no estimate is silently lost.
    """
    path = Path(path)
    if not path.exists():
        return []
    data = path.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]
    if repair and len(complete) != len(data):
        with path.open("r+b") as f:
            f.truncate(len(complete))
    rows = []
    for number, line in enumerate(complete.decode(errors="replace").split("\n"), 1):
        if line.strip():
            try:
                row = _parse(line)
                if not isinstance(row, dict):
                    raise ValueError(f"a JSON {type(row).__name__}, not an object")
            except ValueError as exc:
                raise LowprobError(f"{path}:{number} is not a JSON row ({exc}): fix or delete that line") from None
            rows.append(row)
    return rows
