"""Fixed-shape attention memory, the form ``awd-export`` traces (issue #16: "the attention
memory of SHA-RNN/SRU++ as explicit state").

In training and ordinary evaluation an attention memory (SHA-RNN blocks, SRU++ layers)
grows from 0 rows, window by window, up to its cap; an exported graph has fixed shapes,
so there the memory is instead

* a buffer of exactly ``cap`` rows (``cap × B × d``) whose **last** ``valid`` rows are
  the real memory (the rows before them are zeros at the start and are never attended);
* one validity count per stream, ``valid`` (int64, ``1 × B``: batch on dim 1 as every
  state tensor, so fairseq's reordering and the carried-state machinery handle it),
  starting at 0 and advanced to ``min(cap, valid + T)`` by every window of T tokens.

The count acts only through comparisons with :func:`torch.arange` (no Python int read
from a tensor, no tensor-valued slicing), so tracing bakes no data-dependent shape.
Empty rows get an additive −∞ before the softmax, hence exactly zero attention weight:
the outputs are those of the growing memory (every query also sees its own key, so no
row of the softmax is fully masked).

A decoder in this form takes and returns the state ``(state, valid)``: its ordinary
state (memories padded to ``cap`` rows) and the shared count. The models call these
helpers; :mod:`awd_plugins.inference` only switches the form on
(:meth:`~awd_plugins.models.recurrent_lm.RecurrentDecoder.use_fixed_memory`).
"""

from typing import Optional

import torch
from torch import Tensor

from awd_plugins.errors import AwdUserError


def check_memory_len(memory_len: Optional[int]) -> Optional[int]:
    """``awd-export --memory-len``: None (the model's own cap) or a positive number of rows."""
    if memory_len is not None and memory_len < 1:
        raise AwdUserError(f"--memory-len must be a positive integer, got {memory_len}")
    return memory_len


def init_valid(bsz: int, like: Tensor) -> Tensor:
    """The count of an empty memory: zeros, int64, ``1 × bsz``."""
    return torch.zeros(1, bsz, dtype=torch.long, device=like.device)


def advance_valid(valid: Tensor, length: int, cap: int) -> Tensor:
    """The count after a window of ``length`` tokens: ``min(cap, valid + length)``."""
    return torch.clamp(valid + length, max=cap)


def mask_empty_rows(mask: Tensor, valid: Tensor, rows: int) -> Tensor:
    """``mask`` (additive, ``… × T × S``, keys = ``rows`` memory rows then the window) with −∞
    on the memory rows that are not (yet) real: row ``j`` is empty iff ``j < rows − valid``.

    Returns ``B × … × T × S`` (one mask per stream, the batch first, as attention scores are
    laid out); ``valid`` may exceed ``rows`` (a memory trimmed below its cap): nothing is masked.
    """
    keys = torch.arange(mask.size(-1), device=mask.device)
    empty = keys < rows - valid.reshape(-1, 1)  # B × S
    empty = empty.reshape(empty.size(0), *([1] * (mask.dim() - 1)), empty.size(1))  # B × 1… × S
    return mask.masked_fill(empty, float("-inf"))
