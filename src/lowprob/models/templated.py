"""The templated model: a language model seen through a prompt template (``distributions.slots``).

Its input ids are the template's pieces and its slots' values, each standing for a sequence of the
real model's tokens, so a template becomes an ordinary product distribution over these ids and every
estimator works on it unchanged. Gradients reach every token of a value; outputs are the real model's.
It offers cached decoding (one cache per layout of value lengths) and says which model decodes its
prompts (``decoding_model``), the optional capabilities of ``models.protocol``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lowprob.models.decoding import Decoding, GroupedDecoding, start_decoding
from lowprob.models.protocol import LanguageModel, capability


class TemplatedModel(nn.Module):
    """A model whose input ids are template pieces and slot values (see the module docstring).

    Input id v stands for the token sequence ``sequences[v]``; its embedding row is those tokens'
    embeddings laid end to end, zero-padded to the longest, followed by a one-hot of its length (read,
    not differentiated, to cut the padding off). Outputs are the real model's.
    """

    W_E: Tensor  # buffers, registered in __init__
    sequences: Tensor

    def __init__(self, model, sequences: list[tuple[int, ...]], n_units: int, longest: int) -> None:
        super().__init__()
        self.model = model
        self.k_max = max(map(len, sequences))
        self.d_model = model.W_E.shape[1]
        self._n_units, self.longest = n_units, longest
        w_e = model.W_E.detach()
        table = torch.zeros(model.d_vocab, self.k_max * self.d_model + self.k_max, dtype=w_e.dtype,
                            device=w_e.device)
        for v, seq in enumerate(sequences):
            table[v, : len(seq) * self.d_model] = w_e[list(seq)].reshape(-1)
            table[v, self.k_max * self.d_model + len(seq) - 1] = 1.0
        self.register_buffer("W_E", table)
        # the expansion itself, so that the model's sha256 (what ground-truth files check) covers it
        self.register_buffer("sequences", torch.tensor([list(s) + [-1] * (self.k_max - len(s)) for s in sequences],
                                                     device=w_e.device))
        self.tokenizer, self.name = getattr(model, "tokenizer", None), getattr(model, "name", "")

    @property
    def n_ctx(self) -> int:
        return self._n_units

    @property
    def d_vocab(self) -> int:
        return self.model.d_vocab

    @property
    def device(self) -> torch.device:
        return self.W_E.device

    @property
    def W_U(self) -> Tensor:
        return self.model.W_U

    @property
    def b_U(self) -> Tensor | None:
        return self.model.b_U

    def final_residual(self, token_embeddings: Tensor) -> Tensor:
        """Expand each row's units into real token embeddings, run the model per layout, gather."""
        b, units, _ = token_embeddings.shape
        k, d = self.k_max, self.d_model
        blocks = token_embeddings[..., : k * d].reshape(b, units, k, d)
        lengths = token_embeddings[..., k * d :].detach().argmax(-1) + 1  # [B, units]
        layouts, which = torch.unique(lengths, dim=0, return_inverse=True)
        out = token_embeddings.new_zeros(b, d)
        for j, layout in enumerate(layouts.tolist()):
            rows = (which == j).nonzero()[:, 0]
            seq = torch.cat([blocks[rows, u, :n] for u, n in enumerate(layout)], dim=1)  # [m, T, d]
            out = out.index_put((rows,), self.model.final_residual(seq))
        return out

    def unembed(self, resid: Tensor) -> Tensor:
        return self.model.unembed(resid)

    def expand(self, units: Tensor) -> list[tuple[Tensor, Tensor]]:
        """The real token sequences of rows of input ids, grouped by length: (rows, tokens [m, T])."""
        seqs = self.sequences.to(units.device)[units]  # [B, units, k_max], -1 padded
        lengths = (seqs >= 0).sum(-1)  # [B, units]
        layouts, which = torch.unique(lengths, dim=0, return_inverse=True)
        groups = []
        for j in range(len(layouts)):
            rows = (which == j).nonzero()[:, 0]
            picked = seqs[rows]
            groups.append((rows, picked[picked >= 0].view(len(rows), -1)))
        return groups

    def logits(self, tokens: Tensor) -> Tensor:
        return self.unembed(self.final_residual(self.W_E[tokens]))

    def flops_per_sequence(self, seq_len: int) -> float:
        """Priced at the longest sequence the template can produce (an upper bound), whatever ``seq_len``."""
        return self.model.flops_per_sequence(self.longest)

    # --- optional capabilities (models.protocol) ------------------------------------------------
    def start_decoding(self, prompts: Tensor) -> Decoding:
        """Prompts of a template's values have different token lengths: one decoding per length, seen as one batch."""
        return GroupedDecoding([(rows, start_decoding(self.model, tokens)) for rows, tokens in self.expand(prompts)],
                               len(prompts))

    def last_features(self, units: Tensor) -> tuple[Tensor, Tensor, Tensor] | None:
        """The real model's ``last_features`` of the prompts these rows of input ids stand for (None where the
        real model offers none)."""
        features_of = capability(self.model, "last_features")
        if features_of is None:
            return None
        logits, features, readout = None, None, None
        for rows, tokens in self.expand(units):
            lg, ft, readout = features_of(tokens)
            if logits is None or features is None:
                logits, features = lg.new_zeros(len(units), lg.shape[1]), ft.new_zeros(len(units), ft.shape[1])
            logits[rows], features[rows] = lg, ft
        assert logits is not None and features is not None and readout is not None  # units has rows
        return logits, features, readout

    def decoding_model(self, prompt_length: int) -> tuple[LanguageModel, int]:
        """The real model continues the prompts, which take up to ``longest`` of its positions."""
        return self.model, self.longest
