"""Minimum-trust LAMB, the optimizer of SHA-RNN (Merity 2019, arXiv:1911.11423;
Smerity/pytorch-lamb; REFERENCE §7.7). LAMB itself: You et al. 2019,
"Large Batch Optimization for Deep Learning", arXiv:1904.00962 (paper v3 rule,
no bias correction).

Per parameter tensor p with gradient g:

    m ← β1·m + (1 − β1)·g
    v ← β2·v + (1 − β2)·g²                       no bias correction
    u ← m / (√v + eps) + wd·p                    weight decay after the Adam ratio
    φ ← min(‖p‖, 10)                             whole-tensor norm, clamped
    trust ← 1 if φ = 0 or ‖u‖ = 0 else φ / ‖u‖   zero-initialised tensors still move
    trust ← max(trust, min_trust)                floor only, no upper clamp
    p ← p − lr·trust·u

Registered as ``min_trust_lamb``: fairseq's own ``lamb`` (apex FusedLAMB: bias
correction, its own clipping, another trust rule, eps 1e-8) is a different
algorithm, and fairseq's registry refuses a second ``lamb``. The defaults are the
SHA-RNN run's: weight decay 1.2e-6 (main.py ``--wdecay``), min trust 0.25,
betas (0.9, 0.999), eps 1e-6.

Warm-up: ``--lr-scheduler fixed --warmup-updates 800`` reproduces the reference's
``lr·min(step, 800)/800``, then constant, exactly (update k uses k/800 of the lr;
see tests/test_min_trust_lamb.py).

Like the reference, each parameter's state keeps ``weight_norm``, ``adam_norm``
and ``trust_ratio`` (0-dim tensors, to avoid a device sync per tensor).
"""

import ast
from dataclasses import dataclass, field
from typing import List

import torch
from fairseq.dataclass import FairseqDataclass
from fairseq.optim import FairseqOptimizer, register_optimizer
from omegaconf import II

from awd_plugins.errors import AwdUserError

WEIGHT_NORM_CLAMP = 10.0


class MinTrustLamb(torch.optim.Optimizer):
    """The torch optimizer; ``min_trust`` None or 0 gives the upstream LAMB rule with the zero-norm guard."""

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-6, weight_decay: float = 0.0,
                 min_trust=None, adam: bool = False):
        if lr < 0:
            raise ValueError(f"invalid learning rate {lr}")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"betas must be in [0, 1), got {betas}")
        if eps < 0 or weight_decay < 0 or (min_trust is not None and min_trust < 0):
            raise ValueError("eps, weight_decay and min_trust must be non-negative")
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, min_trust=min_trust, adam=adam)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if grad.is_sparse:
                    raise RuntimeError("min_trust_lamb does not support sparse gradients")
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                state["step"] += 1

                exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)

                weight_norm = p.pow(2).sum().sqrt().clamp(0, WEIGHT_NORM_CLAMP)
                update = exp_avg / exp_avg_sq.sqrt().add(group["eps"])
                if group["weight_decay"] != 0:
                    update.add_(p, alpha=group["weight_decay"])
                adam_norm = update.pow(2).sum().sqrt()

                degenerate = (weight_norm == 0) | (adam_norm == 0)
                trust = torch.where(degenerate, torch.ones_like(weight_norm), weight_norm / adam_norm)
                if group["min_trust"]:
                    trust = trust.clamp(min=group["min_trust"])
                state["weight_norm"], state["adam_norm"], state["trust_ratio"] = weight_norm, adam_norm, trust
                if group["adam"]:
                    trust = torch.ones_like(trust)

                p.add_(update * trust, alpha=-group["lr"])
        return loss


@dataclass
class MinTrustLambConfig(FairseqDataclass):
    min_trust_lamb_betas: str = field(default="(0.9, 0.999)", metadata={"help": "betas (β1, β2) of the moment estimates"})
    min_trust_lamb_eps: float = field(default=1e-6, metadata={"help": "epsilon added to √v"})
    weight_decay: float = field(
        default=1.2e-6, metadata={"help": "weight decay added to the Adam ratio (SHA-RNN: main.py --wdecay 1.2e-6)"}
    )
    min_trust: float = field(default=0.25, metadata={"help": "floor of the trust ratio (SHA-RNN 0.25; 0 = no floor)"})
    min_trust_lamb_adam: bool = field(
        default=False, metadata={"help": "fix the trust ratio at 1 (the reference's adam=True switch)"}
    )
    lr: List[float] = II("optimization.lr")


def parse_betas(text: str):
    try:
        betas = ast.literal_eval(text)
        betas = (float(betas[0]), float(betas[1]))
    except (ValueError, SyntaxError, TypeError, IndexError):
        raise AwdUserError(f"--min-trust-lamb-betas must look like '(0.9, 0.999)', got {text!r}")
    return betas


@register_optimizer("min_trust_lamb", dataclass=MinTrustLambConfig)
class FairseqMinTrustLamb(FairseqOptimizer):
    def __init__(self, cfg: MinTrustLambConfig, params):
        super().__init__(cfg)
        try:
            self._optimizer = MinTrustLamb(params, **self.optimizer_config)
        except ValueError as e:
            raise AwdUserError(f"min_trust_lamb: {e}")

    @property
    def optimizer_config(self):
        return {
            "lr": self.cfg.lr[0],
            "betas": parse_betas(self.cfg.min_trust_lamb_betas),
            "eps": self.cfg.min_trust_lamb_eps,
            "weight_decay": self.cfg.weight_decay,
            "min_trust": self.cfg.min_trust or None,
            "adam": self.cfg.min_trust_lamb_adam,
        }
