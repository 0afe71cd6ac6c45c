"""The model protocol: what every estimator, ground truth and the benchmark need from a model.

Written once as a ``typing.Protocol`` so that an adapter author reads one place: the shipped
``Transformer`` implements it, and so do the adapters for Hugging Face and TransformerLens models
(``lowprob.models.adapters``). Gradient methods differentiate ``final_residual`` with respect to the
token embeddings, so the protocol starts from embeddings rather than token ids.

**Optional capabilities.** A model may also offer faster ways to do what the protocol already
allows; code outside ``models/`` asks for one with ``capability(model, name)`` and, when the model
offers none (or its method returns None), takes the protocol's plain path, which gives the same
answers for more compute. Nothing outside ``models/`` tests a model's class. The capabilities:

- ``start_decoding(prompts [B, T] on model.device) -> models.decoding.Decoding``: incremental decoding
  with a cache (the shipped ``Transformer``, Hugging Face adapters, templated models); without it,
  every step recomputes the whole sequence.
- ``decoding_model(prompt_length) -> (model, length)``: the model that runs a continuation of this
  model's prompts and a prompt's length in its positions, at the longest (a templated model: the
  real model, whose tokens a template's values expand to); without it, the model itself.
- ``fast_argmax(supports) -> models.argmax.FastArgmax | None``: the last position's argmax of any
  sequences over a product space (``supports``: each position's token ids, sorted), computing only
  what the argmax needs.
- ``prefix_tree(supports) -> models.prefix_tree.PrefixTree | None``: evaluation over a product space
  that computes each shared prefix once (exact enumeration, completions of the last variable position).

- ``last_features(tokens [B, T]) -> (logits [B, d_vocab], features [B, F], readout [F, d_model]) | None``:
  the last position's logits and internal features (the shipped ``Transformer``: every block's MLP
  pre-activations) from one forward, and what each feature's unit writes into the residual stream per
  unit of activation; what a white-box probe (``estimators.swap_scan``) reads. Without it the probe
  reads the final residual, which every model exposes.
- ``gap_bounds(supports) -> models.gap_bounds.TransformerBounds | None``: sound bounds on the last
  position's logit gaps over sets of sequences of a product space (the shipped one-block ``Transformer``);
  certified bounds (``lowprob.bound``) close whole sets with it. Without it they run every input.

The shipped ``Transformer`` offers ``fast_argmax`` and ``prefix_tree`` on the CPU only (a GPU's plain batched forward is
already cheap per sequence). Every model prices its own forward pass (``flops_per_sequence``).
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

    tokenizer: Any
    name: str

    @property  # read-only members: a parameter, a buffer or a view an adapter computes all satisfy them
    def W_E(self) -> Tensor: ...

    @property
    def W_U(self) -> Tensor: ...

    @property
    def b_U(self) -> Tensor | None: ...

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


CAPABILITIES = ("start_decoding", "decoding_model", "fast_argmax", "prefix_tree", "last_features", "gap_bounds")


def capability(model: Any, name: str) -> Any:
    """The optional capability ``name`` that ``model`` offers (a bound method; see the module docstring), or None."""
    if name not in CAPABILITIES:
        raise ValueError(f"{name!r} is not an optional model capability; they are {', '.join(CAPABILITIES)}")
    return getattr(model, name, None)


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
