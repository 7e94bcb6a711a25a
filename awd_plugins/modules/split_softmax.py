"""Frequency-split (two-level) softmax of AWD-LSTM's SplitCrossEntropyLoss.

REFERENCE §4. The vocabulary, sorted by frequency (fairseq dictionaries are, after
their special symbols), is cut at ``splits`` into a head cluster and K-1 tail
clusters. The head softmax runs over the head words plus one "tombstone" logit per
tail cluster; a tail word's log-probability is its tombstone's head
log-probability plus its log-probability inside its cluster. The decoder weight
and bias (tied to the embedding) are passed in at call time; the tombstones are
this module's only parameters and start at zero.

Tail cluster k (1-based) is addressed through head column -k, so cluster 1 uses
the *last* tombstone row; this matches the reference's state-dict layout.
"""

from typing import List, Sequence

import torch
import torch.nn.functional as F
from torch import nn


def _at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    # softmaxes are summed in fp32 under --fp16 (REFERENCE §4.1); double stays double
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def published_splits(vocab_size: int) -> List[int]:
    """The split points awd-lstm-lm and sha-rnn pick from the vocabulary size (REFERENCE §4.1)."""
    if vocab_size > 500_000:
        return [4200, 35000, 180000]
    if vocab_size > 75_000:
        return [2800, 20000, 76000]
    return []


def parse_splits(spec: str, vocab_size: int) -> List[int]:
    """``auto`` → :func:`published_splits`; ``none`` → no split; else comma-separated ids."""
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        return published_splits(vocab_size)
    if spec in ("none", ""):
        return []
    try:
        splits = [int(s) for s in spec.split(",")]
    except ValueError:
        raise ValueError(f"--splits must be 'auto', 'none' or comma-separated integers, got {spec!r}")
    if any(b <= a for a, b in zip([0] + splits, splits + [vocab_size])):
        raise ValueError(f"--splits {spec} must be strictly increasing and inside (0, {vocab_size})")
    return splits


class SplitSoftmax(nn.Module):
    def __init__(self, embed_dim: int, splits: Sequence[int]):
        super().__init__()
        self.splits = list(splits)
        self.nclusters = len(self.splits) + 1
        if self.nclusters > 1:
            self.tail_vectors = nn.Parameter(torch.zeros(self.nclusters - 1, embed_dim))
            self.tail_bias = nn.Parameter(torch.zeros(self.nclusters - 1))

    def _bounds(self, vocab_size: int):
        edges = [0] + self.splits + [vocab_size]
        return list(zip(edges[:-1], edges[1:]))

    def _head_log_probs(self, hidden, weight, bias):
        s1 = self.splits[0]
        logits = torch.cat(
            [F.linear(hidden, weight[:s1], bias[:s1]), F.linear(hidden, self.tail_vectors, self.tail_bias)], dim=-1
        )
        return F.log_softmax(_at_least_fp32(logits), dim=-1)

    def log_prob(self, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """Full log-distribution over the vocabulary, ``hidden`` is (..., E) → (..., V) in fp32."""
        if self.nclusters == 1:
            return F.log_softmax(_at_least_fp32(F.linear(hidden, weight, bias)), dim=-1)
        head = self._head_log_probs(hidden, weight, bias)
        bounds = self._bounds(weight.size(0))
        parts = [head[..., : self.splits[0]]]
        for k, (lo, hi) in enumerate(bounds[1:], start=1):
            tail = F.log_softmax(_at_least_fp32(F.linear(hidden, weight[lo:hi], bias[lo:hi])), dim=-1)
            parts.append(head[..., -k : head.size(-1) - k + 1] + tail)
        return torch.cat(parts, dim=-1)

    def nll(self, hidden: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """−log p(target) per row (fp32) for ``hidden`` (N, E) and ``targets`` (N,).

        Each tail softmax runs only on the rows whose target lies in that tail,
        which is where the split saves time on large vocabularies.
        """
        if self.nclusters == 1:
            return F.cross_entropy(_at_least_fp32(F.linear(hidden, weight, bias)), targets, reduction="none")
        head = self._head_log_probs(hidden, weight, bias)
        bounds = self._bounds(weight.size(0))
        cluster = torch.zeros_like(targets)
        for s in self.splits:
            cluster += (targets >= s).long()
        in_head = cluster == 0
        logp = torch.where(in_head, head.gather(1, targets.clamp(max=self.splits[0] - 1).unsqueeze(1)).squeeze(1), head.new_zeros(()))
        for k, (lo, hi) in enumerate(bounds[1:], start=1):
            rows = (cluster == k).nonzero(as_tuple=True)[0]
            if rows.numel() == 0:
                continue
            tail = F.log_softmax(_at_least_fp32(F.linear(hidden[rows], weight[lo:hi], bias[lo:hi])), dim=-1)
            tail_lp = tail.gather(1, (targets[rows] - lo).unsqueeze(1)).squeeze(1)
            logp = logp.index_put((rows,), head[rows, head.size(1) - k] + tail_lp)
        return -logp

    def extra_repr(self) -> str:
        return f"splits={self.splits}"
