"""``--cpu-bf16``: bf16 mixed precision on the CPU (autocast), for training and evaluation.

Why a task option: fairseq's ``--bf16`` switches fairseq into TPU mode when there is
no GPU, and its ``--amp`` is CUDA autocast. CPUs with AVX-512 bf16 (or AMX) run bf16
GEMMs several times faster than fp32 ones (measured here, AMD Zen 4: about 4× at the
decoder's 1400×400 @ 400×10000 shape), so the option turns on
``torch.autocast("cpu", dtype=torch.bfloat16)`` around the decoder's work:

* **in bf16**: the matrix products autocast lists for the CPU (``linear``, ``mm``,
  ``bmm``, ...): input and recurrent projections, attention, the decoder logits;
* **in fp32**: the parameters themselves and hence the optimizer state, gradients,
  clipping and NT-ASGD's average (autocast never changes a parameter's dtype); the
  softmaxes and the losses (the split softmax casts its logits to fp32), AR/TAR and
  the cache pointer (the decoder hands out its last-layer outputs in fp32), and the
  recurrences' cell states (LSTM: :class:`~awd_plugins.modules.lstm.AutocastLSTM`;
  QRNN: the forget-mult runs on fp32 gates).

The switch lives on the decoder (:attr:`RecurrentDecoder.cpu_bf16`) and is read in
its ``forward``, ``output_layer`` and ``nll``, so ``fairseq-train`` (training and
validation), ``fairseq-eval-lm``, sampling and the project's own tools all see it,
and the backward pass runs outside autocast as torch recommends.
"""

import contextlib

import torch

from awd_plugins.errors import AwdUserError


def cpu_bf16_autocast_active(x: torch.Tensor) -> bool:
    """True when ``x`` is on the CPU inside ``torch.autocast("cpu", dtype=torch.bfloat16)``."""
    return (
        x.device.type == "cpu"
        and torch.is_autocast_enabled("cpu")
        and torch.get_autocast_dtype("cpu") == torch.bfloat16
    )


def cpu_bf16(enabled: bool):
    """The autocast context of ``--cpu-bf16`` (a no-op context when not ``enabled``)."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast("cpu", dtype=torch.bfloat16)


def enable_cpu_bf16(model, fp16: bool = False, bf16: bool = False, on_gpu: bool = False):
    """Turn ``--cpu-bf16`` on for ``model`` (a :class:`RecurrentLanguageModel`); user errors in one line."""
    if fp16 or bf16:
        raise AwdUserError("--cpu-bf16 replaces --fp16/--bf16 on the CPU: give only one of them")
    if on_gpu:
        raise AwdUserError("--cpu-bf16 is for CPU runs (add --cpu); on a GPU use fairseq's --amp or --bf16")
    decoder = getattr(model, "decoder", None)
    if not hasattr(decoder, "cpu_bf16"):
        raise AwdUserError(f"--cpu-bf16 needs an awd-plugins model; {type(model).__name__} is not one")
    decoder.cpu_bf16 = True
