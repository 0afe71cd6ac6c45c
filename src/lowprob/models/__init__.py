"""Models: the transformer, its tokenizer, the shipped zoo and the training recipe."""

from lowprob.models.tokenizer import Tokenizer
from lowprob.models.transformer import Transformer, TransformerConfig
from lowprob.models.zoo import SHIPPED_CONFIGS, load_model, save_model

__all__ = ["SHIPPED_CONFIGS", "Tokenizer", "Transformer", "TransformerConfig", "load_model", "save_model"]
