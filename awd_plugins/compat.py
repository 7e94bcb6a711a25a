"""The compatibility shims the plugin applies at import (FAIRSEQ_NOTES §6, §11).

Each answers one upstream break of fairseq 0.12.x on current torch/numpy; nothing
else in fairseq is patched.
"""

import os
import argparse
import collections
import types
import typing

import numpy as np
import torch


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


def restore_numpy_compat():
    """numpy 2 removed ``np.compat``; fairseq's token_block_dataset.py and
    language_pair_dataset.py still call ``np.compat.long``."""
    if not hasattr(np, "compat"):
        np.compat = types.SimpleNamespace(long=np.int64)


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
    restore_numpy_compat()
    allow_checkpoint_globals()
    torchrun_without_cuda()
