"""Locked (variational) dropout, Gal & Ghahramani 2016, as used by AWD-LSTM.

REFERENCE §2.3: one Bernoulli(1-p)/(1-p) mask of shape 1×B×H per call, shared by
every time step of a time-major T×B×H input. The 2017 paper code shared the mask
over the batch instead (T×1×H); the fixed axis is the one the published
hyper-parameters were re-tuned for, so that is what we implement.
"""

import torch
from torch import nn


class LockedDropout(nn.Module):
    """Dropout whose mask is constant along time (dim 0 of a T×B×H tensor)."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"locked dropout probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor, p: float = None) -> torch.Tensor:
        p = self.p if p is None else p
        if not self.training or p == 0.0:
            return x
        mask = x.new_empty(1, x.size(1), x.size(2)).bernoulli_(1.0 - p) / (1.0 - p)
        return x * mask

    def extra_repr(self) -> str:
        return f"p={self.p}"
