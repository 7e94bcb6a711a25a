"""Adam with coupled L2 weight decay, as awd-lstm-lm's ``--optimizer adam`` (REFERENCE §3.2).

awd-lstm-lm builds ``torch.optim.Adam(params, lr, weight_decay=wdecay)``: the decay is
added to the gradient before the moments (``g ← ∇ + wd·p``, Kingma & Ba 2015, Alg. 1
with an L2 term in the loss), so it is rescaled by ``1/√v̂`` like the gradient.
fairseq's ``adam`` decays decoupled (AdamW, Loshchilov & Hutter 2019:
``p ← p − lr·wd·p`` outside the moments), a different optimiser whenever wd ≠ 0.
``--optimizer adam_l2`` is the coupled form; it is used by the enwik8 LSTM and
PTB-char recipes (wd 1.2e-6) and, with wd 0, equals fairseq's ``adam`` (the WT103 QRNN).
Betas and epsilon default to torch's (the reference passes none).
"""

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import List

import torch
from fairseq.dataclass import FairseqDataclass
from fairseq.optim import FairseqOptimizer, register_optimizer
from omegaconf import II

from awd_plugins.errors import AwdUserError


@dataclass
class AdamL2Config(FairseqDataclass):
    adam_l2_betas: str = field(default="0.9,0.999", metadata={"help": "betas β1,β2 (torch's defaults, as the reference)"})
    adam_l2_eps: float = field(default=1e-8, metadata={"help": "epsilon added to √v̂"})
    weight_decay: float = field(
        default=0.0, metadata={"help": "coupled L2 weight decay added to the gradient (the reference's --wdecay)"}
    )
    lr: List[float] = II("optimization.lr")


@register_optimizer("adam_l2", dataclass=AdamL2Config)
class AdamL2(FairseqOptimizer):
    def __init__(self, cfg: AdamL2Config, params):
        super().__init__(cfg)
        self._optimizer = torch.optim.Adam(params, **self.optimizer_config)

    @property
    def optimizer_config(self):
        try:
            betas = tuple(float(b) for b in str(self.cfg.adam_l2_betas).strip("()[] ").split(","))
        except ValueError:
            betas = ()
        if len(betas) != 2:
            raise AwdUserError(f"--adam-l2-betas must be two numbers 'b1,b2', got {self.cfg.adam_l2_betas!r}")
        lr = self.cfg.lr
        return {
            "lr": lr[0] if isinstance(lr, Collection) and not isinstance(lr, str) else lr,
            "betas": betas,
            "eps": self.cfg.adam_l2_eps,
            "weight_decay": self.cfg.weight_decay,  # torch.optim.Adam's weight_decay is coupled L2
        }

    @property
    def supports_flat_params(self):
        return True  # elementwise, so fairseq's flattened fp16 master copy is fine
