"""Weight drop (DropConnect on chosen weights), Wan et al. 2013 / AWD-LSTM.

REFERENCE §2.4: on every training forward, one Bernoulli(1-p)/(1-p) mask of the
full shape of each named weight (for an LSTM: ``weight_hh_l0``, all four gates)
is sampled and the wrapped module runs the whole sequence with the masked
weight; at eval the raw weight is used unscaled.

The reference swapped a plain tensor in for the Parameter, which modern torch
rejects. Here the raw weight stays the module's only Parameter and the module is
called with ``torch.func.functional_call`` substituting the masked tensor, so
``nn.LSTM`` still dispatches to its fused (cuDNN on CUDA) kernel, the mask is
drawn exactly once per forward, on the weight's device, and state dicts keep the
module's own key names.
"""

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from awd_plugins.autocast import cpu_bf16_autocast_active


class WeightDrop(nn.Module):
    """Wraps ``module`` and applies DropConnect to its parameters ``weights``."""

    def __init__(self, module: nn.Module, weights: Sequence[str], p: float = 0.5):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"weight drop probability must be in [0, 1), got {p}")
        for name in weights:
            if not isinstance(getattr(module, name, None), nn.Parameter):
                raise ValueError(f"{type(module).__name__} has no parameter {name!r} to weight-drop")
        self.module = module
        self.weights = list(weights)
        self.p = p

    def forward(self, *args, **kwargs):
        if not self.training or self.p == 0.0:
            return self.module(*args, **kwargs)
        masked = {name: self._drop(getattr(self.module, name)) for name in self.weights}
        return functional_call(self.module, masked, args, kwargs)

    def _drop(self, weight):
        if cpu_bf16_autocast_active(weight):
            # --cpu-bf16 (speed mode): the same Bernoulli(1-p)/(1-p) mask from torch.rand, about 5x
            # cheaper than F.dropout's bernoulli_ on this CPU (a 4650x1550 weight: 18 vs 97 ms), but
            # not the reference's random stream; fp32 runs keep F.dropout's exact masks.
            keep = torch.rand_like(weight) >= self.p
            return weight.mul(keep).mul_(1.0 / (1.0 - self.p))
        return F.dropout(weight, self.p, training=True)

    def extra_repr(self) -> str:
        return f"weights={self.weights}, p={self.p}"
