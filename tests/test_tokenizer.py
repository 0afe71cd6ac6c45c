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
