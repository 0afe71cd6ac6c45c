"""TransformerLens ``HookedTransformer`` models behind the model protocol.

TransformerLens already uses lowprob's names (``W_E``, ``W_U``, ``b_U``); what the adapter adds is the
path from token embeddings: the positional embedding (for standard positions; rotary ones live in
attention), the blocks via ``start_at_layer``/``stop_at_layer``, then ``ln_final``. TransformerLens
4 replaced ``HookedTransformer`` by a bridge over Hugging Face models: wrap those with
``from_hugging_face`` instead.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from lowprob.errors import LowprobError
from lowprob.models.adapters.base import AdaptedLM

POSITIONS = ("standard", "rotary")


class TransformerLensLM(AdaptedLM):
    def __init__(self, model: Any, tokenizer: Any = None, name: str = "") -> None:
        cfg = model.cfg
        if cfg.positional_embedding_type not in POSITIONS:
            raise LowprobError(f"positional embedding {cfg.positional_embedding_type!r} is not supported; "
                               f"supported: {', '.join(POSITIONS)}")
        super().__init__(cfg.n_ctx, cfg.d_vocab_out, cfg.d_model, tokenizer, name or getattr(cfg, "model_name", ""))
        self.tl = model.eval()
        self.tl.requires_grad_(False)

    @property
    def W_E(self) -> Tensor:
        return self.tl.W_E

    @property
    def W_U(self) -> Tensor:
        return self.tl.W_U

    @property
    def b_U(self) -> Tensor | None:
        return self.tl.b_U

    def hidden(self, token_embeddings: Tensor) -> Tensor:
        resid = token_embeddings
        if self.tl.cfg.positional_embedding_type == "standard":
            resid = resid + self.tl.W_pos[: resid.shape[1]]
        resid = self.tl(resid, start_at_layer=0, stop_at_layer=self.tl.cfg.n_layers)
        ln_final = getattr(self.tl, "ln_final", None)  # absent when the model has no normalisation
        return ln_final(resid) if ln_final is not None else resid


def from_transformer_lens(model: Any, tokenizer: Any = None, name: str = "") -> TransformerLensLM:
    """Wrap a TransformerLens ``HookedTransformer`` (TransformerLens 3.x)."""
    if not (hasattr(model, "cfg") and hasattr(model, "W_E") and hasattr(model, "W_pos")):
        raise LowprobError(f"from_transformer_lens takes a HookedTransformer, got {type(model).__name__}")
    return TransformerLensLM(model, tokenizer, name)

