"""The benchmark's eight input distributions, rebuilt over our tokenizer.

Same recipes as Wu & Hilton's benchmark (see ``shared/research/lpe_paper_spec.md`` §2): token
filters on the decoded strings, constant tokens, and frequency weights — counted on our corpus and
shipped as a small table (``data/tables.safetensors``), so no corpus is needed at run time.

Where our 4096-token vocabulary forces a change, it is the nearest faithful alternative:
- ``caps``: "She" is not one token, so the pronoun slot is {"He", "We"} at 50/50.
- ``colon``/``if``: Code1024 excludes the BOS/document-separator token, which the paper's table
  probably contained by accident (a BOS in the middle of an input is meaningless).
- ``caps``: a CAPS token must contain an upper-case letter. The paper's filter also admits pure
  punctuation ("!!"), rare on the web but not in our corpus, where '::' and '..' (reStructuredText)
  would make up 42% of the "CAPS" slots.
- ``icl`` at ``cpu`` length has three triples (12 tokens), so its 3.9M-sequence space is enumerable
  and its ground truth exact.
- the ``top-k`` caps of the paper (2^14) exceed our vocabulary; they keep every token that passes.

Three variants: ``paper`` (the paper's repetition counts), ``cpu`` (shorter, so that sampled ground
truth for all 24 model × distribution pairs is affordable on two CPU cores) and ``exact`` (shorter
still, with each variable position cut to its ``top_k`` most likely tokens and their weights
sharpened to ``p^EXACT_SHARPEN``, renormalised, so that the whole space — about 2^24 sequences — can be
enumerated: exact ground truth with no resolution limit). The sharpening is what lets targets reach
1e-12: with the kinds' own frequency weights the least likely of 2^24 sequences has p ≈ 1e-9.5 (the
top tokens' weights differ by only ~2 decades per position), with their squares 1e-12 to 1e-13.5
(``caps``, with few CAPS tokens, 1e-10; ``icl`` is the whole ``cpu`` variant, 1e-14). ``exact``
keeps each kind's constants, filters and token order, and puts the variable positions last, where
prefix-shared enumeration shares most.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open

from lowprob.distributions.base import TokenDistribution
from lowprob.errors import LowprobError

TABLES_FILE = "tables.safetensors"
LENGTHS = ("cpu", "paper", "exact")
EXACT_SHARPEN = 2.0  # the exact variant's weights are the kind's weights squared (see the module docstring)


# --- token filters (predicates on a token's decoded string) ----------------------------------------
def is_hex(s: str) -> bool:
    return re.fullmatch(r"[0-9a-f]+", s) is not None


def is_camel(s: str) -> bool:
    return (len(s) > 1 and s[0].isupper() and s[1:].islower() and " " not in s
            and s not in ("None", "True", "False"))


def is_caps(s: str) -> bool:
    """Upper-case letters and ,.?!:; with at least one letter (see the module docstring)."""
    return len(s) > 1 and re.fullmatch(r"[A-Z,.?!:;]+", s) is not None and re.search(r"[A-Z]", s) is not None


def is_start_word(s: str) -> bool:
    return re.fullmatch(r"[A-Za-z]+", s) is not None


def is_middle_word(s: str) -> bool:
    return (len(s) > 1 and re.fullmatch(r" [A-Za-z,.?!:;]+", s) is not None) or s in (",", ".", "!", "?", ";")


def is_spanish(s: str) -> bool:
    return s != "" and all(ch.isalpha() or ch.isspace() for ch in s)


def icl_word_filter(letter: str) -> Callable[[str], bool]:
    return lambda s: (len(s) >= 5 and re.fullmatch(r" [^\W\d_]+", s) is not None
                      and s[1].lower() == letter.lower())


# --- the shipped frequency tables ----------------------------------------------------------------
@dataclass(frozen=True)
class Tables:
    counts: dict[str, np.ndarray]  # kind -> unigram counts over the vocabulary (training split)
    hex_weights: np.ndarray  # frequency of each token when random hex text is tokenised
    tokenizer_vocab_sha256: str  # the tokenizer the counts are over (``Tokenizer.vocab_sha256``)


def tables_path() -> Path:
    return Path(str(resources.files("lowprob.distributions") / "data" / TABLES_FILE))


@cache
def load_tables(path: Path | None = None) -> Tables:
    path = path or tables_path()
    with safe_open(str(path), framework="np") as f:
        meta = f.metadata()
        arrays = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
    counts = {k.removeprefix("counts_"): v for k, v in arrays.items() if k.startswith("counts_")}
    return Tables(counts, arrays["hex_weights"], meta["tokenizer_vocab_sha256"])


# --- building blocks -----------------------------------------------------------------------------
class _Builder:
    """Turns filters and frequency tables into per-position (ids, probs) specs for one tokenizer."""

    def __init__(self, tokenizer, tables: Tables) -> None:
        self.tok = tokenizer
        self.tables = tables
        self.strings = [tokenizer.id_to_token(i) for i in range(tokenizer.vocab_size)]

    def single(self, text: str) -> int:
        ids = self.tok.encode(text)
        if len(ids) != 1:
            raise LowprobError(f"{text!r} is not a single token in this tokenizer ({ids})")
        return ids[0]

    def constants(self, text: str) -> list[int]:
        return self.tok.encode(text)

    def weighted(self, weights: np.ndarray, keep: Callable[[str], bool] | None = None,
                 top_k: int | None = None, exclude: tuple[int, ...] = ()) -> tuple[np.ndarray, np.ndarray]:
        """Tokens passing ``keep`` with positive weight, the ``top_k`` heaviest, renormalised."""
        ids = np.array([i for i in range(len(self.strings)) if weights[i] > 0 and i not in exclude
                        and (keep is None or keep(self.strings[i]))], dtype=np.int64)
        if len(ids) == 0:
            raise LowprobError("a token filter selected no token; the tables do not fit this tokenizer")
        ids = ids[np.argsort(-weights[ids], kind="stable")][:top_k]
        w = weights[ids].astype(np.float64)
        return ids, w / w.sum()


@dataclass(frozen=True)
class PaperRecipe:
    description: str
    reps: dict[str, int]  # length variant -> repetition count
    build: Callable[[_Builder, int], list[int | tuple[np.ndarray, np.ndarray]]]  # one spec per position
    exact_top_k: int | None = None  # the exact variant keeps this many most likely tokens per position


def _hex(b: _Builder, n: int) -> list:
    return [b.tok.bos_id] + [b.weighted(b.tables.hex_weights, is_hex)] * n


def _camel(b: _Builder, n: int) -> list:
    return [b.tok.bos_id] + [b.weighted(b.tables.counts["code"], is_camel)] * n


def _code1024(b: _Builder) -> tuple:
    return b.weighted(b.tables.counts["code"], top_k=1024, exclude=(b.tok.bos_id,))


def _colon(b: _Builder, n: int) -> list:
    return [b.tok.bos_id] + [_code1024(b)] * n + [b.single(":")]


def _if(b: _Builder, n: int) -> list:
    return [b.tok.bos_id, b.single(" if")] + [_code1024(b)] * n


def _caps(b: _Builder, n: int) -> list:
    pronoun = (np.array([b.single("He"), b.single("We")]), np.array([0.5, 0.5]))
    caps = b.weighted(b.tables.counts["english"], is_caps, top_k=1024)
    return [b.tok.bos_id, pronoun, *b.constants(' screamed: "')] + [caps] * n


def _english(b: _Builder, n: int) -> list:
    start = b.weighted(b.tables.counts["english"], is_start_word)
    middle = b.weighted(b.tables.counts["english"], is_middle_word)
    return [b.tok.bos_id, start] + [middle] * n


def _spanish(b: _Builder, n: int) -> list:
    return [b.tok.bos_id] + [b.weighted(b.tables.counts["spanish"], is_spanish, top_k=1024)] * n


ICL_LETTERS = "ARCTHEORY"


def _icl(b: _Builder, n: int) -> list:
    """``n`` (letter, " for", word) triples spelling ARCTHEORY, then a query letter and " for"."""
    positions: list = [b.tok.bos_id]
    for k, letter in enumerate(ICL_LETTERS[:n]):
        word = b.weighted(b.tables.counts["english"], icl_word_filter(letter))
        positions += [b.single(letter if k == 0 else " " + letter), b.single(" for"), word]
    query = np.array([b.single(" " + chr(ord("A") + i)) for i in range(26)])
    return [*positions, (query, np.full(26, 1 / 26)), b.single(" for")]


PAPER_DISTRIBUTIONS: dict[str, PaperRecipe] = {
    "hex": PaperRecipe("BOS, then hex tokens weighted by their frequency in tokenised random hex text",
                       {"paper": 32, "cpu": 14, "exact": 4}, _hex, exact_top_k=64),
    "camel": PaperRecipe("BOS, then camelCase tokens weighted by code frequency",
                         {"paper": 32, "cpu": 14, "exact": 4}, _camel, exact_top_k=64),
    "colon": PaperRecipe("BOS, the 1024 most frequent code tokens, then a constant ':'",
                         {"paper": 32, "cpu": 13, "exact": 4}, _colon, exact_top_k=64),
    "if": PaperRecipe("BOS, a constant ' if', then the 1024 most frequent code tokens",
                      {"paper": 32, "cpu": 13, "exact": 4}, _if, exact_top_k=64),
    "caps": PaperRecipe("BOS, 'He'/'We', ' screamed: \"' as constants, then CAPS tokens",
                        {"paper": 16, "cpu": 8, "exact": 4}, _caps, exact_top_k=54),
    "english": PaperRecipe("BOS, a word start, then English words and punctuation",
                           {"paper": 24, "cpu": 13, "exact": 3}, _english, exact_top_k=64),
    "spanish": PaperRecipe("BOS, then the 1024 most frequent Spanish letter/space tokens",
                           {"paper": 24, "cpu": 14, "exact": 4}, _spanish, exact_top_k=64),
    "icl": PaperRecipe("BOS, (letter, ' for', word) triples spelling ARCTHEORY, a query letter, ' for'",
                       {"paper": 9, "cpu": 3, "exact": 3}, _icl),
}


def _most_likely(ids: np.ndarray, probs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` most likely tokens of a position (ties by id), weights sharpened and renormalised."""
    keep = np.lexsort((ids, -probs))[:k]
    sharp = probs[keep] ** EXACT_SHARPEN
    return ids[keep], sharp / sharp.sum()


def paper_distribution(name: str, model, length: str = "cpu") -> TokenDistribution:
    """One of the eight benchmark distributions over ``model``'s tokenizer (the shipped one)."""
    if name not in PAPER_DISTRIBUTIONS:
        raise LowprobError(f"unknown distribution {name!r}: choose one of {', '.join(PAPER_DISTRIBUTIONS)}")
    if length not in LENGTHS:
        raise LowprobError(f"length must be one of {', '.join(LENGTHS)}, got {length!r}")
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None:
        raise LowprobError("the paper distributions are defined over a tokenizer; this model has none")
    tables = load_tables()
    if tokenizer.vocab_sha256() != tables.tokenizer_vocab_sha256:
        raise LowprobError("the paper distributions' frequency tables belong to the shipped tokenizer; "
                           "this model uses another one (build tables for it with "
                           "build_tables in the repository's tools/build_tables.py)")
    recipe = PAPER_DISTRIBUTIONS[name]
    specs = recipe.build(_Builder(tokenizer, tables), recipe.reps[length])
    if length == "exact" and recipe.exact_top_k is not None:
        specs = [p if isinstance(p, int) else _most_likely(*p, recipe.exact_top_k) for p in specs]
    positions = [p if isinstance(p, int) else (torch.from_numpy(p[0]), torch.from_numpy(p[1])) for p in specs]
    return TokenDistribution.from_positions(positions, vocab_size=model.d_vocab, n_ctx=model.n_ctx,
                                            name=f"{name}-{length}")
