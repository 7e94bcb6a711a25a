"""Single-headed attention of SHA-RNN with its gating tricks (Merity 2019,
arXiv:1911.11423, §3.1; REFERENCE §7.4).

    q = σ(qs) ⊙ LN_q(W_q x + b_q)            LN_q in fp32
    k = σ(ks) ⊙ K                            K = V = the LN_mem-normalised states
    v = Overparam(σ(vs)) ⊙ V                 Overparam(u) = σ(f) ⊙ tanh(c), [c; f] = W_o u + b_o
    a = softmax(q kᵀ / √d + mask) v          one head of width d

``qs, ks, vs`` start at 0, so every gate is 0.5 at initialisation. There are no
key or value projections. While training, q, v and the attention weights pass
through dropout (k does not: a mask on q already reaches every q·k product).

``qkvs`` and ``r_gate`` are parameters of the reference module that its forward
never uses (its post-mixing branch is disabled); they are kept so that parameter
counts and state dicts match the reference exactly.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn


def causal_memory_mask(length: int, memory: int, like: torch.Tensor) -> torch.Tensor:
    """Additive ``length × (memory + length)`` mask: memory columns open, the current
    window causal (−∞ strictly above the diagonal)."""
    causal = torch.full((length, length), float("-inf"), dtype=like.dtype, device=like.device).triu(1)
    return torch.cat([causal.new_zeros(length, memory), causal], dim=1)


class Overparam(nn.Module):
    """``σ(f) ⊙ tanh(c)`` with ``[c; f] = l1(x)``: an over-parameterised value gate."""

    def __init__(self, dim: int):
        super().__init__()
        self.l1 = nn.Linear(dim, 2 * dim)
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c, f = self.l1(x).split(self.dim, dim=-1)
        return torch.sigmoid(f) * torch.tanh(c)


class SingleHeadAttention(nn.Module):
    def __init__(self, dim: int, dropout: float = 0.0):
        super().__init__()
        self.dim = dim
        self.qs = nn.Parameter(torch.zeros(1, 1, dim))
        self.ks = nn.Parameter(torch.zeros(1, 1, dim))
        self.vs = nn.Parameter(torch.zeros(1, 1, dim))
        self.qkvs = nn.Parameter(torch.zeros(1, 3, dim))  # unused, kept for reference parity
        self.r_gate = nn.Parameter(torch.ones(1, 1, dim))  # unused, kept for reference parity
        self.q = nn.Linear(dim, dim)
        self.qln = nn.LayerNorm(dim, eps=1e-12)
        self.vq = Overparam(dim)
        self.drop = nn.Dropout(dropout)

    def reset_gates(self):
        """The reference's constant initialisation of the gate vectors."""
        with torch.no_grad():
            for p in (self.qs, self.ks, self.vs, self.qkvs):
                p.zero_()
            self.r_gate.fill_(1.0)

    def forward(self, query: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``query`` T×B×d, ``memory`` S×B×d (keys = values, S = M + T), ``mask`` T×S → T×B×d."""
        q = self.qln(self.q(query).float()).to(query.dtype) * torch.sigmoid(self.qs)
        k = memory * torch.sigmoid(self.ks)
        v = memory * self.vq(torch.sigmoid(self.vs))
        q, v = self.drop(q), self.drop(v)
        # batch-major for the matrix products: B×T×d · B×d×S → B×T×S
        scores = torch.bmm(q.transpose(0, 1), k.permute(1, 2, 0)) / math.sqrt(self.dim)
        weights = self.drop(F.softmax(scores + mask, dim=-1))
        return torch.bmm(weights, v.transpose(0, 1)).transpose(0, 1)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, heads=1"
