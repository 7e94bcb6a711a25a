"""bf16 mixed precision by autocast: ``--cpu-bf16`` (CPU) and ``--gpu-bf16`` (CUDA).

Why task options of our own: fairseq's ``--bf16`` switches fairseq into TPU mode when
there is no GPU (and on a GPU it casts the *weights* to bf16), and its ``--amp`` is fp16
CUDA autocast with a loss scaler. Both options here keep fp32 weights and turn on
``torch.autocast(device, dtype=torch.bfloat16)`` around the decoder's work:

* **in bf16**: the matrix products autocast lists (``linear``, ``mm``, ``bmm``, ...):
  input and recurrent projections, attention, the decoder logits. CPUs with AVX-512 bf16
  or AMX run them several times faster than fp32 (measured here, AMD Zen 4: about 4× at
  the decoder's 1400×400 @ 400×10000 shape); GPUs from Ampere on run them on tensor cores.
* **in fp32**: the parameters themselves and hence the optimizer state, gradients,
  clipping and NT-ASGD's average (autocast never changes a parameter's dtype); the
  softmaxes and the losses (the split softmax casts its logits to fp32), AR/TAR and
  the cache pointer (the decoder hands out its last-layer outputs in fp32), and the
  recurrences' cell states (LSTM: :class:`~awd_plugins.modules.lstm.AutocastLSTM`;
  QRNN/SRU: fp32 gates on the CPU, fp32 accumulation inside the Triton kernels on CUDA).
* **the fused library RNNs** (``nn.LSTM``/``nn.GRU``/``nn.RNN``: the classic word LMs;
  AWD-LSTM's and SHA-RNN's LSTMs on CUDA) run outside autocast in fp32
  (:func:`fused_rnn_outside_bf16`). On CUDA, torch's autocast wrapper for ``_cudnn_rnn``
  casts to fp16 whatever the autocast dtype (``aten/src/ATen/cudnn/AutocastRNN.cpp``), and
  fp16 without a loss scaler is what ``--gpu-bf16`` exists to avoid. On the CPU, oneDNN's
  bf16 RNN kernel measured slower than its fp32 one (Zen 4), and on CPUs without native
  bf16 (Zen 3) it cannot be created at all ("could not create a primitive descriptor").

bf16 has fp32's exponent range, so no loss scaling is needed: ``--gpu-bf16`` replaces
``--amp`` and runs under fairseq's plain fp32 optimizer.

The switch lives on the decoder (:attr:`RecurrentDecoder.bf16_autocast`, the device type
or None) and is read in its ``forward``, ``output_layer`` and ``nll``, so
``fairseq-train`` (training and validation), ``fairseq-eval-lm``, sampling and the
project's own tools all see it, and the backward pass runs outside autocast as torch
recommends.
"""

import contextlib
import logging
from typing import Optional

import torch

from awd_plugins.errors import AwdUserError

logger = logging.getLogger(__name__)


def bf16_autocast_active(x: torch.Tensor, device_type: str) -> bool:
    """True when ``x`` is on ``device_type`` inside ``torch.autocast(device_type, dtype=torch.bfloat16)``."""
    return (
        x.device.type == device_type
        and torch.is_autocast_enabled(device_type)
        and torch.get_autocast_dtype(device_type) == torch.bfloat16
    )


def cpu_bf16_autocast_active(x: torch.Tensor) -> bool:
    """True when ``x`` is on the CPU inside ``torch.autocast("cpu", dtype=torch.bfloat16)``."""
    return bf16_autocast_active(x, "cpu")


def bf16_autocast(device_type: Optional[str]):
    """The autocast context of ``--cpu-bf16`` (``"cpu"``) / ``--gpu-bf16`` (``"cuda"``); a no-op for None."""
    if device_type is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=torch.bfloat16)


def fused_rnn_outside_bf16(rnn, x: torch.Tensor, hx=None):
    """``rnn(x, hx)`` for a library ``nn.LSTM``/``nn.GRU``/``nn.RNN`` (cuDNN / oneDNN); in fp32
    outside autocast when ``x`` is under bf16 autocast on its device (see the module
    docstring), otherwise exactly ``rnn(x, hx)``."""
    device = x.device.type
    if device not in ("cpu", "cuda") or not bf16_autocast_active(x, device):
        return rnn(x, hx)
    to_fp32 = lambda s: None if s is None else (tuple(t.float() for t in s) if isinstance(s, tuple) else s.float())  # noqa: E731
    with torch.autocast(device, enabled=False):
        return rnn(x.float(), to_fp32(hx))


def native_cpu_bf16() -> bool:
    """Whether this CPU computes bf16 products natively (AVX-512 bf16 or AMX), as oneDNN sees it."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def enable_bf16_autocast(model, device_type: str, fp16: bool = False, bf16: bool = False, amp: bool = False,
                         on_gpu: bool = False):
    """Turn ``--cpu-bf16`` (``device_type="cpu"``) or ``--gpu-bf16`` (``"cuda"``) on for ``model``
    (a :class:`RecurrentLanguageModel`); every user error is one line."""
    option = "--cpu-bf16" if device_type == "cpu" else "--gpu-bf16"
    if fp16 or bf16 or amp:
        raise AwdUserError(f"{option} replaces --fp16/--bf16/--amp: give only one of them")
    if device_type == "cpu" and on_gpu:
        raise AwdUserError("--cpu-bf16 is for CPU runs (add --cpu); on a GPU use --gpu-bf16 or fairseq's --amp")
    if device_type == "cuda":
        if not on_gpu:
            raise AwdUserError("--gpu-bf16 needs a CUDA GPU (this run is on the CPU: use --cpu-bf16 there)")
        if not torch.cuda.is_bf16_supported():
            raise AwdUserError(f"--gpu-bf16: {torch.cuda.get_device_name()} has no native bf16 "
                               "(compute capability 8.0 or newer); use fairseq's --amp (fp16) instead")
    decoder = getattr(model, "decoder", None)
    if not hasattr(decoder, "bf16_autocast"):
        raise AwdUserError(f"{option} needs an awd-plugins model; {type(model).__name__} is not one")
    decoder.bf16_autocast = device_type
    if device_type == "cpu" and not native_cpu_bf16():
        logger.warning("--cpu-bf16: this CPU has no native bf16 (AVX-512 bf16 or AMX): the run is correct but its "
                       "bf16 products are emulated and slower than fp32 (measured 7x on a Zen 3); prefer fp32 here")
