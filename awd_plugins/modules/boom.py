"""Boom feed-forward layer of SHA-RNN (Merity 2019, "Single Headed Attention RNN:
Stop Thinking With Your Head", arXiv:1911.11423, §3; REFERENCE §7.3).

    u = Dropout(GELU(W_1 x + b_1))          W_1: d → n (n = 4096 for d = 1024)
    out = Σ_k u[..., k·d : (k+1)·d]          k = 0 … ⌊n/d⌋ − 1

There is no second projection back to d: the n features are cut into ⌊n/d⌋
contiguous chunks of width d and summed (features past the last whole chunk are
ignored, as in the reference). GELU is the sigmoid approximation u·σ(1.702·u).
"""

import torch
from torch import nn


def sigmoid_gelu(x: torch.Tensor) -> torch.Tensor:
    """GELU approximated as ``x·σ(1.702·x)`` (Hendrycks & Gimpel 2016), the reference's choice."""
    return x * torch.sigmoid(1.702 * x)


class Boom(nn.Module):
    """``d_model → hidden`` expansion, GELU, dropout, then a sum of the d-wide chunks."""

    def __init__(self, d_model: int, hidden: int, dropout: float = 0.0):
        super().__init__()
        if hidden < d_model:
            raise ValueError(f"Boom width {hidden} must be at least the model width {d_model}")
        self.linear1 = nn.Linear(d_model, hidden)
        self.dropout = nn.Dropout(dropout)
        self.d_model = d_model

    @property
    def chunks(self) -> int:
        return self.linear1.out_features // self.d_model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = self.dropout(sigmoid_gelu(self.linear1(x)))
        u = u[..., : self.chunks * self.d_model]
        return u.view(*u.shape[:-1], self.chunks, self.d_model).sum(dim=-2)

    def extra_repr(self) -> str:
        return f"chunks={self.chunks}"
