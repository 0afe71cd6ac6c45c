"""Events: binary properties of the last position's logits.

An estimator sees an event through two functions of a batch of logits: ``indicator`` (did the event
happen?) and ``score`` (a differentiable "how close", which gradient-based proposals tilt towards and
activation-based methods extrapolate). New predicates (a margin, top-k membership, …) only implement
these two; estimators that need nothing else work with them unchanged.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from torch import Tensor

from lowprob.errors import LowprobError


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


@dataclass(frozen=True)
class ArgmaxIs(Event):
    """The last position's argmax is ``token`` (ties go to the lowest id, as in ``torch.argmax``)."""

    token: int

    def indicator(self, logits: Tensor) -> Tensor:
        return logits.argmax(-1) == self.token

    def score(self, logits: Tensor) -> Tensor:
        """The target logit, the quantity the benchmark's gradient methods tilt by."""
        return logits[:, self.token]

    def validate(self, model) -> None:
        if isinstance(self.token, bool) or not isinstance(self.token, int) or not 0 <= self.token < model.d_vocab:
            raise LowprobError(f"target token must be an id in 0..{model.d_vocab - 1}, got {self.token!r}")
