"""SRU++ (Lei 2021, "When Attention Meets Fast Recurrence", arXiv:2102.12459):
SRU layers whose input transform is a single-head (or multi-head) attention,
REFERENCE §8.2–8.3; the 3.0.0.dev6 ``SRUpp`` / ``SRUppCell`` / ``SRUppAttention``.

For a layer input X (T×B×d) and memory M (the same layer's input in the previous
segment, T_m×B×d, detached; absent on the first segment):

    Z = W_1 [M ; X]           W_1: d → p (no bias), over memory and current rows
    Q = Z[current rows]       (also the residual)
    [K | V] = W_2 Z           W_2: p → 2p; K, V are projected from Z, not from X
    A = softmax(Q Kᵀ/√(p/h) + mask) V        attention-weight dropout
    Y = LN(α·A + Q)           α learned, initialised to 0 (post-LN)
    U = W_3 Dropout(Y)        W_3: p → k·d, initialised Xavier × √(1 − dropout)

and U drives the SRU recurrence (:mod:`awd_plugins.modules.sru`) with skip input
X. Layers without attention (``attention_every_n_layers`` > 1) use
``U = W_3 Dropout(LN(W_1 X))``. Layer i attends iff ``(i + 1) % every == 0``.

Module and parameter names are the reference's (``rnn_lst.{i}.weight_c``,
``.bias``, ``.scale_x``, ``.transform_module.{linear1,linear2,linear3,alpha,
layer_norm}``, W_3 rows interleaved), so a reference ``SRUpp`` state dict loads
with ``load_state_dict`` as it is.

Masks (:func:`attention_mask`) are additive with −10000, not −∞: keys after the
query are blocked (all memory keys visible) while training; the evaluation
("same length") mask also blocks keys more than ``window`` positions back, so a
warmed-up query sees exactly ``window + 1`` keys.
"""

import math
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from awd_plugins.modules.sru import SRULayer, interleaved_linear

MASK_VALUE = -10000.0


def attention_mask(mem_len: int, length: int, window: Optional[int] = None, like: Optional[Tensor] = None) -> Tensor:
    """Additive (length, mem_len + length) mask: query i sits at key position ``mem_len + i``.

    ``window`` None: causal over the current rows, all memory visible (training).
    ``window`` W: additionally only keys ``≥ mem_len + i − W`` (the reference's
    same-length evaluation mask, i.e. its ``triu(1) + tril(−1−W)`` matrix sliced
    ``[mem_len : mem_len + T, : mem_len + T]``).
    """
    device = like.device if like is not None else None
    dtype = like.dtype if like is not None else torch.float32
    query = torch.arange(length, device=device).unsqueeze(1) + mem_len
    key = torch.arange(mem_len + length, device=device).unsqueeze(0)
    blocked = key > query
    if window is not None:
        blocked = blocked | (key < query - window)
    return torch.zeros(blocked.shape, dtype=dtype, device=device).masked_fill_(blocked, MASK_VALUE)


class SRUppAttention(nn.Module):
    """The attention transform of an SRU++ layer (``SRUppAttention``), returns U as (T, B, k, d)."""

    def __init__(self, in_features: int, out_features: int, proj_features: int, num_heads: int = 1,
                 dropout: float = 0.0, attn_dropout: float = 0.0, num_matrices: int = 3):
        super().__init__()
        if proj_features % num_heads != 0:
            raise ValueError(f"proj_features ({proj_features}) must be divisible by num_heads ({num_heads})")
        self.proj_features = proj_features
        self.num_heads = num_heads
        self.num_matrices = num_matrices
        self.attn_dropout = float(attn_dropout)
        self.dropout = nn.Dropout(dropout)
        self.linear1 = nn.Linear(in_features, proj_features, bias=False)
        self.linear2 = nn.Linear(proj_features, 2 * proj_features, bias=False)
        self.linear3 = nn.Linear(proj_features, out_features, bias=False)
        self.alpha = nn.Parameter(torch.zeros(1))
        self.layer_norm = nn.LayerNorm(proj_features)
        self.reset_parameters()

    def reset_parameters(self):
        for lin in (self.linear1, self.linear2, self.linear3):
            nn.init.xavier_uniform_(lin.weight)
        with torch.no_grad():
            self.alpha.zero_()
            if self.dropout.p > 0:
                self.linear3.weight.mul_(math.sqrt(1 - self.dropout.p))
        self.layer_norm.reset_parameters()

    def forward(self, x: Tensor, memory: Optional[Tensor] = None, attn_mask: Optional[Tensor] = None) -> Tensor:
        length, bsz = x.shape[:2]
        mem_len = 0 if memory is None else memory.size(0)
        z = self.linear1(x if mem_len == 0 else torch.cat([memory, x], 0))
        q = z[mem_len:]
        key, value = self.linear2(z).chunk(2, dim=-1)
        heads, hd = self.num_heads, self.proj_features // self.num_heads

        def split(t):  # (S, B, p) → (B, heads, S, hd)
            return t.reshape(t.size(0), bsz, heads, hd).permute(1, 2, 0, 3)

        attn = F.scaled_dot_product_attention(
            split(q), split(key), split(value), attn_mask=attn_mask,
            dropout_p=self.attn_dropout if self.training else 0.0,
        )
        attn = attn.permute(2, 0, 1, 3).reshape(length, bsz, self.proj_features)
        y = self.layer_norm(attn * self.alpha + q)
        return interleaved_linear(self.dropout(y), self.linear3.weight, self.num_matrices)


class SRUppProjectedLinear(nn.Module):
    """The transform of an SRU++ layer without attention: ``W_3 Dropout(LN(W_1 x))``."""

    def __init__(self, in_features: int, out_features: int, proj_features: int, dropout: float = 0.0,
                 num_matrices: int = 3):
        super().__init__()
        self.num_matrices = num_matrices
        self.dropout = nn.Dropout(dropout)
        self.linear1 = nn.Linear(in_features, proj_features, bias=False)
        self.linear2 = nn.Linear(proj_features, out_features, bias=False)
        self.layer_norm = nn.LayerNorm(proj_features)
        self.reset_parameters()

    def reset_parameters(self):
        nn.init.xavier_uniform_(self.linear1.weight)
        nn.init.xavier_uniform_(self.linear2.weight)
        if self.dropout.p > 0:
            with torch.no_grad():
                self.linear2.weight.mul_(math.sqrt(1 - self.dropout.p))
        self.layer_norm.reset_parameters()

    def forward(self, x: Tensor, memory: Optional[Tensor] = None, attn_mask: Optional[Tensor] = None) -> Tensor:
        y = self.layer_norm(self.linear1(x))
        return interleaved_linear(self.dropout(y), self.linear2.weight, self.num_matrices)


class SRUpp(nn.Module):
    """Stack of SRU++ layers (3.0.0.dev6 ``SRUpp`` with ``attn_layer_norm=True``, no cell-level
    LayerNorm, ``rescale=False``): returns ``(h, c stacked (L, B, d), layer inputs)``.

    The layer inputs are what the next segment attends to (its ``memory``).
    """

    def __init__(self, input_size: int, hidden_size: int, proj_size: int, num_layers: int = 2,
                 dropout: float = 0.0, attn_dropout: float = 0.0, num_heads: int = 1, highway_bias: float = -2.0,
                 attention_every_n_layers: int = 1, weight_c_init: float = 1.0, recurrence_impl: str = "auto"):
        super().__init__()
        if attention_every_n_layers < 1:
            raise ValueError(f"attention_every_n_layers must be ≥ 1, got {attention_every_n_layers}")
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.attends = [(i + 1) % attention_every_n_layers == 0 for i in range(num_layers)]
        self.rnn_lst = nn.ModuleList()
        for i in range(num_layers):
            in_features = input_size if i == 0 else hidden_size
            k = 3 if in_features == hidden_size else 4
            if self.attends[i]:
                transform = SRUppAttention(in_features, k * hidden_size, proj_size, num_heads=num_heads,
                                           dropout=dropout, attn_dropout=attn_dropout, num_matrices=k)
            else:
                transform = SRUppProjectedLinear(in_features, k * hidden_size, proj_size, dropout=dropout,
                                                 num_matrices=k)
            # the transform's dropout is on every layer; the recurrence dropout not on the last
            self.rnn_lst.append(SRULayer(in_features, hidden_size, dropout=dropout if i + 1 < num_layers else 0.0,
                                         highway_bias=highway_bias, weight_c_init=weight_c_init,
                                         transform_module=transform, recurrence_impl=recurrence_impl))

    def forward(self, x: Tensor, c0: Optional[Tensor] = None, memory: Optional[List[Optional[Tensor]]] = None,
                attn_mask: Optional[Tensor] = None) -> Tuple[Tensor, Tensor, List[Tensor]]:
        if memory is not None and len(memory) != self.num_layers:
            raise ValueError(f"memory has {len(memory)} entries, expected one per layer ({self.num_layers})")
        inputs, cs = [], []
        for i, layer in enumerate(self.rnn_lst):
            inputs.append(x)
            mem = None if memory is None else memory[i]
            if mem is not None and mem.size(0) == 0:
                mem = None
            x, c = layer(x, None if c0 is None else c0[i], memory=mem, attn_mask=attn_mask)
            cs.append(c)
        return x, torch.stack(cs), inputs
