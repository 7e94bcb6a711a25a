"""The compatibility shims the plugin applies at import (FAIRSEQ_NOTES §6, §11).

Each answers one upstream break of fairseq 0.12.x on current torch/numpy, or (guard_checkpoints)
one unsafe behaviour of its checkpoint handling; nothing else in fairseq is patched.
"""

import argparse
import collections
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


def restore_numpy_compat():
    """numpy 2 removed ``np.compat``; fairseq's token_block_dataset.py and
    language_pair_dataset.py still call ``np.compat.long``."""
    if not hasattr(np, "compat"):
        np.compat = types.SimpleNamespace(long=np.int64)


def apply():
    restore_numpy_compat()
    guard_checkpoints()
    allow_checkpoint_globals()
