"""The compatibility shims the plugin applies at import (FAIRSEQ_NOTES §6, §11; the
``--amp`` unscale: issue #11).

Each answers one upstream break of fairseq 0.12.x on current torch/numpy, or (guard_checkpoints)
one unsafe behaviour of its checkpoint handling; nothing else in fairseq is patched.
"""

import argparse
import collections
import logging
import os
import types
import typing

import numpy as np
import torch


def guard_checkpoints():
    """Checkpoint loading names only this package's model/task, files appear atomically,
    and resume never silently starts over: see :mod:`awd_plugins.checkpoints` (issue #12)."""
    from awd_plugins import checkpoints

    checkpoints.install()


def allow_checkpoint_globals():
    """torch >= 2.6 loads with ``weights_only=True`` by default, and fairseq's
    ``torch.load`` calls pass no ``weights_only``. Allow-list exactly the classes a
    fairseq checkpoint holds: ``argparse.Namespace`` (legacy ``args`` / ``add_args``
    architectures) and, for the state that rank 0 broadcasts when a distributed run
    resumes, omegaconf's containers and fairseq's tensor placeholder. The global
    default stays ``weights_only=True``.
    """
    from fairseq.distributed.utils import _TensorPlaceholder
    from omegaconf import DictConfig, ListConfig
    from omegaconf.base import ContainerMetadata, Metadata
    from omegaconf.nodes import AnyNode

    add = getattr(torch.serialization, "add_safe_globals", None)
    if add is None:  # torch < 2.4 does not load weights-only by default
        return
    add([argparse.Namespace])
    add([DictConfig, ListConfig, ContainerMetadata, Metadata, AnyNode, _TensorPlaceholder,
         typing.Any, collections.defaultdict, dict, list, int])


def eval_lm_logs_to_stdout():
    """fairseq 0.12.x's ``models/wav2vec/wav2vec2_classification.py`` calls
    ``logging.basicConfig(level=DEBUG)`` when ``import fairseq`` runs. ``fairseq-eval-lm``
    imports fairseq before its own ``basicConfig(stream=sys.stdout, level=INFO)``, which
    then does nothing: its results (``Loss (base 2): …, Perplexity: …``) go to stderr in
    between DEBUG lines, and ``fairseq-eval-lm … > eval.log`` leaves the log empty. When the
    running program is fairseq-eval-lm and the root logger still holds exactly that import's
    handler, configure logging as eval_lm.py asks (stdout, INFO or ``$LOGLEVEL``).
    """
    import logging
    import os
    import sys

    main = sys.modules.get("__main__")
    program = getattr(getattr(main, "__spec__", None), "name", None)
    if os.path.basename(sys.argv[0] if sys.argv else "") != "fairseq-eval-lm" and program != "fairseq_cli.eval_lm":
        return False
    root = logging.getLogger()
    handlers = root.handlers
    if not (root.level == logging.DEBUG and len(handlers) == 1 and type(handlers[0]) is logging.StreamHandler
            and handlers[0].stream is sys.stderr and handlers[0].formatter is not None
            and handlers[0].formatter._fmt == logging.BASIC_FORMAT):
        return False
    logging.basicConfig(format="%(asctime)s | %(levelname)s | %(name)s | %(message)s", datefmt="%Y-%m-%d %H:%M:%S",
                        level=os.environ.get("LOGLEVEL", "INFO").upper(), stream=sys.stdout, force=True)
    return True


def restore_numpy_compat():
    """numpy 2 removed ``np.compat``; fairseq's token_block_dataset.py and
    language_pair_dataset.py still call ``np.compat.long``."""
    if not hasattr(np, "compat"):
        np.compat = types.SimpleNamespace(long=np.int64)


def _amp_clip_grad_norm(self, max_norm, aggregate_norm_fn=None):
    """fairseq's ``AMPOptimizer.clip_grad_norm`` with the gradients unscaled through the
    object that ``step()`` hands to the scaler (the fairseq optimizer), so that the
    scaler's per-optimizer record says "already unscaled" when it steps."""
    self.scaler.unscale_(self.fp32_optimizer)
    grad_norm = self.fp32_optimizer.clip_grad_norm(max_norm, aggregate_norm_fn)
    if not torch.isfinite(grad_norm).all():
        # the scaler skips this step and lowers the scale; fairseq's rule for giving up
        next_scale = self.next_loss_scale
        if next_scale <= self.min_loss_scale:
            raise FloatingPointError(
                f"AMP: minimum loss scale reached ({self.min_loss_scale}); the loss is probably exploding. "
                "Restart the training or use fp32."
            )
        logging.getLogger("fairseq.optim.amp_optimizer").info(f"AMP: overflow detected, setting scale to {next_scale}")
    return grad_norm


def amp_single_unscale():
    """fairseq 0.12's ``--amp`` divides the gradients by the loss scale twice: its
    ``AMPOptimizer.clip_grad_norm`` unscales the *inner* torch optimizer
    (``scaler.unscale_(self.optimizer)``) while ``step()`` calls
    ``scaler.step(self.fp32_optimizer)``, a different object, which the scaler has not
    seen unscaled and so unscales again. Every optimizer then steps with
    grad / scale (SGD/NT-ASGD and RAdam: lr / scale; LAMB's Adam ratio drowned by ε).
    The shim unscales the fairseq optimizer in ``clip_grad_norm`` (fairseq's trainer
    calls it on every update, with ``--clip-norm 0`` too), the same object that
    ``step()`` passes, so the scaler unscales exactly once and steps it exactly once
    (``tests/test_amp.py``)."""
    from fairseq.optim.amp_optimizer import AMPOptimizer

    if AMPOptimizer.clip_grad_norm is not _amp_clip_grad_norm:
        AMPOptimizer.fairseq_clip_grad_norm = AMPOptimizer.clip_grad_norm  # kept for the test that shows the defect
        AMPOptimizer.clip_grad_norm = _amp_clip_grad_norm


def torchrun_without_cuda():
    """fairseq maps a torchrun rank to ``rank % torch.cuda.device_count()``, which divides by
    zero on CPU-only machines (gloo runs, the multi-node recipe's test): use device 0 there."""
    from fairseq.distributed import utils as dist_utils

    original = dist_utils._infer_torch_distributed_launch_init
    if getattr(original, "_awd_cpu_safe", False):
        return

    def infer(cfg):
        import torch

        if torch.cuda.device_count() > 0:
            return original(cfg)
        cfg.distributed_init_method = "env://"
        cfg.distributed_world_size = int(os.environ["WORLD_SIZE"])
        cfg.distributed_rank = int(os.environ["RANK"])
        cfg.device_id = 0
        cfg.distributed_no_spawn = True

    infer._awd_cpu_safe = True
    dist_utils._infer_torch_distributed_launch_init = infer


def apply():
    eval_lm_logs_to_stdout()
    restore_numpy_compat()
    guard_checkpoints()
    allow_checkpoint_globals()
    amp_single_unscale()
    torchrun_without_cuda()
