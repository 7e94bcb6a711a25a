"""The carried training state in checkpoints: a mid-epoch resume continues bit for bit.

Training carries each stream's recurrent state from one window to the next
(REFERENCE §10.1). fairseq's checkpoint holds the weights, the optimizer, the
meters and the iterator position, but not that state, so a run resumed from a
mid-epoch ``checkpoint_E_U.pt`` would start its next window from zeros where the
uninterrupted run continues the streams. The task hands this state to fairseq's
task checkpoint hooks (``get_checkpoint_dict`` / ``set_checkpoint_dict``, stored
under ``extra_state["AwdLanguageModelingTask"]``) with this class:

* **save** (rank 0 writes checkpoints): the state carried out of the last training
  window, per rank. In a distributed run every rank's state is gathered to all ranks
  after each update that fairseq will checkpoint (``--save-interval-updates``,
  ``--max-update``) because only rank 0 reaches the checkpoint hook.
* **restore**: fairseq resets the state when the epoch (re)starts
  (``task.begin_epoch``), so the saved state is kept pending and carried into the
  model right after that reset, for the saved epoch only; the decoder uses it only
  if the next window really continues it (same start column and batch size).
"""

import logging
from typing import Any, Dict, List, Optional

import torch

from awd_plugins.models.recurrent_lm import map_state

logger = logging.getLogger(__name__)

VERSION = 1


def _world():
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        from fairseq.distributed import utils as distributed_utils

        return distributed_utils.get_data_parallel_world_size(), distributed_utils.get_data_parallel_rank()
    return 1, 0


def _decoder(model):
    model = getattr(model, "module", model)  # DDP wrappers
    return getattr(model, "decoder", None)


def _shapes(state) -> List[Any]:
    """Each tensor's shape after dim 0 (batch, features), in order: attention memories grow
    along dim 0, everything else must match the model's zero state."""
    shapes: List[Any] = []
    map_state(lambda t: shapes.append(tuple(t.shape[1:])) or t, state)
    return shapes


class CarriedTrainingState:
    """What the task puts into a checkpoint so that the training streams continue after a resume."""

    def __init__(self, key: str):
        self.key = key  # the training stream set (the train subset's name)
        self.model = None
        self.epoch: Optional[int] = None
        self.num_updates = 0  # after the last training step
        self._gathered: Optional[Dict[str, Any]] = None
        self._pending: Optional[Dict[str, Any]] = None

    # -- while training ---------------------------------------------------------------------
    def _local(self) -> Optional[Dict[str, Any]]:
        decoder = _decoder(self.model)
        if decoder is None or not hasattr(decoder, "export_carried_state"):
            return None
        saved = decoder.export_carried_state(self.key)
        if saved is None:
            return None
        return {**saved, "state": map_state(lambda t: t.detach().cpu().clone(), saved["state"])}

    def after_update(self, num_updates: int, save_interval_updates: int, max_update: int):
        """In a distributed run, gather every rank's state after an update fairseq will checkpoint."""
        self.num_updates = num_updates
        world, _ = _world()
        if world == 1:
            return
        saving = (save_interval_updates > 0 and num_updates % save_interval_updates == 0) or (
            max_update > 0 and num_updates >= max_update
        )
        if not saving:
            return
        from fairseq.distributed import utils as distributed_utils

        ranks: List[Any] = [None] * world
        torch.distributed.all_gather_object(ranks, self._local(), group=distributed_utils.get_data_parallel_group())
        self._gathered = {"num_updates": num_updates, "ranks": ranks}

    # -- checkpoint hooks -------------------------------------------------------------------
    def state_for_checkpoint(self, end_of_epoch: bool) -> Dict[str, Any]:
        world, _ = _world()
        num_updates = self.num_updates
        if end_of_epoch:  # the next epoch starts its streams from zeros
            ranks = [None] * world
        elif world == 1:
            ranks = [self._local()]
        elif self._gathered is not None and self._gathered["num_updates"] == num_updates:
            ranks = self._gathered["ranks"]
        else:
            logger.warning(
                f"checkpoint at update {num_updates}: the other ranks' carried state was not gathered "
                "(not a --save-interval-updates/--max-update save); a resume from it restarts the streams from zeros"
            )
            ranks = [None] * world
        return {"version": VERSION, "epoch": self.epoch, "world_size": world, "ranks": ranks}

    def load_from_checkpoint(self, saved: Dict[str, Any]):
        if not isinstance(saved, dict) or saved.get("version") != VERSION:
            return
        world, rank = _world()
        if saved.get("world_size") != world:
            logger.warning(
                f"the checkpoint carried the training state of {saved.get('world_size')} rank(s), this run has "
                f"{world}: the streams restart from zeros"
            )
            return
        try:
            mine = saved["ranks"][rank]
        except (KeyError, IndexError, TypeError):
            mine = None
        if mine is not None:
            self._pending = {"epoch": saved.get("epoch"), "carry": mine}

    # -- epoch start --------------------------------------------------------------------------
    def begin_epoch(self, epoch: int, model):
        """Called after the task has reset the carried state for ``epoch``."""
        self.model, self.epoch = model, epoch
        pending, self._pending = self._pending, None
        if pending is None or pending["epoch"] != epoch:
            return
        decoder = _decoder(model)
        if decoder is None or not hasattr(decoder, "import_carried_state"):
            return
        carry = pending["carry"]
        try:
            fits = _shapes(carry["state"]) == _shapes(decoder.init_state(int(carry["bsz"]), decoder.embed_tokens.weight))
        except (KeyError, TypeError, ValueError):
            fits = False
        if not fits:
            logger.warning("the checkpoint's carried training state does not fit this model: the streams restart from zeros")
            return
        decoder.import_carried_state(self.key, carry)
        logger.info(
            f"carried training state restored: the window at column {carry['pos'] + carry['length']} "
            "continues the checkpointed streams"
        )
