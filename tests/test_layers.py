"""The import graph: layers import downward only, no circles (pyproject's import-linter contracts), and no
code outside ``models/`` asks a model for its class: fast paths are capabilities a model offers."""

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "lowprob"
# the concrete model classes; outside models/ a model is known by the protocol and its optional capabilities
MODEL_CLASSES = {"Transformer", "AdaptedLM", "HuggingFaceLM", "TransformerLensLM", "TemplatedModel"}


def test_imports_go_down_the_layers_with_no_circles():
    beside = Path(sys.executable).with_name("lint-imports")  # this interpreter's environment, activated or not
    lint = str(beside) if beside.exists() else shutil.which("lint-imports")
    if lint is None:
        pytest.skip("import-linter is not installed (pip install -e '.[dev]'): the layer contracts are unchecked")
    run = subprocess.run([lint], cwd=SRC.parents[1], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


def _class_checks(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, class name) of every isinstance/issubclass whose class argument names a concrete model class."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("isinstance",
                                                                                              "issubclass"):
            for name in ast.walk(node.args[1]) if len(node.args) == 2 else ():
                if isinstance(name, (ast.Name, ast.Attribute)):
                    ident = name.id if isinstance(name, ast.Name) else name.attr
                    if ident in MODEL_CLASSES:
                        found.append((node.lineno, ident))
    return found


def test_no_class_check_on_a_model_outside_models():
    offending = [f"{path.relative_to(SRC)}:{line}: {name}"
                 for path in sorted(SRC.rglob("*.py")) if "models" not in path.relative_to(SRC).parts[:1]
                 for line, name in _class_checks(ast.parse(path.read_text(), str(path)))]
    assert not offending, "ask the model for a capability (models.protocol.capability) instead:\n" + "\n".join(
        offending)


def test_the_class_check_finder_finds_one():
    found = _class_checks(ast.parse("if isinstance(model, (Transformer, int)) or isinstance(m, lm.TemplatedModel): "
                                    "pass"))
    assert [name for _, name in found] == ["Transformer", "TemplatedModel"]
