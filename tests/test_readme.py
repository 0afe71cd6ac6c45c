"""The README's snippets run as written, so they cannot drift from the code.

Python blocks run in README order in one namespace (the page reads top to bottom, like a notebook);
every ``lowprob`` command of a shell block runs through the CLI, except the long jobs listed in
``LONG_JOBS``, whose arguments are only parsed (an option renamed in the code still fails here).
Both run in a scratch directory holding what the README's examples name: ``template.toml`` (the
README's own TOML block) and ``path/to/hf-model`` (a tiny Hugging Face model with the shipped
tokenizer).
"""

from __future__ import annotations

import re
import shlex
import shutil
import sys
import types
from pathlib import Path

import click
import pytest
import torch
from typer.main import get_command
from typer.testing import CliRunner

from lowprob.cli import app

README = Path(__file__).resolve().parents[1] / "README.md"
PACKAGE = Path(__file__).resolve().parents[1] / "src" / "lowprob"
# commands that take minutes to hours: checked by parsing their arguments, not run
LONG_JOBS = ("lowprob train", "lowprob bench", "lowprob report results", "--samples 16777216", "--length paper",
             "lowprob mlp bench")


def blocks(language: str) -> list[str]:
    return [body for lang, body in re.findall(r"```(\w*)\n(.*?)```", README.read_text(), re.S) if lang == language]


def readme_commands() -> list[str]:
    """Every ``lowprob ...`` command of the README's shell blocks, optional ``[...]`` parts left out."""
    commands = []
    for body in blocks("bash"):
        for line in body.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s*\[[^\]]*\]", "", line)
            words = shlex.split(line, comments=True)
            command: list[str] = []
            for word in [*words, "&&"]:
                if word == "&&":
                    if command[:1] == ["lowprob"]:
                        commands.append(shlex.join(command))
                    command = []
                else:
                    command.append(word)
    return commands


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """A directory holding the files the README's examples name."""
    transformers = pytest.importorskip("transformers")
    from lowprob.models.zoo import shipped_tokenizer_path

    root = tmp_path_factory.mktemp("readme")
    (toml,) = blocks("toml")
    (root / "template.toml").write_text(toml)
    hf = root / "path/to/hf-model"
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=4096, n_positions=64, n_embd=32, n_layer=1, n_head=2)
    transformers.GPT2LMHeadModel(config).save_pretrained(hf)
    shutil.copy(shipped_tokenizer_path(), hf / "tokenizer.json")
    return root


def section(heading: str) -> str:
    """The README's text under ``heading`` (a whole line, e.g. ``## How it is built``) up to the next heading
    of the same or a higher level; lines inside code blocks are never headings."""
    level, lines, in_code = len(heading.split()[0]), None, False
    for line in README.read_text().splitlines():
        in_code ^= line.startswith("```")
        depth = len(line) - len(line.lstrip("#"))
        if not in_code and depth and line[depth:].startswith(" "):
            if lines is not None and depth <= level:
                break
            if line == heading:
                lines = []
                continue
        if lines is not None:
            lines.append(line)
    assert lines is not None, f"the README has no section {heading!r}"
    return "\n".join(lines)


def test_the_readme_has_the_snippets_this_test_reads():
    assert len(blocks("python")) >= 9 and len(readme_commands()) >= 15
    assert readme_commands()[0] == "lowprob models"
    for what in ("a model adapter", "an event", "a method"):
        assert "```python" in section(f"### How to add {what}"), what


def test_the_architecture_map_names_every_module():
    """Each module of the package appears in the map: a top-level one by its file name, one inside a
    package in that package's row (``models/`` ... ``adapters/hf.py``), so the map cannot fall behind."""
    rows = section("## How it is built").splitlines()
    missing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if rel.name in ("__init__.py", "__main__.py", "_version.py"):
            continue
        if len(rel.parts) == 1:
            found = any(f"`{rel.name}`" in row for row in rows)
        else:
            inner = "/".join(rel.parts[1:])
            found = any(f"`{rel.parts[0]}/`" in row and f"`{inner}`" in row for row in rows)
        if not found:
            missing.append(str(rel))
    assert not missing, f"README's \"How it is built\" does not name: {', '.join(missing)}"


def parse_only(args: list[str]) -> None:
    """Parse ``lowprob ARGS`` as the CLI would, without running the command: unknown options raise."""
    command, parent = get_command(app), None
    while isinstance(command, click.Group):
        parent = click.Context(command, info_name=args[0] if parent else "lowprob", parent=parent)
        command, args = command.get_command(parent, args[0]), args[1:]
        assert command is not None, args
    command.make_context(command.name, list(args), parent=parent)


@pytest.mark.parametrize("command", readme_commands())
def test_every_readme_command_runs_or_parses(command, scratch, monkeypatch):
    monkeypatch.chdir(scratch)
    args = shlex.split(command)[1:]
    if any(job in command for job in LONG_JOBS):
        parse_only(args)
        return
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, (command, result.output)


def test_the_readme_python_runs_top_to_bottom(scratch, monkeypatch):
    """The blocks run as one importable module, as a user's script would (``__main__``): the method the
    README registers names its function by module, and leaves the catalog when the test ends."""
    from lowprob.estimators import catalog

    monkeypatch.chdir(scratch)
    module = types.ModuleType("readme_snippets")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setattr(catalog, "METHODS", dict(catalog.METHODS))
    for i, code in enumerate(blocks("python")):
        try:
            exec(compile(code, f"README python block {i}", "exec"), module.__dict__)
        except Exception as exc:
            raise AssertionError(f"README python block {i} fails as written:\n{code}") from exc
