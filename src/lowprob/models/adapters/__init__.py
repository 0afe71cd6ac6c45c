"""Adapters: other libraries' language models behind lowprob's model protocol.

``from_hugging_face`` / ``load_hugging_face`` wrap a ``transformers`` causal LM (GPT-2, GPT-NeoX/Pythia,
Llama and the other architectures whose base model takes ``inputs_embeds`` and returns the
final-normed hidden states); ``from_transformer_lens`` wraps a TransformerLens ``HookedTransformer``.
Their libraries are optional extras (``lowprob[hf]``, ``lowprob[tl]``) and load only when used.
"""

from lowprob.models.adapters.hf import from_hugging_face, load_hugging_face
from lowprob.models.adapters.tl import from_transformer_lens

__all__ = ["from_hugging_face", "from_transformer_lens", "load_hugging_face"]
