"""One SHA-RNN block (Merity 2019, arXiv:1911.11423, §3; REFERENCE §7.2).

Exact order of the reference (all LayerNorms eps 1e-12, initialised 1/0):

    x = LN_start(h_in)
    r, state = LSTM_{d→d}(x, state)
    h = Dropout(r)                              no residual around the LSTM
    if attention:
        m = LN_mem(h)                           keys/values (and the new memory)
        h = LN_mid(h)                           query, and the new residual stream
        big = [memory ; m]                      memory cut to its last cap − T rows first
        new_memory = last ``cap`` rows of big
        h = h + Dropout(Attention(h, big, causal mask))
    h = LN_ff(h) + Dropout(Boom(LN_xff(h)))     the residual is the LN_ff-normalised stream

``lnout`` exists in the reference but is never used; it is kept so parameter
counts and state dicts match. Blocks without attention pass their (empty)
memory through unchanged.

For export (:mod:`awd_plugins.modules.fixed_memory`) the memory may come as a buffer
of exactly ``cap`` rows with a validity count ``valid``: the same code then keeps the
buffer at ``cap`` rows (the trim and the ``[-cap:]`` slice are static) and only masks
the rows that are not real yet.
"""

from typing import Optional, Tuple

import torch
from torch import nn

from awd_plugins.modules.boom import Boom
from awd_plugins.modules.fixed_memory import mask_empty_rows
from awd_plugins.modules.lstm import AutocastLSTM
from awd_plugins.modules.single_head_attention import SingleHeadAttention, causal_memory_mask
from awd_plugins.modules.weight_drop import WeightDrop

LN_EPS = 1e-12


class ShaBlock(nn.Module):
    def __init__(self, dim: int, hidden: int, dropout: float = 0.0, use_attention: bool = False,
                 memory_len: int = 5000, wdrop: float = 0.0):
        super().__init__()
        if memory_len < 1:
            raise ValueError(f"memory length must be positive, got {memory_len}")
        self.attn = SingleHeadAttention(dim, dropout) if use_attention else None
        self.ff = Boom(dim, hidden, dropout)
        self.lnstart = nn.LayerNorm(dim, eps=LN_EPS)
        self.lnmid = nn.LayerNorm(dim, eps=LN_EPS)
        self.lnmem = nn.LayerNorm(dim, eps=LN_EPS)
        self.lnout = nn.LayerNorm(dim, eps=LN_EPS)  # unused, kept for reference parity
        self.lnff = nn.LayerNorm(dim, eps=LN_EPS)
        self.lnxff = nn.LayerNorm(dim, eps=LN_EPS)
        lstm = AutocastLSTM(dim, dim)  # nn.LSTM, with a bf16 path for --cpu-bf16
        # DropConnect only when asked, so the default state dict keeps the reference's key names
        self.rnn = WeightDrop(lstm, ["weight_hh_l0"], wdrop) if wdrop > 0 else lstm
        self.drop = nn.Dropout(dropout)
        self.memory_len = memory_len

    def trim_memory(self, memory: torch.Tensor, length: int) -> torch.Tensor:
        """Keep the last ``cap − T`` rows, so that memory plus window span at most ``cap`` keys."""
        keep = max(self.memory_len - length, 0)
        return memory[max(memory.size(0) - keep, 0):]

    def forward(self, h: torch.Tensor, hidden: Tuple[torch.Tensor, torch.Tensor], memory: torch.Tensor,
                valid: Optional[torch.Tensor] = None):
        """``h`` T×B×d, ``hidden`` = (h, c) each 1×B×d, ``memory`` M×B×d (M may be 0).

        ``valid`` (1×B, export's fixed-shape form): only the last ``valid`` rows of
        ``memory`` (then ``cap`` rows) are real. Returns the block output T×B×d, the new
        (h, c) and the new memory.
        """
        r, new_hidden = self.rnn(self.lnstart(h), tuple(hidden))
        h = self.drop(r)
        if self.attn is not None:
            memory = self.trim_memory(memory, h.size(0))
            keys = self.lnmem(h)
            h = self.lnmid(h)
            mask = causal_memory_mask(h.size(0), memory.size(0), h)
            if valid is not None:
                mask = mask_empty_rows(mask, valid, memory.size(0))
            big = torch.cat([memory.to(keys.dtype), keys], dim=0)
            memory = big[-self.memory_len:]
            h = h + self.drop(self.attn(h, big, mask))
        h = self.lnff(h) + self.drop(self.ff(self.lnxff(h)))
        return h, new_hidden, memory

    @property
    def has_attention(self) -> bool:
        return self.attn is not None
