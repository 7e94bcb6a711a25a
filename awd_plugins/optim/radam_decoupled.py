"""Optimisation of the SRU++ runs (Lei 2021, arXiv:2102.12459), REFERENCE §8.5.

* Optimizer ``radam_decoupled``: RAdam (Liu et al. 2020) with **decoupled** weight
  decay ``p ← p − lr·wd·p`` on every parameter (biases, LayerNorms and α
  included), i.e. ``torch.optim.RAdam(decoupled_weight_decay=True)``. Coupled L2
  with wd 0.1, what fairseq's ``adam --weight-decay`` or a plain RAdam would do, is
  a different optimiser. Difference from the reference's ``radam`` module, for the
  first ≈5 updates only: while the variance rectification is undefined
  (ρ_t ≤ 5) torch takes a bias-corrected momentum step (the older
  ``degenerated_to_sgd=True`` behaviour) where the current LiyuanLucasLiu file
  skips the update; with the published 16k-update warmup these steps have a
  learning rate below 4e-7·lr and do not matter.

* LR scheduler ``srupp_cosine``: the reference sets ``lr·(n+1)/W`` for update
  n < W (``train_wt103.py``: ``lr·n/W``, see ``--warmup-from-zero``) and steps a
  ``CosineAnnealingLR(T = max_iter)`` after every update, warmup included; as that
  scheduler rescales the current lr, the lr of update n ≥ W is

      lr(n) = lr(W−1) · (1 + cos(π n / T)) / (1 + cos(π (W − 1) / T)),

  a cosine over the whole run renormalised to the last warmup lr, reaching 0 at
  T. fairseq's ``cosine`` scheduler (with ``--warmup-updates``) cannot express it:
  its cosine starts at the end of warmup and spans ``max_update − W`` updates
  (at the middle of a 400k run it gives 0.533·lr instead of 0.501·lr). T defaults
  to ``--max-update`` (the reference's ``--max_iter``).
"""

import math
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import List

import torch
from fairseq.dataclass import FairseqDataclass
from fairseq.optim import FairseqOptimizer, register_optimizer
from fairseq.optim.lr_scheduler import FairseqLRScheduler, register_lr_scheduler
from omegaconf import II

from awd_plugins.errors import AwdUserError


def _first(lr):
    return lr[0] if isinstance(lr, Collection) and not isinstance(lr, str) else lr


@dataclass
class RAdamDecoupledConfig(FairseqDataclass):
    radam_betas: str = field(default="0.9,0.999", metadata={"help": "betas β1,β2"})
    radam_eps: float = field(default=1e-8, metadata={"help": "epsilon added to √v"})
    weight_decay: float = field(default=0.0, metadata={"help": "decoupled weight decay (SRU++: 0.1)"})
    lr: List[float] = II("optimization.lr")


@register_optimizer("radam_decoupled", dataclass=RAdamDecoupledConfig)
class RAdamDecoupled(FairseqOptimizer):
    def __init__(self, cfg: RAdamDecoupledConfig, params):
        super().__init__(cfg)
        self._optimizer = torch.optim.RAdam(params, **self.optimizer_config)

    @property
    def optimizer_config(self):
        try:
            betas = tuple(float(b) for b in str(self.cfg.radam_betas).strip("()[] ").split(","))
        except ValueError:
            betas = ()
        if len(betas) != 2:
            raise AwdUserError(f"--radam-betas must be two numbers 'b1,b2', got {self.cfg.radam_betas!r}")
        return {
            "lr": _first(self.cfg.lr),
            "betas": betas,
            "eps": self.cfg.radam_eps,
            "weight_decay": self.cfg.weight_decay,
            "decoupled_weight_decay": True,
        }

    @property
    def supports_flat_params(self):
        return True


@dataclass
class SruppCosineConfig(FairseqDataclass):
    warmup_updates: int = field(default=16000, metadata={"help": "linear warmup updates W"})
    warmup_from_zero: bool = field(
        default=False, metadata={"help": "warm up with lr·n/W (train_wt103.py) instead of lr·(n+1)/W"}
    )
    cosine_updates: int = field(
        default=0, metadata={"help": "length T of the cosine (the reference's --max_iter); 0 = --max-update"}
    )
    lr: List[float] = II("optimization.lr")
    max_update: int = II("optimization.max_update")


def srupp_lr(n: int, lr: float, warmup: int, total: int, from_zero: bool = False) -> float:
    """Learning rate of update ``n`` (0-based) in the reference's schedule (module docstring)."""
    if n < warmup:
        return lr * (n if from_zero else n + 1) / warmup
    if n >= total:
        return 0.0
    if warmup == 0:
        return lr * (1 + math.cos(math.pi * n / total)) / 2
    last = lr * (warmup - 1) / warmup if from_zero else lr
    return last * (1 + math.cos(math.pi * n / total)) / (1 + math.cos(math.pi * (warmup - 1) / total))


@register_lr_scheduler("srupp_cosine", dataclass=SruppCosineConfig)
class SruppCosineSchedule(FairseqLRScheduler):
    def __init__(self, cfg: SruppCosineConfig, fairseq_optimizer):
        super().__init__(cfg, fairseq_optimizer)
        self.total = cfg.cosine_updates or cfg.max_update
        if not self.total or self.total <= 0:
            raise AwdUserError("srupp_cosine needs --max-update (or --cosine-updates): the length of the cosine")
        if cfg.warmup_updates < 0 or cfg.warmup_updates >= self.total:
            raise AwdUserError(f"--warmup-updates must be in [0, {self.total}), got {cfg.warmup_updates}")
        self.max_lr = _first(cfg.lr)
        self.optimizer.set_lr(self.lr_at(0))

    def lr_at(self, n: int) -> float:
        return srupp_lr(n, self.max_lr, self.cfg.warmup_updates, self.total, self.cfg.warmup_from_zero)

    def step(self, epoch, val_loss=None):
        super().step(epoch, val_loss)
        return self.optimizer.get_lr()

    def step_update(self, num_updates):
        """Set the lr of the next update (index ``num_updates``)."""
        lr = self.lr_at(num_updates)
        self.optimizer.set_lr(lr)
        return lr
