"""Embedding dropout ("word-level dropout"), Gal & Ghahramani 2016 / AWD-LSTM.

REFERENCE §2.2: one Bernoulli(1-p)/(1-p) mask over vocabulary *rows* per call,
applied to the embedding matrix before the lookup, so every occurrence of a
dropped word type in the batch becomes an all-zero vector. Gradients reach the
embedding through the mask.
"""

import torch
import torch.nn.functional as F
from torch import nn


class EmbeddingDropout(nn.Module):
    """Looks tokens up in ``embedding`` after dropping whole vocabulary rows."""

    def __init__(self, p: float = 0.1):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"embedding dropout probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, embedding: nn.Embedding, tokens: torch.Tensor) -> torch.Tensor:
        weight = embedding.weight
        if self.training and self.p > 0.0:
            mask = weight.new_empty(weight.size(0), 1).bernoulli_(1.0 - self.p) / (1.0 - self.p)
            weight = weight * mask
        return F.embedding(
            tokens, weight, embedding.padding_idx, embedding.max_norm,
            embedding.norm_type, embedding.scale_grad_by_freq, embedding.sparse,
        )

    def extra_repr(self) -> str:
        return f"p={self.p}"
