"""Fused GPU kernels of the recurrences, written in Triton, each beside the plain torch
loop that defines it (same signature):

* :mod:`.forget_mult`: QRNN forget-mult ``c_t = f_t z_t + (1 − f_t) c_{t−1}``
  (:func:`forget_mult_triton` / :func:`forget_mult_reference`);
* :mod:`.sru_recurrence`: the SRU / SRU++ element-wise recurrence with every term of
  the reference's CUDA kernel (:func:`sru_recurrence_triton` / :func:`sru_recurrence_reference`);
* :mod:`.dispatch`: ``--recurrence-impl {auto,torch,triton}`` (:func:`use_triton`), the
  lazy compile/interpret wrapper and the one-warning fallback to the torch code.

Importing this package never imports Triton; the kernels' modules
(``forget_mult_kernels``, ``sru_kernels``) are loaded on first use.
"""

from awd_plugins.kernels.dispatch import RECURRENCE_IMPL_HELP, RECURRENCE_IMPLS, check_impl, use_triton
from awd_plugins.kernels.forget_mult import forget_mult_reference, forget_mult_triton
from awd_plugins.kernels.sru_recurrence import sru_recurrence_reference, sru_recurrence_triton

__all__ = [
    "RECURRENCE_IMPLS", "RECURRENCE_IMPL_HELP", "check_impl", "use_triton",
    "forget_mult_reference", "forget_mult_triton", "sru_recurrence_reference", "sru_recurrence_triton",
]
