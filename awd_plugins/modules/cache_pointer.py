"""Continuous cache pointer (Grave et al. 2016) as evaluated by awd-lstm-lm's pointer.py.

REFERENCE §5. For a position t with last-layer output h_t and the ``window`` most
recent (h_i, y_i) pairs, y_i being the token that *followed* position i,

    a_i = softmax_i(θ ⟨h_t, h_i⟩),   p_ptr(w) = Σ_i a_i [y_i = w],
    p(w) = (1 − λ) p_vocab(w) + λ p_ptr(w).

The cache is used by the exact rule of pointer.py: with ``start`` the history
length before a chunk, position ``idx`` of the chunk (g = start + idx) uses the
cache only when g > window, reading history entries [g − window, g). So the first
window+1 positions never use it, and once the history is truncated to ``window``
entries, the first position of each later chunk does not either.

Everything is batched over the B streams and the T positions of a chunk; memory
is O(B·(window+T)·(H+T)) plus the B×T×V output, independent of corpus length.
"""

import math
from typing import Optional

import torch


class ContinuousCachePointer:
    """Stateful cache over consecutive chunks of B streams; call :meth:`reset` per stream start."""

    def __init__(self, window: int, theta: float, lambdasm: float):
        if window <= 0:
            raise ValueError(f"pointer window must be positive, got {window}")
        if not 0.0 <= lambdasm <= 1.0:
            raise ValueError(f"pointer lambda must be in [0, 1], got {lambdasm}")
        self.window = window
        self.theta = theta
        self.lambdasm = lambdasm
        self.reset()

    def reset(self):
        self.keys: Optional[torch.Tensor] = None  # B × S × H, S ≤ window
        self.values: Optional[torch.Tensor] = None  # B × S

    def attend(self, hidden: torch.Tensor, targets: torch.Tensor):
        """Cache attention for a chunk, and append the chunk to the cache.

        ``hidden`` B×T×H, ``targets`` B×T. Returns ``attn`` B×T×K (rows sum to 1 where the
        cache is used, 0 elsewhere), the cached ``values`` B×K the attention points at, and
        ``use`` (T,), which positions use the cache.
        """
        bsz, tlen = targets.shape
        hidden = hidden.detach().float()
        if self.keys is not None and self.keys.size(0) != bsz:
            self.reset()
        start = 0 if self.keys is None else self.keys.size(1)
        keys = hidden if self.keys is None else torch.cat([self.keys, hidden], dim=1)
        values = targets if self.values is None else torch.cat([self.values, targets], dim=1)
        self.keys = keys[:, -self.window :]
        self.values = values[:, -self.window :]

        g = torch.arange(start, start + tlen, device=hidden.device)
        use = g > self.window
        if not bool(use.any()):
            return None, values, use
        c = torch.arange(keys.size(1), device=hidden.device)
        allowed = (c.unsqueeze(0) >= (g - self.window).unsqueeze(1)) & (c.unsqueeze(0) < g.unsqueeze(1))
        allowed &= use.unsqueeze(1)
        scores = self.theta * torch.bmm(hidden, keys.transpose(1, 2))  # B × T × K
        scores = scores.masked_fill(~allowed, float("-inf")).masked_fill(~use.view(1, -1, 1), 0.0)
        attn = torch.softmax(scores, dim=-1).masked_fill(~allowed, 0.0)
        return attn, values, use

    def target_probability(self, hidden: torch.Tensor, targets: torch.Tensor):
        """p_ptr(target) per position (B×T) and ``use``: all a search over λ needs."""
        attn, values, use = self.attend(hidden, targets)
        if attn is None:
            return hidden.new_zeros(targets.shape, dtype=torch.float), use
        hits = (values.unsqueeze(1) == targets.unsqueeze(2)).float()  # B × T × K
        return (attn * hits).sum(-1), use

    def __call__(self, log_probs: torch.Tensor, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mix the cache into ``log_probs`` (B×T×V) for ``hidden`` (B×T×H) and ``targets`` (B×T).

        Returns log p (B×T×V, fp32) and appends the chunk to the cache.
        """
        bsz, tlen, vocab = log_probs.shape
        log_probs = log_probs.float()
        attn, values, use = self.attend(hidden, targets)
        if self.lambdasm == 0.0 or attn is None:
            return log_probs
        p_ptr = log_probs.new_zeros(bsz, tlen, vocab)
        p_ptr.scatter_add_(2, values.unsqueeze(1).expand(bsz, tlen, -1), attn)
        return torch.where(use.view(1, -1, 1), mix(log_probs, p_ptr, self.lambdasm), log_probs)


def mix(log_p_vocab: torch.Tensor, p_ptr: torch.Tensor, lambdasm: float) -> torch.Tensor:
    """log((1 − λ) p_vocab + λ p_ptr), computed from log p_vocab."""
    keep = math.log1p(-lambdasm) if lambdasm < 1.0 else float("-inf")
    return torch.logaddexp(log_p_vocab + keep, p_ptr.log() + math.log(lambdasm)) if lambdasm > 0 else log_p_vocab
