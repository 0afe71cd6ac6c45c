"""Byte-level BPE tokenizer: a thin, typed wrapper over Hugging Face ``tokenizers``.

Byte-level so that every string (code, Spanish accents, hex) encodes without unknown tokens, and
``decode([id])`` of a single token keeps its leading space, which the distributions' token filters
rely on. Token 0 is ``<|endoftext|>``: the beginning-of-sequence token at position 0 of every input
and the separator between training documents.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterable, Iterator
from pathlib import Path

from tokenizers import Tokenizer as _HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from lowprob.errors import LowprobError

BOS = "<|endoftext|>"


class Tokenizer:
    """Encode/decode text; ``bos_id`` starts every sequence the shipped models see.

    Also wraps a Hugging Face model's ``tokenizer.json``: ``encode`` adds no special tokens (a
    template must contain any it wants), and ``bos_id`` is None when there is no ``<|endoftext|>``.
    """

    def __init__(self, hf: _HFTokenizer) -> None:
        self._hf = hf
        self.bos_id: int | None = hf.token_to_id(BOS)

    @property
    def vocab_size(self) -> int:
        return self._hf.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self._hf.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self._hf.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: Iterable[int]) -> str:
        return self._hf.decode(list(ids), skip_special_tokens=False)

    def id_to_token(self, token_id: int) -> str:
        """The decoded string of one token, leading space included."""
        return self.decode([token_id])

    def to_str(self) -> str:
        return self._hf.to_str()

    def vocab_sha256(self) -> str:
        """sha256 of what the ids mean: the vocabulary (id -> token) and the BPE merges, nothing else.

        Files are not compared byte for byte because the same tokenizer re-saved by ``transformers``
        gains a post-processor and other settings that ``encode`` (no special tokens) never uses.
        """
        vocab = sorted(self._hf.get_vocab(with_added_tokens=True).items(), key=lambda item: item[1])
        merges = json.loads(self.to_str())["model"].get("merges", [])
        pairs = [m.split(" ", 1) if isinstance(m, str) else list(m) for m in merges]  # "a b" in older files
        return hashlib.sha256(json.dumps([vocab, pairs], ensure_ascii=False).encode()).hexdigest()

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_str(), encoding="utf-8")

    @classmethod
    def from_file(cls, path: str | Path) -> Tokenizer:
        try:
            return cls(_HFTokenizer.from_file(str(path)))
        except Exception as exc:  # tokenizers raises a bare Exception on malformed JSON
            raise LowprobError(f"cannot read tokenizer {path}: {exc}") from exc

    @classmethod
    def train(cls, texts: Iterator[str], vocab_size: int = 4096) -> Tokenizer:
        hf = _HFTokenizer(models.BPE())
        hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        hf.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, special_tokens=[BOS], show_progress=False,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        hf.train_from_iterator(texts, trainer=trainer)
        return cls(hf)


def balanced_documents(corpus: Path, kinds: Iterable[str], chars_per_kind: int,
                       seed: int = 0) -> Iterator[str]:
    """An equal share of characters from each kind, documents picked at random (seeded).

    Balancing matters: the code corpus is four times the Spanish one, and a tokenizer trained on
    the raw mix would spend its merges on code and split Spanish words into fragments.
    """
    rng = random.Random(seed)
    for kind in kinds:
        docs = (Path(corpus) / f"{kind}.train.txt").read_text(encoding="utf-8").split(BOS)
        rng.shuffle(docs)
        taken = 0
        for doc in docs:
            if taken >= chars_per_kind:
                break
            taken += len(doc)
            yield doc
