"""The task's checks of user input, each turned into one ``error:`` line (issue #12 §5).

Options are checked when the task is set up, before any data is read or any
training done: an out-of-range value must never hang (``--bptt-cap 0`` made the
window sampler loop forever), crash after an epoch of work, or be ignored silently
(``--pointer-window -5``). Data splits are checked when they are loaded: empty,
unreadable, or too short for the windows that training draws from them.
"""

import math
import os
import struct
from datetime import timedelta

import torch

from awd_plugins.errors import AwdUserError, check_range

# Training windows start while i < length − 2 (REFERENCE §3.1), so a stream needs 3 tokens
# for one training window; an evaluation window needs 2 (one input, one target).
MIN_TRAINING_STREAM = 3
MIN_EVALUATION_STREAM = 2


def check_task_options(cfg):
    """Raise :class:`AwdUserError` for a task option no run can use."""
    if cfg.bptt_cap is not None and cfg.bptt_cap < 1:
        raise AwdUserError(f"--bptt-cap must be a positive number of tokens, got {cfg.bptt_cap}")
    if cfg.eval_batch_size < 1:
        raise AwdUserError(f"--eval-batch-size must be a positive number of streams, got {cfg.eval_batch_size}")
    if cfg.pointer_window < 0:
        raise AwdUserError(f"--pointer-window must be 0 (off) or a positive number of positions, got {cfg.pointer_window}")
    check_range("pointer_lambda", cfg.pointer_lambda, 0.0, 1.0, high_inclusive=True)
    if not math.isfinite(cfg.pointer_theta):
        raise AwdUserError(f"--pointer-theta must be a finite number, got {cfg.pointer_theta}")
    timeout = getattr(cfg, "distributed_timeout", None)
    if timeout is not None and not timeout > 0:
        raise AwdUserError(f"--distributed-timeout must be a positive number of seconds, got {timeout}")


def check_eval_batch_size(batch_size):
    """``fairseq-eval-lm --batch-size``: None means the reference's 1 stream; 0 or less is an error, not 1."""
    if batch_size is not None and batch_size < 1:
        raise AwdUserError(f"--batch-size must be a positive number of streams, got {batch_size}")
    return batch_size or 1


def load_split(path: str, split: str, dictionary, data_dir: str):
    """The indexed dataset of ``split`` (``path``.bin/.idx), or one error line when it is missing, empty or unreadable."""
    from fairseq.data import data_utils

    if os.path.isfile(path + ".bin") and os.path.getsize(path + ".bin") == 0:
        raise AwdUserError(f"split {split!r} in {data_dir} is empty ({path}.bin holds no tokens)")
    try:
        indexed = data_utils.load_indexed_dataset(path, dictionary, None)
    except (ValueError, OSError, IndexError, KeyError, struct.error, AssertionError) as e:  # truncated, not an index
        raise AwdUserError(f"split {split!r} in {data_dir} cannot be read ({path}.bin/.idx: {e}); binarize it again")
    if indexed is None:
        raise AwdUserError(f"split {split!r} not found in {data_dir} (expected {path}.bin/.idx)")
    if len(indexed) == 0:
        raise AwdUserError(f"split {split!r} in {data_dir} is empty")
    return indexed


def min_stream_length(training: bool) -> int:
    return MIN_TRAINING_STREAM if training else MIN_EVALUATION_STREAM


def set_distributed_timeout(seconds):
    """Make every collective of this run fail after ``seconds`` instead of torch's default (30 min for gloo,
    10 min for NCCL) when another rank stops answering; a no-op without a distributed run."""
    if seconds is None or not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return False
    # public in newer torch; the private one (torch >= 2.2) before
    set_timeout = getattr(torch.distributed, "set_timeout", None) or getattr(
        torch.distributed.distributed_c10d, "_set_pg_timeout", None)
    if set_timeout is None:
        raise AwdUserError(f"--distributed-timeout needs a newer torch (this one, {torch.__version__}, cannot change "
                           "the timeout of a running process group)")
    from fairseq.distributed import utils as distributed_utils

    # the default group, and the group fairseq's trainer all-reduces over (made by fairseq with
    # dist.new_group, so it does not inherit a later change of the default group's timeout)
    for group in (None, distributed_utils.get_global_group()):
        set_timeout(timedelta(seconds=seconds), group)
    return True
