"""Events: binary properties of the last position's logits.

An estimator sees an event through two functions of a batch of logits: ``indicator`` (did the event
happen?) and ``score`` (a differentiable "how close", which gradient-based proposals tilt towards and
activation-based methods extrapolate). New predicates (a margin, top-k membership, …) only implement
these two; estimators that need nothing else work with them unchanged.
"""

from __future__ import annotations

import json
import operator
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

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

    def validate(self, model) -> None:  # noqa: B027 (optional hook, nothing to check by default)
        """Raise a clear error if the event makes no sense for ``model``."""

    @abstractmethod
    def describe(self, tokenizer=None) -> dict[str, Any]:
        """What the event is, as JSON for results: ``kind``, its parameters, and a human ``label``."""


@dataclass(frozen=True)
class ArgmaxIs(Event):
    """The last position's argmax is ``token`` (ties go to the lowest id, as in ``torch.argmax``).

    ``token`` may be any integer-like id (``np.int64``, a 0-dim integer tensor from ``argmax()``);
    it is stored as a plain ``int``.
    """

    token: int

    def __post_init__(self) -> None:
        try:
            if isinstance(self.token, bool):
                raise TypeError
            object.__setattr__(self, "token", operator.index(self.token))
        except TypeError:
            raise LowprobError(f"target token must be an integer id, got {self.token!r}") from None

    def indicator(self, logits: Tensor) -> Tensor:
        return logits.argmax(-1) == self.token

    def score(self, logits: Tensor) -> Tensor:
        """The target logit, the quantity the benchmark's gradient methods tilt by."""
        return logits[:, self.token]

    def validate(self, model) -> None:
        if not 0 <= self.token < model.d_vocab:
            raise LowprobError(f"target token must be an id in 0..{model.d_vocab - 1}, got {self.token}")

    def describe(self, tokenizer=None) -> dict[str, Any]:
        text = tokenizer.decode([self.token]) if tokenizer is not None else None
        shown = f"{text!r} (id {self.token})" if text is not None else f"id {self.token}"
        return {"kind": "argmax-is", "token": self.token, "text": text, "label": f"argmax is {shown}"}


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
            raise LowprobError(f"target {spec} is ambiguous: token id {token} is {tokenizer.decode([token])!r}, "
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
    token = _single_token(text, tokenizer)
    if token is None:
        ids = tokenizer.encode(text)
        raise LowprobError(f"target {text!r} encodes to {len(ids)} tokens {ids}; give one token or its id")
    return token


def _single_token(text: str, tokenizer) -> int | None:
    ids = tokenizer.encode(text)
    return ids[0] if len(ids) == 1 else None
