"""LR scheduler ``awd_when``: awd-lstm-lm's ``--when`` (REFERENCE §3.2, §3.3).

main.py divides the learning rate by 10 at the end of every epoch listed in
``--when``; the Adam recipes (enwik8 LSTM ``--when 25 35``, PTB-char ``--when 300 400``,
WT103 QRNN ``--when 12``) depend on it. Here the lr of epoch ``e`` is

    lr(e) = lr / factor ** |{w ∈ when : w < e}|,

set when each epoch begins (fairseq's ``step_begin_epoch``), so a resumed run gets
the same value as an uninterrupted one. fairseq 0.12 has no ``multistep`` scheduler;
its ``manual`` scheduler with ``--epoch2lr`` can express the same values, one range
of epochs per lr.
"""

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import List

from fairseq.dataclass import FairseqDataclass
from fairseq.optim.lr_scheduler import FairseqLRScheduler, register_lr_scheduler
from omegaconf import II

from awd_plugins.errors import AwdUserError


@dataclass
class WhenScheduleConfig(FairseqDataclass):
    when: str = field(
        default="", metadata={"help": "epochs after which the lr is divided by --when-factor, e.g. '25,35' (main.py --when 25 35)"}
    )
    when_factor: float = field(default=10.0, metadata={"help": "divisor applied after each --when epoch (main.py: 10)"})
    lr: List[float] = II("optimization.lr")


def parse_when(text) -> List[int]:
    if isinstance(text, Collection) and not isinstance(text, str):
        items = [str(x) for x in text]
    else:
        items = str(text).replace(",", " ").strip("()[] ").split()
    try:
        epochs = sorted(int(x) for x in items if x.strip("()[] "))
    except ValueError:
        raise AwdUserError(f"--when must list epoch numbers, e.g. '25,35', got {text!r}")
    if any(e < 1 for e in epochs):
        raise AwdUserError(f"--when epochs must be ≥ 1, got {text!r}")
    return epochs


def when_lr(epoch: int, lr: float, when: List[int], factor: float) -> float:
    """Learning rate of (1-based) ``epoch``."""
    return lr / factor ** sum(1 for w in when if w < epoch)


@register_lr_scheduler("awd_when", dataclass=WhenScheduleConfig)
class WhenSchedule(FairseqLRScheduler):
    def __init__(self, cfg: WhenScheduleConfig, optimizer):
        super().__init__(cfg, optimizer)
        if cfg.when_factor <= 0:
            raise AwdUserError(f"--when-factor must be positive, got {cfg.when_factor}")
        self.when = parse_when(cfg.when)
        lr = cfg.lr
        self.base_lr = lr[0] if isinstance(lr, Collection) and not isinstance(lr, str) else lr
        self.optimizer.set_lr(self.base_lr)

    def lr_at(self, epoch: int) -> float:
        return when_lr(epoch, self.base_lr, self.when, self.cfg.when_factor)

    def step_begin_epoch(self, epoch):
        self.optimizer.set_lr(self.lr_at(epoch))
        return self.optimizer.get_lr()

    def step(self, epoch, val_loss=None):
        super().step(epoch, val_loss)  # tracks the best validation loss only
        return self.optimizer.get_lr()

    def step_update(self, num_updates):
        return self.optimizer.get_lr()
