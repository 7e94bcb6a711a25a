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

Everything is batched over the B streams and, in blocks of up to window/4 rows, the
T positions of a chunk: work O(B·T·window·H), memory the B×T×V output plus
O(B·window·(window+H)), independent of corpus length.
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
        """Cache attention for a chunk, in blocks of rows; appends the chunk to the cache.

        ``hidden`` B×T×H, ``targets`` B×T. Yields ``(r0, r1, attn, values, use)`` per block of
        rows [r0, r1): ``attn`` B×t×K over the K cached ``values`` (B×K) those rows may see
        (rows sum to 1 where the cache is used, 0 elsewhere; None if no row uses it) and
        ``use`` (t,). Blocking keeps the work at O(T·window) however long the chunk
        (``--bptt 5000`` with a window of 500 would otherwise score 5000×5500 pairs).
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

        rows = max(16, self.window // 4)  # a block of t rows scores window + t keys: 25% wasted at most
        for r0 in range(0, tlen, rows):
            r1 = min(tlen, r0 + rows)
            g = torch.arange(start + r0, start + r1, device=hidden.device)  # positions in cache coordinates
            use = g > self.window
            if not bool(use.any()):
                yield r0, r1, None, None, use
                continue
            k0, k1 = max(0, start + r0 - self.window), start + r1 - 1
            c = torch.arange(k0, k1, device=hidden.device)
            allowed = (c.unsqueeze(0) >= (g - self.window).unsqueeze(1)) & (c.unsqueeze(0) < g.unsqueeze(1))
            allowed &= use.unsqueeze(1)
            scores = self.theta * torch.bmm(hidden[:, r0:r1], keys[:, k0:k1].transpose(1, 2))
            scores = scores.masked_fill(~allowed, float("-inf")).masked_fill(~use.view(1, -1, 1), 0.0)
            attn = torch.softmax(scores, dim=-1).masked_fill(~allowed, 0.0)
            yield r0, r1, attn, values[:, k0:k1], use

    def target_probability(self, hidden: torch.Tensor, targets: torch.Tensor):
        """p_ptr(target) per position (B×T) and ``use`` (T,): all a search over λ needs."""
        probs, uses = [], []
        for r0, r1, attn, values, use in self.attend(hidden, targets):
            if attn is None:
                probs.append(hidden.new_zeros(targets[:, r0:r1].shape, dtype=torch.float))
            else:
                hits = (values.unsqueeze(1) == targets[:, r0:r1].unsqueeze(2)).float()  # B × t × K
                probs.append((attn * hits).sum(-1))
            uses.append(use)
        return torch.cat(probs, dim=1), torch.cat(uses)

    def __call__(self, log_probs: torch.Tensor, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mix the cache into ``log_probs`` (B×T×V) for ``hidden`` (B×T×H) and ``targets`` (B×T).

        Returns log p (B×T×V, fp32) and appends the chunk to the cache.
        """
        log_probs = log_probs.float()
        blocks = list(self.attend(hidden, targets))
        if self.lambdasm == 0.0:
            return log_probs
        out = None
        for r0, r1, attn, values, use in blocks:
            if attn is None:
                continue
            # Only the ≤ K tokens in the cache get pointer mass; every other entry is just
            # log(1 − λ) + log p_vocab, so the logarithms are taken over K entries, not V.
            every = bool(use.all())
            lp = log_probs[:, r0:r1] if every else log_probs[:, r0:r1][:, use]
            attn = attn if every else attn[:, use]
            index = values.unsqueeze(1).expand(lp.size(0), lp.size(1), -1)
            p_ptr = lp.new_zeros(lp.shape).scatter_add_(2, index, attn).gather(2, index)
            mixed = (lp + _log1m(self.lambdasm)).scatter_(2, index, mix(lp.gather(2, index), p_ptr, self.lambdasm))
            if every and len(blocks) == 1:
                return mixed
            out = log_probs.clone() if out is None else out
            if every:
                out[:, r0:r1] = mixed
            else:
                out[:, r0 + use.nonzero().squeeze(1)] = mixed
        return log_probs if out is None else out


def _log1m(lambdasm: float) -> float:
    return math.log1p(-lambdasm) if lambdasm < 1.0 else float("-inf")


def mix(log_p_vocab: torch.Tensor, p_ptr: torch.Tensor, lambdasm: float) -> torch.Tensor:
    """log((1 − λ) p_vocab + λ p_ptr), computed from log p_vocab."""
    if lambdasm == 0.0:
        return log_p_vocab
    return torch.logaddexp(log_p_vocab + _log1m(lambdasm), p_ptr.log() + math.log(lambdasm))
