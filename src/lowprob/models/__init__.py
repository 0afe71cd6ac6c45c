"""Models: the protocol and its optional capabilities, the transformer, its tokenizer, the shipped zoo and adapters."""

from lowprob.models.adapters import from_hugging_face, from_transformer_lens, load_hugging_face
from lowprob.models.protocol import LanguageModel, model_sha256, resolve_device
from lowprob.models.tokenizer import Tokenizer
from lowprob.models.transformer import Transformer, TransformerConfig
from lowprob.models.zoo import SHIPPED_CONFIGS, load_model, save_model

__all__ = ["SHIPPED_CONFIGS", "LanguageModel", "Tokenizer", "Transformer", "TransformerConfig", "from_hugging_face",
           "from_transformer_lens", "load_hugging_face", "load_model", "model_sha256", "resolve_device", "save_model"]
