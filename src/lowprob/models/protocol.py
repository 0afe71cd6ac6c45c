"""The model protocol: what every estimator, ground truth and the benchmark need from a model.

Written once as a ``typing.Protocol`` so that an adapter author reads one place: the shipped
``Transformer`` implements it, and so do the adapters for Hugging Face and TransformerLens models
(``lowprob.models.adapters``). Gradient methods differentiate ``final_residual`` with respect to the
token embeddings, so the protocol starts from embeddings rather than token ids.
"""

from __future__ import annotations

import hashlib
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from lowprob.errors import LowprobError


@runtime_checkable
class LanguageModel(Protocol):
    """A causal LM seen through its last position.

    ``W_E`` [d_vocab, d_model] embeds tokens; ``final_residual`` maps token embeddings [B, T, d_model]
    to the last position's final-normed vector [B, d_model] (positions added inside, differentiable);
    ``unembed`` maps that vector to logits (``W_U`` [d_model, d_vocab] and ``b_U`` or None);
    ``logits`` is the composition for token ids. ``tokenizer`` (encode/decode) may be None for toy
    models; ``name`` is what results call the model. ``device`` is where its weights live: callers
    move token ids there and bring back only what they keep (estimators keep their bookkeeping and
    random draws on the CPU, so a seed gives the same draws on every device).
    """

    W_E: Tensor
    W_U: Tensor
    b_U: Tensor | None
    tokenizer: Any
    name: str

    @property
    def n_ctx(self) -> int: ...

    @property
    def d_vocab(self) -> int: ...

    @property
    def device(self) -> torch.device: ...

    def final_residual(self, token_embeddings: Tensor) -> Tensor: ...

    def unembed(self, resid: Tensor) -> Tensor: ...

    def logits(self, tokens: Tensor) -> Tensor: ...

    def flops_per_sequence(self, seq_len: int) -> float:
        """Forward FLOPs (2 per multiply-add) of one sequence up to the last position's logits."""
        ...

    def state_dict(self) -> dict[str, Tensor]: ...


def model_sha256(model: LanguageModel) -> str:
    """sha256 of a model's parameters and buffers (names, shapes, dtypes and bytes): its identity in files."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().contiguous().cpu()
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())  # reshape: 0-dim tensors cannot change dtype
    return h.hexdigest()


def resolve_device(device: str | torch.device | None) -> torch.device:
    """The torch device a user asked for (``None``: the CPU), refused clearly if this machine lacks it."""
    if device is None:
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise LowprobError(f"unknown device {device!r}: use cpu, cuda or cuda:N") from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise LowprobError(f"device {device!r} asked for, but this machine or torch build has no CUDA GPU "
                               f"(torch.cuda.is_available() is False): use --device cpu")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise LowprobError(f"device {device!r} asked for, but there are only {torch.cuda.device_count()} "
                               f"CUDA device(s)")
    elif resolved.type != "cpu":
        raise LowprobError(f"device {device!r} is not supported: use cpu, cuda or cuda:N")
    return resolved
