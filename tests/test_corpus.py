import gzip
import json

import pytest

from lowprob import LowprobError
from lowprob.training import corpus
from lowprob.training.corpus import RECIPE, Source, _documents, html_to_text, is_validation, roff_to_text


def test_html_to_text_keeps_visible_text_only():
    page = ("<html><head><title>T</title><style>p {x}</style></head><body><p>Hola&nbsp;mundo</p>"
            "<script>var x = 1;</script><ul><li>uno</li><li>dos &amp; tres</li></ul></body></html>")
    assert html_to_text(page) == "Hola\xa0mundo\n\nuno\n\ndos & tres"


def test_roff_to_text_drops_macros_and_resolves_escapes():
    src = '.TH LS 1\n.SH "NOMBRE"\nls \\- lista el \\fBcontenido\\fP\n.PP\n\\(aqhola\\(aq y \\-\\-all\n'
    assert roff_to_text(src) == "NOMBRE\nls - lista el contenido\n'hola' y --all"


def test_validation_split_is_deterministic_and_about_five_percent():
    docs = [f"document number {i}" for i in range(4000)]
    chosen = [is_validation(d) for d in docs]
    assert chosen == [is_validation(d) for d in docs]
    assert 0.04 < sum(chosen) / len(docs) < 0.06


def test_recipe_is_pinned_and_covers_every_kind():
    assert {s.kind for s in RECIPE} == set(corpus.KINDS)
    for s in RECIPE:
        assert len(s.deb_sha256) == 64 and s.version and s.globs
    assert len({(s.package, s.globs) for s in RECIPE}) == len(RECIPE)


def test_documents_reads_each_format(tmp_path):
    root = tmp_path / "pkg"
    (root / "f").mkdir(parents=True)
    (root / "f" / "cookies").write_text("one\n%\ntwo\nlines\n%\n")
    (root / "f" / "cookies.dat").write_bytes(b"\x00\x01")
    (root / "f" / "page.1.gz").write_bytes(gzip.compress(b".SH NAME\nfoo \\- bar\n"))
    fortunes = Source("english", "x", "1", "0" * 64, ("f/*",), "fortune", exclude=("*.dat", "*.gz"))
    assert [t for _, t in _documents(fortunes, root)] == ["one", "two\nlines"]
    man = Source("english", "x", "1", "0" * 64, ("f/*.gz",), "man")
    assert [t for _, t in _documents(man, root)] == ["NAME\nfoo - bar"]
    with pytest.raises(LowprobError, match="no file matches"):
        list(_documents(Source("code", "x", "1", "0" * 64, ("nothing/*",), "text"), root))


def test_a_deb_with_the_wrong_hash_is_refused(tmp_path):
    (tmp_path / "fortunes_1.0_all.deb").write_bytes(b"not the pinned package")
    source = next(s for s in RECIPE if s.package == "fortunes")
    with pytest.raises(LowprobError, match="pinned sha256"):
        corpus._fetch_deb(source, tmp_path)


def test_manifest_summary_drops_per_file_detail(tmp_path):
    manifest = {"recipe": [], "outputs": {"code.train.txt": {"bytes": 3}},
                "sources": [{"kind": "code", "package": "p", "version": "1", "deb_sha256": "0" * 64,
                             "globs": ["*"], "n_files": 1, "text_chars": 3, "files": {"a": {}}}]}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    summary = corpus.manifest_summary(tmp_path)
    assert "files" not in summary["sources"][0] and summary["outputs"] == manifest["outputs"]
