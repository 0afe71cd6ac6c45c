"""Events: binary properties of the last position's logits, and the text that names them.

An estimator sees an event through two functions of a batch of logits: ``indicator`` (did the event
happen?) and ``score`` (a differentiable "how close", which gradient-based proposals tilt towards and
activation-based methods extrapolate). A new predicate only implements these two (plus ``describe``
for results); estimators that need nothing else work with it unchanged.

Ties follow ``torch.argmax``: among equal logits the lowest id ranks first. So a token's *rank* is
the number of tokens with a larger logit plus those with an equal logit and a lower id, and
"argmax is t" is "rank of t is 0".
"""

from __future__ import annotations

import json
import math
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lowprob.checks import integer, named
from lowprob.errors import LowprobError

if TYPE_CHECKING:
    from torch import Tensor


class Event(ABC):
    """A predicate on last-position logits [B, d_vocab]."""

    @abstractmethod
    def indicator(self, logits: Tensor) -> Tensor:
        """Bool [B]: whether the event happened."""

    @abstractmethod
    def score(self, logits: Tensor) -> Tensor:
        """Float [B], differentiable: larger means closer to the event."""

    @abstractmethod
    def tokens_named(self) -> tuple[int, ...]:
        """The token ids the event is about (checked against the model's vocabulary)."""

    @abstractmethod
    def describe(self, tokenizer=None) -> dict[str, Any]:
        """What the event is, as JSON for results: ``kind``, its parameters, and a human ``label``."""

    def validate(self, model) -> None:
        """Raise a clear error if the event makes no sense for ``model``."""
        for token in self.tokens_named():
            if not 0 <= token < model.d_vocab:
                raise LowprobError(f"target token must be an id in 0..{model.d_vocab - 1}, got {token}")

    def probability_from_argmax(self, argmax_probabilities: Tensor) -> float | None:
        """P(event) from a table of argmax-token probabilities, or None if the table cannot tell."""
        return None


def _token_id(value: Any) -> int:
    """An integer id from anything integer-like (``np.int64``, a 0-dim integer tensor), else an error."""
    token = integer(value)
    if token is None:
        raise LowprobError(f"target token must be an integer id, got {value!r}")
    return token


def _rank(logits: Tensor, token: int) -> Tensor:
    """[B]: how many tokens rank above ``token`` (larger logit, or equal logit and lower id)."""
    target = logits[:, token : token + 1]
    above = (logits > target).sum(-1)
    return above + (logits[:, :token] == target).sum(-1)


def _max_around(logits: Tensor, token: int) -> tuple[Tensor, Tensor]:
    """[B] each: the largest logit before ``token`` and after it (-inf where there is none). Two reductions
    over views, no copy: estimators score every row they evaluate, often more rows than they forward."""
    none = logits.new_full(logits.shape[:1], -math.inf)
    below = logits[:, :token].amax(-1) if token > 0 else none
    above = logits[:, token + 1:].amax(-1) if token + 1 < logits.shape[1] else none
    return below, above


def _best_other(logits: Tensor, token: int, k: int = 1) -> Tensor:
    """[B]: the k-th largest logit among the tokens other than ``token``."""
    if k == 1:
        below, above = _max_around(logits, token)
        return below.maximum(above)
    others = logits.clone()
    others[:, token] = -math.inf
    return others.topk(k, dim=-1).values[:, k - 1]


def _shown(token: int, tokenizer) -> str:
    return f"{tokenizer.decode([token])!r} (id {token})" if tokenizer is not None else f"id {token}"


def _text(token: int, tokenizer) -> str | None:
    return tokenizer.decode([token]) if tokenizer is not None else None


@dataclass(frozen=True)
class ArgmaxIs(Event):
    """The last position's argmax is ``token``.

    ``token`` may be any integer-like id (``np.int64``, a 0-dim integer tensor from ``argmax()``);
    it is stored as a plain ``int``.
    """

    token: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "token", _token_id(self.token))

    def indicator(self, logits: Tensor) -> Tensor:
        """``argmax == token`` (the first of tied maxima wins, as ``argmax`` decides) without a full argmax."""
        below, above = _max_around(logits, self.token)
        target = logits[:, self.token]
        return (target > below) & (target >= above)

    def score(self, logits: Tensor) -> Tensor:
        """The target logit, the quantity the benchmark's gradient methods tilt by."""
        return logits[:, self.token]

    def tokens_named(self) -> tuple[int, ...]:
        return (self.token,)

    def probability_from_argmax(self, argmax_probabilities: Tensor) -> float:
        return float(argmax_probabilities[self.token])

    def describe(self, tokenizer=None) -> dict[str, Any]:
        return {"kind": "argmax-is", "token": self.token, "text": _text(self.token, tokenizer),
                "label": f"argmax is {_shown(self.token, tokenizer)}"}


@dataclass(frozen=True)
class ArgmaxIn(Event):
    """The argmax is one of ``tokens`` (say, any way of writing "yes")."""

    tokens: tuple[int, ...]

    def __post_init__(self) -> None:
        if isinstance(self.tokens, (str, bytes)) or not isinstance(self.tokens, Iterable):
            raise LowprobError(f"argmax-in takes a list of token ids, e.g. ArgmaxIn([5, 9]), got {self.tokens!r}")
        tokens = tuple(sorted({_token_id(t) for t in self.tokens}))
        if not tokens:
            raise LowprobError("argmax-in needs at least one token")
        object.__setattr__(self, "tokens", tokens)

    def indicator(self, logits: Tensor) -> Tensor:
        import torch  # here, not above: the CLI reads this module's event forms without loading torch

        return torch.isin(logits.argmax(-1), torch.tensor(self.tokens, device=logits.device))

    def score(self, logits: Tensor) -> Tensor:
        """A smooth maximum of the targets' logits (their log-sum-exp)."""
        return logits[:, list(self.tokens)].logsumexp(-1)

    def tokens_named(self) -> tuple[int, ...]:
        return self.tokens

    def probability_from_argmax(self, argmax_probabilities: Tensor) -> float:
        return float(argmax_probabilities[list(self.tokens)].sum())

    def describe(self, tokenizer=None) -> dict[str, Any]:
        return {"kind": "argmax-in", "tokens": list(self.tokens), "texts": [_text(t, tokenizer) for t in self.tokens],
                "label": "argmax is one of " + ", ".join(_shown(t, tokenizer) for t in self.tokens)}


@dataclass(frozen=True)
class InTopK(Event):
    """``token`` is among the ``k`` highest logits (``k = 1`` is ``ArgmaxIs``)."""

    token: int
    k: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "token", _token_id(self.token))
        k = integer(self.k)
        if k is None or k < 1:
            raise LowprobError(f"top-k needs a positive integer k, got {self.k!r}")
        object.__setattr__(self, "k", k)

    def indicator(self, logits: Tensor) -> Tensor:
        return _rank(logits, self.token) < self.k

    def score(self, logits: Tensor) -> Tensor:
        """The target's logit minus the k-th largest other logit (≥ 0 about when the event happens)."""
        return logits[:, self.token] - _best_other(logits, self.token, self.k)

    def tokens_named(self) -> tuple[int, ...]:
        return (self.token,)

    def validate(self, model) -> None:
        super().validate(model)
        if self.k > model.d_vocab:
            raise LowprobError(f"top-k: k = {self.k} exceeds the vocabulary ({model.d_vocab} tokens)")

    def describe(self, tokenizer=None) -> dict[str, Any]:
        return {"kind": "top-k", "token": self.token, "text": _text(self.token, tokenizer), "k": self.k,
                "label": f"{_shown(self.token, tokenizer)} is in the top {self.k}"}


@dataclass(frozen=True)
class MarginAtLeast(Event):
    """``token``'s logit exceeds every other logit by at least ``margin`` (a confident argmax)."""

    token: int
    margin: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "token", _token_id(self.token))
        if isinstance(self.margin, bool) or not isinstance(self.margin, (int, float)) or not math.isfinite(self.margin):
            raise LowprobError(f"margin must be a finite number, got {self.margin!r}")

    def indicator(self, logits: Tensor) -> Tensor:
        return self.score(logits) >= self.margin

    def score(self, logits: Tensor) -> Tensor:
        """The target's logit minus the largest other logit."""
        return logits[:, self.token] - _best_other(logits, self.token)

    def tokens_named(self) -> tuple[int, ...]:
        return (self.token,)

    def describe(self, tokenizer=None) -> dict[str, Any]:
        return {"kind": "margin", "token": self.token, "text": _text(self.token, tokenizer), "margin": self.margin,
                "label": f"{_shown(self.token, tokenizer)} leads every other logit by >= {self.margin:g}"}


@dataclass(frozen=True)
class ProbabilityAbove(Event):
    """The model gives ``token`` a next-token probability of at least ``q``."""

    token: int
    q: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "token", _token_id(self.token))
        if isinstance(self.q, bool) or not isinstance(self.q, (int, float)) or not 0 < self.q <= 1:
            raise LowprobError(f"prob-above needs a probability q in (0, 1], got {self.q!r}")

    def indicator(self, logits: Tensor) -> Tensor:
        return self.score(logits) >= math.log(self.q)

    def score(self, logits: Tensor) -> Tensor:
        """The token's log-probability."""
        return logits.log_softmax(-1)[:, self.token]

    def tokens_named(self) -> tuple[int, ...]:
        return (self.token,)

    def describe(self, tokenizer=None) -> dict[str, Any]:
        return {"kind": "prob-above", "token": self.token, "text": _text(self.token, tokenizer), "q": self.q,
                "label": f"P({_shown(self.token, tokenizer)}) >= {self.q:g}"}


@dataclass(frozen=True)
class Generates:
    """Within ``steps`` sampled tokens, the continuation contains one of ``patterns`` (token sequences).

    The randomness is the prompt's and the sampling's: tokens are drawn from softmax(logits /
    ``temperature``) over the ``top_k`` largest logits (all when None); temperature 0 is greedy
    decoding. A set of single tokens ("any of these words") is a set of one-token patterns.
    Not a predicate on one position's logits, so only methods declared for generation events
    estimate it (``lowprob methods``).
    """

    patterns: tuple[tuple[int, ...], ...]
    steps: int
    temperature: float = 1.0
    top_k: int | None = None

    def __post_init__(self) -> None:
        if not _sequences(self.patterns):
            raise LowprobError(f"generates looks for token sequences, e.g. Generates([[5, 9], [7]], steps=20), got "
                               f"{self.patterns!r}")
        patterns = tuple(tuple(_token_id(t) for t in p) for p in self.patterns)
        if not patterns or not all(patterns):
            raise LowprobError("generates needs at least one non-empty token sequence to look for")
        object.__setattr__(self, "patterns", patterns)
        steps = integer(self.steps)
        if steps is None or steps < 1:
            raise LowprobError(f"generates: steps must be a positive integer, got {self.steps!r}")
        object.__setattr__(self, "steps", steps)
        t = self.temperature
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t < 0:
            raise LowprobError(f"generates: temperature must be a finite number >= 0 (0: greedy), got {t!r}")
        if self.top_k is not None:
            top_k = integer(self.top_k)
            if top_k is None or top_k < 1:
                raise LowprobError(f"generates: top_k must be a positive integer or absent, got {self.top_k!r}")
            object.__setattr__(self, "top_k", top_k)

    def tokens_named(self) -> tuple[int, ...]:
        return tuple(t for p in self.patterns for t in p)

    def validate(self, model) -> None:
        for token in self.tokens_named():
            if not 0 <= token < model.d_vocab:
                raise LowprobError(f"pattern token must be an id in 0..{model.d_vocab - 1}, got {token}")
        if self.top_k is not None and self.top_k > model.d_vocab:
            raise LowprobError(f"generates: top_k = {self.top_k} exceeds the vocabulary ({model.d_vocab} tokens): "
                               f"leave it out to sample from every token")

    def describe(self, tokenizer=None) -> dict[str, Any]:
        shown = " or ".join(repr(tokenizer.decode(list(p))) if tokenizer is not None else str(list(p))
                            for p in self.patterns)
        sampling = "greedy" if self.temperature == 0 else f"temperature {self.temperature:g}"
        return {"kind": "generates", "patterns": [list(p) for p in self.patterns], "steps": self.steps,
                "temperature": self.temperature, "top_k": self.top_k,
                "label": f"{shown} within {self.steps} tokens ({sampling}"
                         f"{f', top {self.top_k}' if self.top_k else ''})"}


def _sequences(value: Any) -> bool:
    """Whether ``value`` is a collection of collections (not text): the shape of ``Generates.patterns``."""
    def collection(v: Any) -> bool:
        return isinstance(v, Iterable) and not isinstance(v, (str, bytes))

    return collection(value) and all(collection(p) for p in value)


EVENT_FORMS = ("argmax-is: TOKEN | argmax-in: TOKEN, TOKEN, ... | top-k: TOKEN, K | margin: TOKEN, M | "
               "prob-above: TOKEN, Q | generates: TEXT, ..., steps=N[, temperature=T][, top_k=K]  "
               "(TOKEN: id:N, or a JSON string such as \" yes\"; a bare N is an id unless it is also a token's "
               "text; TEXT: a JSON string, any number of tokens)")


@dataclass(frozen=True)
class _Id:
    """``id:N`` in event text: a token id, never a token's text."""

    value: int


@dataclass(frozen=True)
class _Option:
    """``NAME=VALUE`` in event text (a ``generates`` option)."""

    name: str
    value: Any


def family(event: Event | Generates) -> str:
    """The family of an event, what a method declares it estimates: "generation" or "logits"."""
    return "generation" if isinstance(event, Generates) else "logits"


def family_of_text(text: str) -> str:
    """The family of the event ``text`` names (``EVENT_FORMS``), known before a tokenizer is at hand to parse it."""
    return "generation" if text.partition(":")[0].strip() == "generates" else "logits"


def parse_event(text: str, tokenizer, d_vocab: int) -> Event | Generates:
    """An event from its text form (``EVENT_FORMS``), e.g. ``argmax-in: " yes", " sure"``.

    TOKENs are read as ``--target`` reads them (``parse_token``): a bare number that is also a
    token's text is refused as ambiguous, whatever the event kind.
    """
    if not isinstance(text, str):
        raise LowprobError(f"an event's text must be a string such as 'argmax-is: id:8', got {text!r}")
    if integer(d_vocab) is None or d_vocab < 1:
        raise LowprobError(f"d_vocab must be the model's vocabulary size (model.d_vocab), got {d_vocab!r}")
    kind, colon, rest = text.partition(":")
    kind = kind.strip()
    args = _items(rest) if colon else None
    if kind == "generates" and args is not None:
        return _generates(text, args, tokenizer)

    def token(value: Any) -> int:
        return _event_token(value, tokenizer, d_vocab)

    makers = {
        "argmax-is": (lambda a: len(a) == 1, lambda a: ArgmaxIs(token(a[0]))),
        "argmax-in": (lambda a: len(a) >= 1, lambda a: ArgmaxIn(tuple(token(t) for t in a))),
        "top-k": (lambda a: len(a) == 2, lambda a: InTopK(token(a[0]), a[1])),
        "margin": (lambda a: len(a) == 2, lambda a: MarginAtLeast(token(a[0]), a[1])),
        "prob-above": (lambda a: len(a) == 2, lambda a: ProbabilityAbove(token(a[0]), a[1])),
    }
    if kind not in makers or args is None or not makers[kind][0](args):
        raise LowprobError(f"cannot read the event {text!r}: write one of {EVENT_FORMS}")
    return makers[kind][1](args)


GENERATES_OPTIONS = {"steps": int, "temperature": float, "top_k": int}


def _items(rest: str) -> list[Any] | None:
    """The comma-separated items after the colon: JSON values, ``id:N`` (``_Id``) and ``NAME=VALUE``
    (``_Option``, a JSON value); None when one cannot be read."""
    out: list[Any] = []
    for item in (i.strip() for i in _split_top_level(rest)):
        ident = re.fullmatch(r"id:\s*(-?\d+)", item)
        option = re.fullmatch(r"([A-Za-z_]\w*)\s*=(.*)", item, re.DOTALL)
        try:
            out.append(_Id(int(ident[1])) if ident else _Option(option[1], json.loads(option[2])) if option
                       else json.loads(item))
        except json.JSONDecodeError:
            return None
    return out


def _generates(text: str, items: list[Any], tokenizer) -> Generates:
    """``generates: " import os", " eval(", steps=20, temperature=1``: texts, then NAME=VALUE options, each once."""
    texts = [i for i in items if isinstance(i, str)]
    options: dict[str, Any] = {}
    for item in items:
        if not isinstance(item, (str, _Option)):
            raise LowprobError(f"cannot read the event {text!r} ({item!r} is neither a JSON string nor NAME=VALUE): "
                               f"write one of {EVENT_FORMS}")
        if isinstance(item, _Option):
            if item.name in options:
                raise LowprobError(f"cannot read the event {text!r}: {item.name} is given twice; give it once")
            options[item.name] = item.value
    unknown = sorted(set(options) - set(GENERATES_OPTIONS))
    if unknown or "steps" not in options or not texts:
        why = f"unknown option {', '.join(unknown)}" if unknown else "it needs a text and steps=N"
        raise LowprobError(f"cannot read the event {text!r} ({why}): write one of {EVENT_FORMS}")
    if tokenizer is None:
        raise LowprobError("this model has no tokenizer, so a generates event cannot name text")
    patterns = tuple(tuple(tokenizer.encode(t)) for t in texts)
    return Generates(patterns, options["steps"], options.get("temperature", 1.0), options.get("top_k"))


def _split_top_level(text: str) -> list[str]:
    """Split at commas outside JSON strings."""
    items: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for ch in text:
        if ch == "," and not quoted:
            items.append("".join(current))
            current = []
            continue
        current.append(ch)
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
    items.append("".join(current))
    return items


def _event_token(value: Any, tokenizer, d_vocab: int) -> int:
    """A TOKEN of the event syntax, read as ``parse_token`` reads ``--target``: ``id:N`` is an id, a JSON
    string the text of one token, and a bare number an id unless it is also a token's text (ambiguous)."""
    if isinstance(value, _Id):
        return parse_token(f"id:{value.value}", tokenizer, d_vocab)
    if isinstance(value, str):
        return parse_token(json.dumps(value), tokenizer, d_vocab)
    if isinstance(value, int) and not isinstance(value, bool):
        return parse_token(str(value), tokenizer, d_vocab)
    raise LowprobError(f"a TOKEN is an id or a JSON string (id:N, or a bare N that is no token's text), got "
                       f"{value!r}")


def parse_token(spec: str, tokenizer, d_vocab: int) -> int:
    """A token named on the command line: ``id:N`` or a bare ``N`` (an id), or text that is one token.

    Text may be written as a JSON string (``'"8"'``, ``'" en"'``) or plainly (`` en``). A bare number
    that is also the text of a single token is ambiguous (``8``: id 8, or the token "8"?) and refused.
    """
    if spec.startswith("id:") or spec.lstrip("-").isdigit():
        number = spec.removeprefix("id:")
        if not number.lstrip("-").isdigit():
            raise LowprobError(f"{spec!r} is not a token id: write id:N with N an integer")
        token = int(number)
        as_text = _single_token(spec, tokenizer) if not spec.startswith("id:") and tokenizer is not None else None
        if not 0 <= token < d_vocab:
            hint = f" (for the text {spec!r}, write '\"{spec}\"')" if as_text is not None else ""
            raise LowprobError(f"token id must be in 0..{d_vocab - 1}, got {token}{hint}")
        if as_text is not None and as_text != token:
            raise LowprobError(f"token {spec} is ambiguous: token id {token} is {tokenizer.decode([token])!r}, "
                               f"while the text {spec!r} is token id {as_text}; write id:{token} for the id or "
                               f"'\"{spec}\"' (a JSON string) for the text")
        return token
    text = spec
    if spec.startswith('"'):
        try:
            text = json.loads(spec)
        except json.JSONDecodeError:
            raise LowprobError(f"{spec!r} starts with a quote but is not a JSON string") from None
        if not isinstance(text, str):
            raise LowprobError(f"{spec!r} is not a JSON string")
    if tokenizer is None:
        raise LowprobError("this model has no tokenizer: give the target as a token id")
    single = _single_token(text, tokenizer)
    if single is None:
        ids = tokenizer.encode(text)
        raise LowprobError(f"target {text!r} encodes to {len(ids)} tokens {ids}; give one token or its id")
    return single


def _single_token(text: str, tokenizer) -> int | None:
    ids = tokenizer.encode(text)
    return ids[0] if len(ids) == 1 else None


def check_event(value: Any, generation: bool = True) -> None:
    """Refuse what is not an event (a token id, the event's text) with the way to make one; with
    ``generation=False``, refuse a generation event too (what needs the last position's logits)."""
    if isinstance(value, (Event, Generates) if generation else Event):
        return
    if isinstance(value, Generates):
        raise LowprobError("a generates event is not a predicate on the last position's logits: its exact "
                           "probability is lowprob.continuations.exact_generation_probability")
    hint = (f": for the argmax write lowprob.ArgmaxIs({value!r})" if integer(value) is not None
            else ": parse text with lowprob.parse_event(text, model.tokenizer, model.d_vocab)"
            if isinstance(value, str) else "")
    raise LowprobError(f"event must be an event such as lowprob.ArgmaxIs(token_id), got {named(value)}{hint}")
