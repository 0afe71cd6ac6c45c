"""The training corpus: a pinned, offline recipe over Debian packages.

Every source is a Debian package pinned by name, version and the sha256 of its ``.deb``, so the
corpus is the same on every machine that can reach the Debian archive (or is handed the ``.deb``
files). Nothing here is committed: the recipe is, together with the manifest that records every
extracted file's size and sha256.

Three kinds, because the benchmark's distributions need them: ``code`` (Python's standard library
and test suite, which also carry camelCase, CAPS constants and plenty of hex), ``english`` and
``spanish`` prose (fortune cookies, manuals, handbooks, man pages).
"""

from __future__ import annotations

import fnmatch
import gzip
import hashlib
import html.parser
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar

from lowprob.errors import LowprobError
from lowprob.files import atomic_write, dumps_json, read_json

KINDS = ("code", "english", "spanish")
EOT = "<|endoftext|>"  # document separator and beginning-of-sequence token
VALIDATION_ONE_IN = 20  # a document goes to validation when its hash is 0 mod this (5%)


@dataclass(frozen=True)
class Source:
    """One Debian package, the files taken from it and how to read them."""

    kind: str
    package: str
    version: str
    deb_sha256: str
    globs: tuple[str, ...]
    fmt: str  # "text", "html", "man" (gzipped roff), "fortune" (%-separated), "gztext"
    exclude: tuple[str, ...] = ()


PY = "3.11.2-6+deb12u9"
RECIPE: tuple[Source, ...] = (
    Source("code", "libpython3.11-stdlib", PY,
           "10f13e000ee757f5f2d2d3569f9e30546214a0c850acd78695feae373bfa3e53",
           ("usr/lib/python3.11/*.py",), "text"),
    Source("code", "libpython3.11-testsuite", PY,
           "5dd0f85e950b344a51374e0ef68089e808f73c6c594c80e5232936b5c7ea4a28",
           ("usr/lib/python3.11/*.py",), "text"),
    Source("english", "fortunes", "1:1.99.1-7.3",
           "41d0551dc0ff52f875a2ecef7c39da2f672ab468c37e170119f7e0245a9d63c5",
           ("usr/share/games/fortunes/*",), "fortune", exclude=("*.dat", "*/ascii-art")),
    Source("english", "python3.11-doc", PY,
           "5b3594189d6ef9a6963ce0347fd307a1cc67620ad697e144db366070e2e146be",
           ("usr/share/doc/python3.11/html/_sources/*.rst.txt",), "text"),
    Source("english", "debian-reference-en", "2.100",
           "9f31d3a17df505de09689ca255512ea58c1fc47c59bb1b0c7bf1c23362e9743f",
           ("usr/share/debian-reference/*.txt.gz",), "gztext"),
    Source("english", "debian-handbook", "11.20220922",
           "3d5dbeac1f1afc9c094eab9d0f701f6ecff99c4927d5a4794cf6c85678134faa",
           ("usr/share/doc/debian-handbook/html/en-US/*.html",), "html"),
    Source("spanish", "fortunes-es", "1.36",
           "54636edc1a4384093b68d1666c7e702ce42d1fcc8b5ab402d9646c328dcca899",
           ("usr/share/games/fortunes/es/*.fortunes",), "fortune"),
    Source("spanish", "debian-reference-es", "2.100",
           "a59b68c96f83d3cf29a476c847aee38364764603ea62eee592791e0a843a269e",
           ("usr/share/debian-reference/*.txt.gz",), "gztext"),
    Source("spanish", "debian-handbook", "11.20220922",
           "3d5dbeac1f1afc9c094eab9d0f701f6ecff99c4927d5a4794cf6c85678134faa",
           ("usr/share/doc/debian-handbook/html/es-ES/*.html",), "html"),
    Source("spanish", "manpages-es", "4.18.1-1",
           "d21e9f85e487f149ae45b5c525b2b1a70ae7fd38d4b05b47c8753042c66f4c2b",
           ("usr/share/man/es/*.gz",), "man"),
    Source("spanish", "debian-edu-doc-es", "2.12.23~deb12u1",
           "83f3c1bc05cf8bd2604df2d59e48f0b426744aee2820abae022c640891306742",
           ("usr/share/doc/debian-edu-doc-es/debian-edu-bookworm-manual.html",), "html"),
    Source("spanish", "aptitude-doc-es", "0.8.13-5",
           "a4245500fe3b449791a9f5910869b4bec4cc7e55e108b28fd03a55737687a917",
           ("usr/share/doc/aptitude/html/es/*.html",), "html"),
)


def default_cache_dir() -> Path:
    return Path(os.environ.get("LOWPROB_CACHE", Path.home() / ".cache" / "lowprob"))


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fetch_deb(source: Source, debs: Path) -> Path:
    """Return the pinned ``.deb`` from ``debs``, downloading it with ``apt-get`` if missing."""
    debs.mkdir(parents=True, exist_ok=True)
    candidates = sorted(debs.glob(f"{source.package}_*.deb"))
    if not candidates:
        if shutil.which("apt-get") is None:
            raise LowprobError(
                f"corpus source {source.package}={source.version} is missing: put its .deb in "
                f"{debs} (no apt-get on this machine to download it)")
        proc = subprocess.run(["apt-get", "download", f"{source.package}={source.version}"],
                              cwd=debs, capture_output=True, text=True)
        if proc.returncode != 0:
            raise LowprobError(
                f"apt-get could not download {source.package}={source.version} "
                f"(run 'apt-get update' first, or put the .deb in {debs}): "
                f"{proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode}")
        candidates = sorted(debs.glob(f"{source.package}_*.deb"))
    for deb in candidates:
        if _sha256_file(deb) == source.deb_sha256:
            return deb
    raise LowprobError(
        f"{source.package}: no .deb in {debs} has the pinned sha256 {source.deb_sha256} "
        f"(version {source.version}); remove the stale files and rebuild")


class _HTMLText(html.parser.HTMLParser):
    """Visible text of an HTML page, one line per block element."""

    BLOCKS: ClassVar[frozenset[str]] = frozenset(
        {"p", "div", "br", "li", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "tr", "dt", "dd", "title", "table",
         "ul", "ol", "section"})
    SKIP: ClassVar[frozenset[str]] = frozenset({"script", "style", "head"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skipping = 0

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in self.SKIP:
            self.skipping += 1
        elif tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP:
            self.skipping = max(0, self.skipping - 1)
        elif tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.skipping:
            self.parts.append(data)


def html_to_text(page: str) -> str:
    parser = _HTMLText()
    parser.feed(page)
    lines = (re.sub(r"[ \t\r\f\v]+", " ", line).strip() for line in "".join(parser.parts).split("\n"))
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


_ROFF_ESCAPES = [
    (re.compile(r"\\f(\[[^\]]*\]|\(..|.)"), ""),  # font changes
    (re.compile(r"\\\((aq|cq)"), "'"), (re.compile(r"\\\((dq|lq|rq)"), '"'),
    (re.compile(r"\\\((em|en|hy)"), "-"), (re.compile(r"\\\(.."), ""),
    (re.compile(r"\\\[[^\]]*\]"), ""), (re.compile(r"\\[-]"), "-"),
    (re.compile(r"\\[&,/:%|^]"), ""), (re.compile(r"\\e"), "\\\\"), (re.compile(r"\\ "), " "),
]


def roff_to_text(src: str) -> str:
    """Readable text of a man page: macros dropped (heading arguments kept), escapes resolved."""
    out = []
    for line in src.splitlines():
        if line.startswith((".", "'")):
            m = re.match(r"[.'](SH|SS|B|I|BR|IR|RB|BI|IB)\s+(.*)", line)
            if not m:
                continue
            line = m.group(2).replace('"', "")
        for pattern, repl in _ROFF_ESCAPES:
            line = pattern.sub(repl, line)
        out.append(line)
    return "\n".join(out).strip()


def _documents(source: Source, root: Path) -> Iterator[tuple[str, str]]:
    """Yield (relative path, document text) for every file of ``source`` under ``root``."""
    def wanted(path: Path) -> bool:
        rel = str(path.relative_to(root))
        return (path.is_file() and not path.is_symlink()
                and any(fnmatch.fnmatch(rel, g) for g in source.globs)
                and not any(fnmatch.fnmatch(rel, g) for g in source.exclude))

    files = sorted(p for p in root.rglob("*") if wanted(p))
    if not files:
        raise LowprobError(f"{source.package}: no file matches {source.globs}; the recipe is stale")
    for path in files:
        rel = str(path.relative_to(root))
        raw = path.read_bytes()
        if source.fmt in ("gztext", "man"):
            raw = gzip.decompress(raw)
        text = raw.decode("utf-8", errors="replace")
        if source.fmt == "html":
            yield rel, html_to_text(text)
        elif source.fmt == "man":
            yield rel, roff_to_text(text)
        elif source.fmt == "fortune":
            for i, cookie in enumerate(re.split(r"(?m)^%\s*$", text)):
                if cookie.strip():
                    yield f"{rel}#{i}", cookie.strip("\n")
        else:
            yield rel, text


def is_validation(text: str) -> bool:
    """Deterministic 5% held-out split by document content."""
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) % VALIDATION_ONE_IN == 0


def build_corpus(out: Path | None = None, debs: Path | None = None) -> Path:
    """Build the corpus into ``out`` (``{kind}.{train,val}.txt`` + ``manifest.json``); return ``out``.

    Idempotent: an existing corpus whose manifest matches the recipe is reused.
    """
    out = Path(out) if out is not None else default_cache_dir() / "corpus"
    debs = Path(debs) if debs is not None else default_cache_dir() / "debs"
    manifest_path = out / "manifest.json"
    recipe = [asdict(s) for s in RECIPE]
    if manifest_path.exists() and read_json(manifest_path).get("recipe") == recipe:
        return out
    out.mkdir(parents=True, exist_ok=True)
    splits: dict[tuple[str, str], list[str]] = {(k, s): [] for k in KINDS for s in ("train", "val")}
    sources = []
    with tempfile.TemporaryDirectory() as tmp:
        for source in RECIPE:
            deb = _fetch_deb(source, debs)
            root = Path(tmp) / f"{source.package}"
            if not root.exists():
                subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
            files: dict[str, dict] = {}
            for rel, text in _documents(source, root):
                if not text.strip():
                    continue
                split = "val" if is_validation(text) else "train"
                splits[source.kind, split].append(text)
                fname = rel.split("#")[0]
                entry = files.setdefault(fname, {"bytes": (root / fname).stat().st_size,
                                                 "sha256": _sha256_file(root / fname),
                                                 "text_chars": 0})
                entry["text_chars"] += len(text)
            sources.append({**asdict(source), "deb": deb.name, "n_files": len(files),
                            "text_chars": sum(f["text_chars"] for f in files.values()),
                            "files": files})
    outputs = {}
    for (kind, split), docs in splits.items():
        path = out / f"{kind}.{split}.txt"
        path.write_text(EOT.join(docs), encoding="utf-8")
        outputs[path.name] = {"documents": len(docs), "bytes": path.stat().st_size,
                              "sha256": _sha256_file(path)}
    atomic_write(manifest_path, dumps_json({"recipe": recipe, "sources": sources, "outputs": outputs},
                                           indent=1).encode())
    return out


def manifest_summary(corpus: Path) -> dict:
    """The manifest without per-file detail: what a model card records about its data."""
    manifest = read_json(Path(corpus) / "manifest.json", missing="build the corpus first (build_corpus)")
    return {
        "sources": [{k: s[k] for k in ("kind", "package", "version", "deb_sha256", "globs",
                                        "n_files", "text_chars")} for s in manifest["sources"]],
        "outputs": manifest["outputs"],
    }
