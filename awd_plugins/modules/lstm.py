"""Single-layer LSTM whose matrix products run in bf16 under CPU autocast (``--cpu-bf16``).

The LSTM of Hochreiter & Schmidhuber (1997) as ``torch.nn.LSTM`` computes it
(REFERENCE §2.2), gates in the order i | f | g | o:

    G_t = W_ih x_t + b_ih + W_hh h_{t−1} + b_hh                        (B×4H)
    i, f, o = σ(G^i), σ(G^f), σ(G^o);   g = tanh(G^g)
    c_t = f ⊙ c_{t−1} + i ⊙ g;          h_t = o ⊙ tanh(c_t)

Why a layer of our own: under ``torch.autocast("cpu", torch.bfloat16)`` ``nn.LSTM``
goes to oneDNN's bf16 RNN kernel, which measured *slower* than its fp32 kernel on
this CPU (forward + backward of one 1150-unit layer at T=70, B=20: 0.75 s vs 0.52 s,
1 thread), although a bf16 GEMM is ~4× faster than fp32 at the input-projection
shape. So :class:`AutocastLSTM` keeps ``nn.LSTM`` (and its fused fp32 kernel) for
everything else and, only when CPU bf16 autocast is on, computes

* the input projection of the whole window as one bf16 GEMM (autocast ``F.linear``),
* the recurrence step by step with the recurrent product ``h_{t−1} W_hhᵀ`` in bf16
  (fp32 accumulation) and the gate nonlinearities and the cell state in fp32,
* the backward analytically (:class:`_LstmRecurrence`), with ``∂W_hh`` as one GEMM
  over the window and the per-step ``∂h_{t−1} = ∂G_t W_hh`` in bf16.

The parameters, their names and the state dict are those of ``nn.LSTM``, so
:class:`~awd_plugins.modules.WeightDrop` (which substitutes ``weight_hh_l0``) and
checkpoints work unchanged, and fp32 runs are bit-identical to ``nn.LSTM``. On CUDA it is
``nn.LSTM`` (cuDNN), run in fp32 under ``--gpu-bf16`` (:func:`~awd_plugins.autocast.fused_rnn_outside_bf16`).
"""

import torch
import torch.nn.functional as F
from torch import nn

from awd_plugins.autocast import cpu_bf16_autocast_active, fused_rnn_outside_bf16


class _LstmRecurrence(torch.autograd.Function):
    """The recurrence from precomputed input gates ``xg`` (T×B×4H, fp32, biases included).

    Returns all ``h`` (T×B×H), the last ``c`` (B×H). Backward (per step, reversed):
    ∂c_t += ∂h_t ⊙ o ⊙ (1 − tanh² c_t);  ∂G = [∂c ⊙ g ⊙ i(1−i), ∂c ⊙ c_{t−1} ⊙ f(1−f),
    ∂c ⊙ i ⊙ (1−g²), ∂h ⊙ tanh c_t ⊙ o(1−o)];  ∂h_{t−1} = ∂G W_hh;  ∂c_{t−1} = ∂c ⊙ f.
    """

    @staticmethod
    def forward(ctx, xg, w_hh, h0, c0):
        T, B, H4 = xg.shape
        H = H4 // 4
        w16 = w_hh.to(torch.bfloat16)  # 4H×H, cast once per window
        acts = torch.empty_like(xg)  # i f g o after their nonlinearities
        cs = xg.new_empty(T, B, H)
        hs = xg.new_empty(T, B, H)
        h, c = h0, c0
        for t in range(T):
            # bf16 product, added to the fp32 input gates by type promotion (no separate cast)
            gates = torch.add(xg[t], torch.mm(h.to(torch.bfloat16), w16.t()))
            a = acts[t]
            torch.sigmoid(gates, out=a)
            torch.tanh(gates[:, 2 * H : 3 * H], out=a[:, 2 * H : 3 * H])
            i, f, g, o = a.chunk(4, dim=1)
            c = torch.addcmul(f * c, i, g, out=cs[t])
            h = torch.mul(o, torch.tanh(c), out=hs[t])
        ctx.save_for_backward(w16, h0, c0, acts, cs, hs)
        return hs, cs[-1]

    @staticmethod
    def backward(ctx, grad_hs, grad_c_last):
        w16, h0, c0, acts, cs, hs = ctx.saved_tensors
        T, B, H = hs.shape
        dgates = torch.empty_like(acts)
        dh_rec = torch.zeros_like(h0)
        dc = torch.zeros_like(c0) if grad_c_last is None else grad_c_last.clone()
        grad_hs = torch.zeros_like(hs) if grad_hs is None else grad_hs
        for t in range(T - 1, -1, -1):
            i, f, g, o = acts[t].chunk(4, dim=1)
            tc = torch.tanh(cs[t])
            dh = grad_hs[t] + dh_rec
            # ∂c_t = ∂c (from t+1) + ∂h ⊙ o ⊙ (1 − tanh² c_t)
            dc = dc + dh * o * (1 - tc * tc)
            c_prev = cs[t - 1] if t > 0 else c0
            di, df, dg, do = dgates[t].chunk(4, dim=1)
            torch.mul(dc * g, i * (1 - i), out=di)
            torch.mul(dc * c_prev, f * (1 - f), out=df)
            torch.mul(dc * i, 1 - g * g, out=dg)
            torch.mul(dh * tc, o * (1 - o), out=do)
            dh_rec = torch.mm(dgates[t].to(torch.bfloat16), w16)  # bf16; promoted to fp32 where added
            dc = dc * f
        h_prev = torch.cat([h0.unsqueeze(0), hs[:-1]]).reshape(T * B, H)
        # ∂W_hh = Σ_t ∂G_tᵀ h_{t−1}: one GEMM over the window, in bf16 with fp32 output
        dw = torch.mm(dgates.reshape(T * B, -1).t().to(torch.bfloat16), h_prev.to(torch.bfloat16)).float()
        return dgates, dw, dh_rec.float(), dc


class AutocastLSTM(nn.LSTM):
    """``nn.LSTM(input_size, hidden_size)`` (one layer, time-major) with the bf16 path above."""

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__(input_size, hidden_size)

    def forward(self, x, hx=None):
        if x.is_cuda:  # cuDNN; in fp32 under --gpu-bf16 (awd_plugins/autocast.py says why)
            return fused_rnn_outside_bf16(super().forward, x, hx)
        if not (cpu_bf16_autocast_active(x) and x.dim() == 3):
            if x.device.type == "cpu" and not torch.is_grad_enabled() and not torch.is_inference_mode_enabled():
                return self._evaluate(x, hx)
            return super().forward(x, hx)
        T, B, _ = x.shape
        if hx is None:
            zeros = x.new_zeros(1, B, self.hidden_size, dtype=torch.float32)
            hx = (zeros, zeros)
        h0, c0 = (s.reshape(B, self.hidden_size).float() for s in hx)
        # one bf16 GEMM for the window's input projection (autocast), both biases added in fp32
        xg = F.linear(x, self.weight_ih_l0).float() + (self.bias_ih_l0 + self.bias_hh_l0)
        with torch.autocast("cpu", enabled=False):
            hs, c_last = _LstmRecurrence.apply(xg.contiguous(), self.weight_hh_l0, h0, c0)
        return hs, (hs[-1:], c_last.unsqueeze(0))

    # -- evaluation on the CPU: the faster of oneDNN's two fp32 kernels ------------------------
    def _evaluate(self, x, hx):
        """fp32 evaluation (no autograd) on the CPU through :data:`EVAL_KERNEL` (same numbers to ~1e-6)."""
        if EVAL_KERNEL == "inference":
            return super().forward(x, hx)
        with torch.enable_grad():  # the training kernel; the graph is dropped at once
            out, (h, c) = super().forward(x, hx)
        return out.detach(), (h.detach(), c.detach())


def default_eval_kernel() -> str:
    """Which of oneDNN's two fp32 LSTM kernels evaluation runs on this CPU.

    Under ``no_grad`` ``nn.LSTM`` runs oneDNN's inference kernel; with autograd on, its
    training kernel (what the reference's ``evaluate()`` runs). Which is faster depends on
    the CPU: the inference kernel measured 1.6× *slower* on an AMD Zen 4 with AVX-512
    (T=70, B=10, H=1150, 1 thread: 195 vs 126 ms) and 1.3–1.5× *faster* on a Zen 3 with
    AVX2 only (243–285 vs 417 ms). The choice follows the CPU capability torch dispatches
    to, so it is fixed for a machine: a choice by timing would let the last bits of
    evaluation losses (and so resumed runs) vary from run to run.
    """
    return "training" if torch.backends.cpu.get_cpu_capability().startswith("AVX512") else "inference"


#: "training" / "inference": the oneDNN kernel :meth:`AutocastLSTM._evaluate` runs (see :func:`default_eval_kernel`)
EVAL_KERNEL: str = default_eval_kernel()
