"""Which implementation runs a recurrence: ``--recurrence-impl {auto,torch,triton}``.

* ``torch``: the plain-PyTorch code of :mod:`awd_plugins.modules.qrnn` (forget-mult:
  step loop on the CPU, log-depth scan on CUDA) and :mod:`awd_plugins.modules.sru`
  (TorchScript step loops). The CPU default: nothing in it changes.
* ``triton``: the fused kernels of this package (one program per block of B·H
  columns looping over time, forward and backward). On a CUDA tensor they are
  compiled by Triton; on a CPU tensor they run only under ``TRITON_INTERPRET=1``
  (Triton's interpreter: for tests, far too slow for training), otherwise this is
  an :class:`~awd_plugins.errors.AwdUserError`.
* ``auto``: ``triton`` for CUDA tensors when Triton imports, ``torch`` otherwise.

A kernel that fails to compile or launch never stops a run: the first failure is
reported in one warning, and from then on every recurrence of the process uses the
``torch`` code (:func:`launch`).
"""

import functools
import importlib.util
import logging
import os
from typing import Callable

import torch

from awd_plugins.errors import AwdUserError

RECURRENCE_IMPLS = ("auto", "torch", "triton")
RECURRENCE_IMPL_HELP = (
    "recurrence implementation: 'torch' (plain PyTorch ops), 'triton' (fused Triton kernels: CUDA, or the CPU "
    "under TRITON_INTERPRET=1), 'auto' (Triton on CUDA when it imports, else torch)"
)

logger = logging.getLogger(__name__)
_state = {"failed": None}  # the exception that disabled the kernels in this process, if any


class KernelUnavailable(RuntimeError):
    """A Triton kernel could not be compiled or launched (already warned about)."""


@functools.lru_cache(maxsize=None)
def triton_importable() -> bool:
    return importlib.util.find_spec("triton") is not None


def interpreting() -> bool:
    """``TRITON_INTERPRET=1``: Triton runs kernels on CPU tensors through its interpreter."""
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


def check_impl(impl: str) -> str:
    if impl not in RECURRENCE_IMPLS:
        raise AwdUserError(f"--recurrence-impl must be one of {', '.join(RECURRENCE_IMPLS)}, got {impl!r}")
    if impl == "triton" and not triton_importable():
        raise AwdUserError(
            "--recurrence-impl triton needs the triton package (it ships with CUDA builds of torch; "
            "pip install triton), or use --recurrence-impl auto"
        )
    return impl


def use_triton(impl: str, like: torch.Tensor) -> bool:
    """Whether a recurrence over tensors like ``like`` runs the Triton kernels under ``impl``."""
    check_impl(impl)
    if impl == "torch" or _state["failed"] is not None:
        return False
    if impl == "auto":
        return like.is_cuda and triton_importable()
    if like.device.type != "cuda" and not interpreting():
        raise AwdUserError(
            f"--recurrence-impl triton runs on CUDA tensors (this one is on {like.device.type}); on the CPU only "
            "under TRITON_INTERPRET=1 (for tests). Use --recurrence-impl auto, or for a checkpoint trained with "
            "triton: --model-overrides \"{'recurrence_impl': 'auto'}\""
        )
    return True


def disable(error: BaseException):
    """Record a kernel failure: one logged warning (in the training log, whatever
    PYTHONWARNINGS says), then the torch code for the rest of the process."""
    if _state["failed"] is None:
        _state["failed"] = error
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        logger.warning(
            f"Triton recurrence kernel unavailable ({type(error).__name__}: {first_line}); "
            "falling back to --recurrence-impl torch for this run"
        )


def reset():
    """Forget an earlier failure (tests)."""
    _state["failed"] = None


_kernels = {}


def kernel(fn: Callable, like: torch.Tensor):
    """``fn`` (a plain function written in triton.language) as a launchable kernel for ``like``'s
    device: ``triton.jit`` on CUDA, Triton's interpreter on the CPU (checked by :func:`use_triton`).
    Wrapped lazily so that importing the plugin never imports Triton."""
    interpret = like.device.type != "cuda" or interpreting()
    key = (fn, interpret)
    if key not in _kernels:
        if interpret:
            from triton.runtime.interpreter import InterpretedFunction

            _kernels[key] = InterpretedFunction(fn)
        else:
            import triton

            _kernels[key] = triton.jit(fn)
    return _kernels[key]


def launch(fn: Callable, grid, *args, **meta):
    """Launch kernel ``fn`` on ``grid``; the device is that of the first tensor argument.
    Any failure (compilation, resources, a missing toolchain) → :func:`disable` and
    :class:`KernelUnavailable`, which the callers turn into the torch code."""
    like = next(a for a in args if isinstance(a, torch.Tensor))
    try:
        kernel(fn, like)[grid](*args, **meta)
    except Exception as e:  # noqa: BLE001 - whatever Triton raises, the run goes on with torch
        disable(e)
        raise KernelUnavailable(str(e)) from e


def block_size(columns: int, like: torch.Tensor, block=None) -> int:
    """Columns per program: 128 on CUDA (one per thread of 4 warps, enough programs to fill the
    GPU at B·H ≈ 10⁴–10⁵); on the interpreter as few programs as possible (each is a Python loop
    over time), at most 4096 columns each."""
    if block is not None:
        return int(block)
    if like.device.type == "cuda" and not interpreting():
        return 128
    return min(4096, max(16, 1 << (max(columns, 1) - 1).bit_length()))
