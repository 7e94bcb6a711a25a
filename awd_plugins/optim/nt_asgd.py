"""NT-ASGD: non-monotonically triggered averaged SGD (Merity et al. 2017, §3; REFERENCE §3.3).

Plain SGD (L2 weight decay in the gradient) until the validation loss stops
improving non-monotonically: after an epoch's validation loss ``v``, with
``history`` the losses of the previous SGD epochs,

    switch  iff  len(history) > nonmono  and  v > min(history[:-nonmono]),

then averaged SGD restarted at the original learning rate. As in the reference the
averaging is ``torch.optim.ASGD(t0=0, lambd=0)``, whose running average ``ax`` is
the mean of the iterates since the switch (and whose step size lags the per-batch
lr rescale by one step, reproduced for free).

fairseq wiring (FAIRSEQ_NOTES §3):

* the optimizer ``nt_asgd`` holds the mode, the trigger history, and while the
  averaged weights are swapped in, the raw iterate (``raw_params``), all in its
  ``state_dict`` so ``--restore-file`` continues exactly;
* the task ``awd_language_modeling`` feeds it the first validation loss of each
  epoch in ``post_validate``, i.e. *before* the epoch's checkpoint is written, so a
  run interrupted after a switch resumes in averaging mode (the reference's order
  evaluate → save → trigger gives the same weights: the switch itself changes none);
* the task swaps the average in at ``begin_valid_epoch`` and leaves it in through
  checkpoint saving, so validation, ``checkpoint_best.pt`` and ``checkpoint_last.pt``
  use the averaged model; the next ``train_step`` swaps the raw iterate back.

With ``--asgd-from-start`` (finetuning, REFERENCE §3.5) averaging starts at the
first update and the trigger instead ends training: the lr scheduler ``nt_asgd``
then sets the lr to 0, which stops ``fairseq-train`` given ``--stop-min-lr 0``.
"""

import logging
from dataclasses import dataclass, field
from typing import List, Optional

import torch
from fairseq.dataclass import FairseqDataclass
from fairseq.optim import FairseqOptimizer, register_optimizer
from fairseq.optim.lr_scheduler import FairseqLRScheduler, register_lr_scheduler
from omegaconf import II

from awd_plugins.errors import AwdUserError

logger = logging.getLogger(__name__)


@dataclass
class NtAsgdConfig(FairseqDataclass):
    weight_decay: float = field(default=1.2e-6, metadata={"help": "L2 weight decay added to the gradient (reference --wdecay)"})
    nonmono: int = field(default=5, metadata={"help": "non-monotone interval: epochs ignored by the switch test"})
    asgd_from_start: bool = field(
        default=False,
        metadata={"help": "average from the first update and let the trigger stop training (finetuning; give --stop-min-lr 0)"},
    )
    lr: List[float] = II("optimization.lr")


def should_trigger(history: List[float], val_loss: float, nonmono: int) -> bool:
    """The non-monotone criterion of REFERENCE §3.3."""
    return len(history) > nonmono and val_loss > min(history[: len(history) - nonmono])


@register_optimizer("nt_asgd", dataclass=NtAsgdConfig)
class NtAsgd(FairseqOptimizer):
    def __init__(self, cfg: NtAsgdConfig, params):
        super().__init__(cfg)
        # checked here, not after the first epoch's validation (where a negative value used to crash)
        if cfg.nonmono < 0:
            raise AwdUserError(f"--nonmono must be 0 or a positive number of epochs, got {cfg.nonmono}")
        if cfg.weight_decay < 0:
            raise AwdUserError(f"--weight-decay must not be negative, got {cfg.weight_decay}")
        self._params = [p for p in params if p.requires_grad]
        self.history: List[float] = []
        self.switch_epoch: Optional[int] = None
        self.raw_params: Optional[List[torch.Tensor]] = None
        self.mode = "sgd"
        self.trigger_attached = False  # set by the task that feeds validation losses
        self.scheduler_attached = False  # set by the nt_asgd lr scheduler
        self.finished = False
        self._optimizer = torch.optim.SGD(self._params, lr=self.cfg.lr[0], weight_decay=self.cfg.weight_decay)
        if self.cfg.asgd_from_start:
            self._switch(epoch=0)

    @property
    def optimizer_config(self):
        return {"lr": self.cfg.lr[0], "weight_decay": self.cfg.weight_decay}

    @property
    def supports_flat_params(self):
        # SGD and ASGD are elementwise, so fairseq's flattened fp16 master copy is fine
        return True

    def _switch(self, epoch: int):
        # the original lr, not whatever a schedule made of it (REFERENCE §3.3)
        self._optimizer = torch.optim.ASGD(
            self._params, lr=self.cfg.lr[0], t0=0, lambd=0.0, weight_decay=self.cfg.weight_decay
        )
        self.mode = "asgd"
        self.switch_epoch = epoch

    def observe_validation(self, epoch: int, val_loss: float) -> bool:
        """Record an epoch's validation loss; returns True when the trigger fires."""
        fired = should_trigger(self.history, val_loss, self.cfg.nonmono)
        if self.mode == "sgd":
            if fired:
                logger.info(f"NT-ASGD: switching to averaged SGD after epoch {epoch} (val loss {val_loss})")
                self._switch(epoch)
            self.history.append(val_loss)
            return fired
        if self.cfg.asgd_from_start:
            self.history.append(val_loss)
            if fired:
                logger.info(f"NT-ASGD finetune: validation stopped improving after epoch {epoch}; training ends")
                self.finished = True
            return fired
        return False

    # -- averaged weights ------------------------------------------------------------------
    def swap_in_average(self) -> bool:
        if self.mode != "asgd" or self.raw_params is not None:
            return False
        state = self._optimizer.state
        if not any("ax" in state[p] for p in self._params):
            return False
        self.raw_params = [p.detach().clone() for p in self._params]
        with torch.no_grad():
            for p in self._params:
                if "ax" in state[p]:
                    p.copy_(state[p]["ax"])
        return True

    def swap_out_average(self) -> bool:
        if self.raw_params is None:
            return False
        with torch.no_grad():
            for p, raw in zip(self._params, self.raw_params):
                p.copy_(raw)
        self.raw_params = None
        return True

    def step(self, closure=None, scale=1.0, groups=None):
        if self.raw_params is not None:
            raise RuntimeError("NT-ASGD: an update was attempted while the averaged weights are swapped in")
        if not self.trigger_attached:
            raise AwdUserError("--optimizer nt_asgd is driven by --task awd_language_modeling (it feeds the validation losses)")
        if self.cfg.asgd_from_start and not self.scheduler_attached:
            raise AwdUserError("--asgd-from-start needs --lr-scheduler nt_asgd --stop-min-lr 0 to end the finetuning")
        super().step(closure, scale, groups)

    # -- checkpointing -----------------------------------------------------------------------
    def state_dict(self):
        return {
            "mode": self.mode,
            "history": list(self.history),
            "switch_epoch": self.switch_epoch,
            "finished": self.finished,
            "inner": self._optimizer.state_dict(),
            "raw_params": None if self.raw_params is None else [t.clone() for t in self.raw_params],
        }

    def load_state_dict(self, state_dict, optimizer_overrides=None):
        if "inner" not in state_dict:  # a plain SGD state, e.g. from --optimizer sgd
            return super().load_state_dict(state_dict, optimizer_overrides)
        self.history = list(state_dict["history"])
        if state_dict["mode"] == "asgd" and self.mode != "asgd":
            self._switch(state_dict["switch_epoch"])
        self.switch_epoch = state_dict["switch_epoch"]
        self.finished = state_dict.get("finished", False)
        self._optimizer.load_state_dict(state_dict["inner"])
        if optimizer_overrides:
            for group in self._optimizer.param_groups:
                group.update(optimizer_overrides)
        if state_dict.get("raw_params") is not None:
            # the checkpoint's model holds the averaged weights; resume from the raw iterate
            with torch.no_grad():
                for p, raw in zip(self._params, state_dict["raw_params"]):
                    p.copy_(raw.to(p))
            logger.info("NT-ASGD: restored the raw iterate (the checkpoint's model holds the averaged weights)")
        self.raw_params = None


def unwrap(optimizer) -> Optional[NtAsgd]:
    """The :class:`NtAsgd` inside fairseq's fp16/amp wrappers, or None."""
    seen = 0
    while optimizer is not None and not isinstance(optimizer, NtAsgd) and seen < 4:
        optimizer = getattr(optimizer, "fp32_optimizer", None) or getattr(optimizer, "wrapped_optimizer", None)
        seen += 1
    return optimizer if isinstance(optimizer, NtAsgd) else None


def _sync_fp16(optimizer):
    # With --fp16 the NT-ASGD parameters are fp32 master copies: refresh the fp16 model.
    if hasattr(optimizer, "_sync_fp32_params_to_fp16") and getattr(optimizer, "fp32_optimizer", None) is not None:
        optimizer._sync_fp32_params_to_fp16()


def swap_in_average(optimizer) -> bool:
    inner = unwrap(optimizer)
    if inner is None or not inner.swap_in_average():
        return False
    _sync_fp16(optimizer)
    return True


def swap_out_average(optimizer) -> bool:
    inner = unwrap(optimizer)
    if inner is None or not inner.swap_out_average():
        return False
    _sync_fp16(optimizer)
    return True


@dataclass
class NtAsgdSchedulerConfig(FairseqDataclass):
    lr: List[float] = II("optimization.lr")


@register_lr_scheduler("nt_asgd", dataclass=NtAsgdSchedulerConfig)
class NtAsgdScheduler(FairseqLRScheduler):
    """Constant lr that drops to 0 once an ``--asgd-from-start`` finetuning has finished."""

    def __init__(self, cfg, optimizer):
        super().__init__(cfg, optimizer)
        if unwrap(optimizer) is None:
            raise AwdUserError("--lr-scheduler nt_asgd needs --optimizer nt_asgd")
        unwrap(optimizer).scheduler_attached = True

    def step(self, epoch, val_loss=None):
        super().step(epoch, val_loss)
        self.optimizer.set_lr(0.0 if unwrap(self.optimizer).finished else self.cfg.lr[0])
        return self.optimizer.get_lr()

    def step_update(self, num_updates):
        return self.optimizer.get_lr()
