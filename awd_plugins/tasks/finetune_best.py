"""Finetuning never keeps a worse model than the one it started from.

awd-lstm-lm's finetune.py starts its ``stored_loss`` at the validation loss of the
model it loads (REFERENCE §3.5), so ``PTB.pt`` is only replaced by a better model.
fairseq restores its ``best`` validation loss from the checkpoint only when neither
``--reset-optimizer`` nor ``--reset-meters`` is given; a finetune (which resets both,
as does ``--finetune-from-model``) starts with no ``best``, and its first epoch is
saved as ``checkpoint_best.pt`` however bad it is.

For the task ``awd_language_modeling``, when fairseq-train has just restored weights
from a checkpoint without restoring ``best``, this module validates the restored
model once (before the first update, on the first ``--valid-subset``, exactly as an
end-of-epoch validation does), seeds fairseq's ``best`` with that loss and writes the
restored weights as ``checkpoint_best.pt`` in ``--save-dir``. From then on fairseq's
own rule (a validation at least as good as ``best`` replaces ``checkpoint_best.pt``)
applies, so the save dir always holds a ``checkpoint_best.pt`` that is never worse
than the input (in fairseq's rounded validation loss).

Wiring: ``fairseq_cli.train`` calls ``checkpoint_utils.load_checkpoint(cfg, trainer)``
once, the only point where both the trainer and the checkpoint config are at hand;
:func:`install` wraps that function. The wrapper does nothing for other tasks, for a
fresh run (no checkpoint loaded) or for a plain resume (``best`` restored).
"""

import logging
import os

from fairseq import checkpoint_utils, metrics

logger = logging.getLogger(__name__)

_SEED_MARK = "_awd_seeded_from_restored_model"


def validate_restored_model(trainer, subset: str, epoch: int, metric: str) -> float:
    """The validation loss of the model as loaded, computed the way fairseq-train validates."""
    trainer.begin_valid_epoch(epoch)
    itr = trainer.get_valid_iterator(subset).next_epoch_itr(shuffle=False, set_dataset_epoch=False)
    with metrics.aggregate(new_root=True) as agg:
        for sample in itr:
            trainer.valid_step(sample)
    stats = agg.get_smoothed_values()
    if metric not in stats:
        raise KeyError(metric)
    return float(stats[metric])


def seed_best_from_restored(cfg, trainer, epoch_itr) -> bool:
    """Seed ``best`` and write ``checkpoint_best.pt`` for a finetune; True when it did."""
    from awd_plugins.tasks.awd_language_modeling import AwdLanguageModelingTask

    ckpt_cfg = cfg  # fairseq_cli.train passes cfg.checkpoint
    if not isinstance(trainer.task, AwdLanguageModelingTask) or hasattr(checkpoint_utils.save_checkpoint, "best"):
        return False
    full = getattr(trainer, "cfg", None)
    dataset_cfg = getattr(full, "dataset", None)
    if dataset_cfg is None or dataset_cfg.disable_validation:
        return False
    subset = dataset_cfg.valid_subset.split(",")[0]
    try:
        loss = validate_restored_model(trainer, subset, epoch_itr.epoch, ckpt_cfg.best_checkpoint_metric)
    except KeyError:
        logger.warning(f"finetune: --best-checkpoint-metric {ckpt_cfg.best_checkpoint_metric} is not a validation "
                       "statistic; checkpoint_best.pt is not seeded with the restored model")
        return False
    checkpoint_utils.save_checkpoint.best = loss
    setattr(checkpoint_utils.save_checkpoint, _SEED_MARK, True)
    logger.info(f"finetune: the restored model's {subset} {ckpt_cfg.best_checkpoint_metric} is {loss}; "
                "checkpoint_best.pt starts as the restored model and is replaced only by a model at least as good")
    if ckpt_cfg.no_save:
        return True
    best_path = os.path.join(ckpt_cfg.save_dir, f"checkpoint_best{trainer.checkpoint_suffix}.pt")
    if os.path.exists(best_path):
        # an existing file of an earlier run in the same save dir: fairseq's own rule decides
        # whether the finetune replaces it; it is not ours to overwrite with the restored model
        logger.warning(f"finetune: {best_path} already exists and is kept; it may not be the restored model")
        return True
    if trainer.data_parallel_rank == 0:
        os.makedirs(ckpt_cfg.save_dir, exist_ok=True)
    # fairseq's own atomic writer (temporary name + rename), the restored weights, with their loss as "best"
    # (the iterator has not started its epoch: its state is "before the first batch of epoch N")
    itr_state = {"version": 2, "epoch": epoch_itr.epoch, "iterations_in_epoch": 0, "shuffle": False}
    trainer.consolidate_optimizer()  # as checkpoint_utils.save_checkpoint does before trainer.save_checkpoint
    trainer.save_checkpoint(best_path, {"train_iterator": itr_state, "val_loss": loss, "best": loss})
    return True


def install():
    """Wrap ``fairseq.checkpoint_utils.load_checkpoint`` once (idempotent)."""
    original = checkpoint_utils.load_checkpoint
    if getattr(original, "_awd_finetune_best", False):
        return

    def load_checkpoint(cfg, trainer, **passthrough_args):
        extra_state, epoch_itr = original(cfg, trainer, **passthrough_args)
        if extra_state is not None:  # weights were restored from a checkpoint
            seed_best_from_restored(cfg, trainer, epoch_itr)
        return extra_state, epoch_itr

    load_checkpoint._awd_finetune_best = True
    load_checkpoint.__wrapped__ = original
    load_checkpoint.__doc__ = original.__doc__
    checkpoint_utils.load_checkpoint = load_checkpoint


install()
