"""The shape of the library's code: no function a reader cannot hold (conventions: under ~60 lines, 80 at most)."""

import ast
from pathlib import Path

import lowprob

MAX_LINES = 80
SOURCE = Path(lowprob.__file__).parent


def function_lengths(root: Path) -> list[tuple[int, str]]:
    """(lines from ``def`` to the last line of the body, "path:line name") of every function under ``root``."""
    out = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                where = f"{path.relative_to(root.parent)}:{node.lineno} {node.name}"
                out.append((node.end_lineno - node.lineno + 1, where))
    return out


def test_no_function_in_the_library_is_longer_than_80_lines():
    lengths = function_lengths(SOURCE)
    assert len(lengths) > 100  # the walk found the library
    offenders = sorted(((n, where) for n, where in lengths if n > MAX_LINES), reverse=True)
    assert not offenders, "split these into named steps: " + "; ".join(f"{w} ({n} lines)" for n, w in offenders)
