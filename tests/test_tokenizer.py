import json

import pytest

from lowprob import LowprobError
from lowprob.models import Tokenizer
from lowprob.models.zoo import shipped_tokenizer_path

from .conftest import SAMPLE_TEXT


@pytest.fixture(scope="module")
def shipped():
    return Tokenizer.from_file(shipped_tokenizer_path())


@pytest.mark.parametrize("text", [*SAMPLE_TEXT.values(), "0x1f3a9bcd", "", "  \t\n", "emoji 🙂 ok"])
def test_round_trip(shipped, text):
    assert shipped.decode(shipped.encode(text)) == text


def test_shipped_vocabulary(shipped):
    assert shipped.vocab_size == 4096
    assert shipped.bos_id == 0
    assert shipped.id_to_token(shipped.bos_id) == "<|endoftext|>"
    # single tokens keep their leading space; the benchmark's constants are single tokens
    for s in (" if", ":", " for", "He", " de", " que"):
        ids = shipped.encode(s)
        assert len(ids) == 1, s
        assert shipped.id_to_token(ids[0]) == s


def test_bos_text_is_not_split_into_bytes(shipped):
    assert shipped.encode("<|endoftext|>") == [0]


def test_training_is_deterministic():
    texts = list(SAMPLE_TEXT.values()) * 10
    a = Tokenizer.train(iter(texts), vocab_size=290)
    b = Tokenizer.train(iter(texts), vocab_size=290)
    assert a.to_str() == b.to_str()
    assert a.vocab_size == 290


def test_unreadable_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{not json")
    with pytest.raises(LowprobError, match="cannot read tokenizer"):
        Tokenizer.from_file(bad)


def test_the_vocabulary_hash_ignores_settings_encode_never_uses(shipped, tiny_tokenizer, tmp_path):
    """What transformers adds when it re-saves a tokenizer (a post-processor, other layout) keeps the hash;
    another vocabulary, or a changed merge, does not."""
    spec = json.loads(shipped.to_str())
    a, b = {"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}
    spec["post_processor"] = {"type": "TemplateProcessing", "single": [a], "pair": [a, b], "special_tokens": {}}
    (tmp_path / "resaved.json").write_text(json.dumps(spec, indent=2))
    resaved = Tokenizer.from_file(tmp_path / "resaved.json")
    assert resaved.to_str() != shipped.to_str() and resaved.vocab_sha256() == shipped.vocab_sha256()
    spec["model"]["merges"][5:7] = spec["model"]["merges"][6:4:-1]
    (tmp_path / "merges.json").write_text(json.dumps(spec))
    assert Tokenizer.from_file(tmp_path / "merges.json").vocab_sha256() != shipped.vocab_sha256()
    assert tiny_tokenizer.vocab_sha256() != shipped.vocab_sha256()
