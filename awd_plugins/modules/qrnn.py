"""Quasi-recurrent layer (Bradbury, Merity, Xiong & Socher 2016, "Quasi-Recurrent
Neural Networks", arXiv:1611.01576), as in salesforce/pytorch-qrnn and used by
AWD-QRNN (Merity et al. 2017), REFERENCE §6.1 and §6.2.

For a time-major input ``X`` (T×B×D) and window ``k`` ∈ {1, 2}:

    S_t = X_t                        (k = 1)
    S_t = [X_t ; X_{t−1}]            (k = 2: current first, X_{−1} = prev_x or 0)
    Z | F | O = W S_t + b            (one linear map, contiguous blocks in that order)
    Z = tanh Z,  F = σ F,  O = σ O
    c_t = F_t ⊙ Z_t + (1 − F_t) ⊙ c_{t−1}            ("forget-mult", fo-pooling)
    h_t = O_t ⊙ c_t   (output gate)   or   h_t = c_t

The layer returns ``(h_{0..T−1}, c_{T−1})``: the carried state is ``c``, not ``h``.
The reference keeps the window-2 ``prevX`` on the module; here it is part of the
recurrent state the caller carries (see :meth:`QRNNLayer.next_prev_x`), so it is
reset, reordered and detached together with ``c``.

Forget-mult implementations (both match a plain sequential autograd loop to ~4e-6 in
fp32, forward and backward; ``tests/test_qrnn.py``, ``bench/bench_qrnn.py``):

* ``"loop"`` (CPU default): a custom autograd function. Forward is one fused ``lerp``
  per step into a preallocated output; backward is the analytic reverse recurrence of
  REFERENCE §6.1 done step by step on B×H slices. Measured forward+backward at T=70,
  B=20, H=1550 on the shared 2-core box: 35 ms (2 threads) / 9.5 ms (1 thread), against
  49 / 18 ms for a naive autograd loop over ``unbind`` and ~3.4 s for the reference's
  ``CPUForgetMult``-style loop (each ``X[t]`` backward scatters into a full zero
  tensor). Rejected: a chunked scan (~2× slower), ``torch.jit.script`` (deprecated in
  this torch, no faster), ``torch.compile`` (~2 minutes of compilation per distinct
  sequence length, and AWD's BPTT length changes every batch).
* ``"scan"`` (CUDA default): the same function on a log-depth (Hillis–Steele) scan of
  the affine maps ``c ↦ (1 − F_t) c + F_t Z_t``, forward and (reversed) backward, in
  plain torch ops: no CuPy/NVRTC, no compilation, ⌈log2 T⌉ launches instead of T,
  which matters on a GPU and for long evaluation windows (``--bptt 5000`` for the
  pointer). It does O(T log T) work, so it is 10-20× slower than ``loop`` on the CPU;
  being device-agnostic, the CPU tests check it against the same references.
"""

from typing import Optional

import torch
from torch import nn

from awd_plugins.autocast import cpu_bf16_autocast_active
from awd_plugins.kernels import forget_mult_triton, use_triton

from .weight_drop import WeightDrop

FORGET_MULT_IMPLS = ("auto", "loop", "scan")


# -- sequential recurrence (CPU) -------------------------------------------------------
def _loop_forward(f: torch.Tensor, z: torch.Tensor, c0: torch.Tensor) -> torch.Tensor:
    c = torch.empty_like(z)
    prev = c0
    for t in range(z.size(0)):
        # lerp(c, z, f) = c + f (z − c) = f z + (1 − f) c in one kernel; exact at f ∈ {0, 1}.
        prev = torch.lerp(prev, z[t], f[t], out=c[t])
    return c


def _loop_backward(f, z, c0, c, grad_c):
    # Everything per step on B×H slices: the slices stay in cache and stay below ATen's
    # parallel grain size, which measured faster than whole-tensor passes on 1 and 2 threads.
    T = grad_c.size(0)
    df, dz = torch.empty_like(grad_c), torch.empty_like(grad_c)
    G, G_next = torch.empty_like(grad_c[0]), torch.empty_like(grad_c[0])
    for t in range(T - 1, -1, -1):
        if t == T - 1:
            G.copy_(grad_c[t])
        else:
            # G_t = ∂c_t + (1 − F_{t+1}) G_{t+1}
            torch.addcmul(grad_c[t], f[t + 1], G_next, value=-1, out=G).add_(G_next)
        torch.mul(f[t], G, out=dz[t])
        torch.sub(z[t], c[t - 1] if t > 0 else c0, out=df[t]).mul_(G)
        G, G_next = G_next, G
    return df, dz, G_next - f[0] * G_next


def _traceable_forward(f: torch.Tensor, z: torch.Tensor, c0: torch.Tensor) -> torch.Tensor:
    # the same recurrence without out= writes, which tracing for ONNX does not follow
    cells, prev = [], c0
    for t in range(z.size(0)):
        prev = prev + f[t] * (z[t] - prev)
        cells.append(prev)
    return torch.stack(cells)


# -- log-depth scan (CUDA, any device) --------------------------------------------------
def _affine_scan(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Inclusive scan of h_t = a_t h_{t−1} + b_t with h_{−1} = 0 (Hillis–Steele).

    After the level with stride s, (a_t, b_t) is the composite map of the steps
    t−2s+1 … t; no division, so saturated gates (a = 0) are exact.
    """
    T, s = b.size(0), 1
    while s < T:
        b = torch.cat([b[:s], torch.addcmul(b[s:], a[s:], b[:-s])])
        if 2 * s < T:
            a = torch.cat([a[:s], a[s:] * a[:-s]])
        s *= 2
    return b


def _scan_forward(f, z, c0):
    a = 1 - f
    b = f * z
    b[0].addcmul_(a[0], c0)
    return _affine_scan(a, b)


def _scan_backward(f, z, c0, c, grad_c):
    a = 1 - f
    a_next = torch.cat([a[1:], a[:1]])  # a_next[T−1] is never used: nothing follows the last step
    G = _affine_scan(a_next.flip(0), grad_c.flip(0)).flip(0)
    df = torch.empty_like(G)
    torch.sub(z[1:], c[:-1], out=df[1:])
    torch.sub(z[0], c0, out=df[0])
    return df.mul_(G), G * f, a[0] * G[0]


_IMPLS = {"loop": (_loop_forward, _loop_backward), "scan": (_scan_forward, _scan_backward)}


class _ForgetMult(torch.autograd.Function):
    """c_t = F_t Z_t + (1 − F_t) c_{t−1} with the analytic backward of REFERENCE §6.1:
    G_t = ∂c_t + (1 − F_{t+1}) G_{t+1};  ∂Z_t = F_t G_t;  ∂F_t = (Z_t − c_{t−1}) G_t;
    ∂c_{−1} = (1 − F_0) G_0."""

    @staticmethod
    def forward(ctx, f, z, c0, impl):
        forward, _ = _IMPLS[impl]
        c = forward(f, z, c0)
        ctx.impl = impl
        ctx.save_for_backward(f, z, c0, c)
        return c

    @staticmethod
    def backward(ctx, grad_c):
        _, backward = _IMPLS[ctx.impl]
        df, dz, dc0 = backward(*ctx.saved_tensors, grad_c)
        return df, dz, dc0, None


def forget_mult(
    f: torch.Tensor, z: torch.Tensor, c0: Optional[torch.Tensor] = None, impl: str = "auto"
) -> torch.Tensor:
    """All cell states ``c`` (T×B×H) of the QRNN recurrence from gates ``f``, ``z`` (T×B×H).

    ``c0``: the state before the first step, ``B×H`` or ``1×B×H`` (zeros if None).
    ``impl``: ``"loop"``, ``"scan"`` or ``"auto"`` (scan on CUDA, loop elsewhere).
    """
    if impl not in FORGET_MULT_IMPLS:
        raise ValueError(f"forget-mult implementation must be one of {FORGET_MULT_IMPLS}, got {impl!r}")
    if impl == "auto":
        impl = "scan" if f.is_cuda else "loop"
    if z.shape != f.shape or f.dim() != 3:
        raise ValueError(
            f"forget-mult needs F and Z of the same T×B×H shape, got {tuple(f.shape)} and {tuple(z.shape)}"
        )
    if c0 is None:
        c0 = f.new_zeros(f.shape[1:])
    else:
        c0 = c0.reshape(f.shape[1:])
    if torch.jit.is_tracing():  # export (awd_plugins.inference): plain out-of-place ops, no autograd Function
        return _traceable_forward(f, z, c0)
    return _ForgetMult.apply(f.contiguous(), z.contiguous(), c0.contiguous(), impl)


class QRNNLayer(nn.Module):
    """One QRNN layer (REFERENCE §6.1); ``forward(x, hidden, prev_x) → (h_all, c_last)``.

    The gate projection is one ``nn.Linear(window·input_size, gates·hidden_size)``
    (gates = 3 with the output gate, else 2; rows are Z | F | O), always wrapped in
    :class:`WeightDrop` on its ``weight`` (AWD-QRNN, REFERENCE §2.4/§6.2), so its
    keys are ``linear.module.weight`` / ``linear.module.bias``.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        window: int = 1,
        output_gate: bool = True,
        zoneout: float = 0.0,
        weight_drop: float = 0.0,
        forget_mult_impl: str = "auto",
        recurrence_impl: str = "auto",
    ):
        super().__init__()
        if window not in (1, 2):
            raise ValueError(f"QRNN window must be 1 or 2, got {window}")
        if not 0.0 <= zoneout < 1.0:
            raise ValueError(f"zoneout must be in [0, 1), got {zoneout}")
        if forget_mult_impl not in FORGET_MULT_IMPLS:
            raise ValueError(f"forget_mult_impl must be one of {FORGET_MULT_IMPLS}, got {forget_mult_impl!r}")
        self.input_size, self.hidden_size = input_size, hidden_size
        self.window, self.output_gate, self.zoneout = window, output_gate, zoneout
        self.forget_mult_impl = forget_mult_impl
        # "triton": the fused kernels of awd_plugins.kernels; "torch": forget_mult_impl above; "auto": see kernels.dispatch
        self.recurrence_impl = recurrence_impl
        gates = 3 if output_gate else 2
        self.linear = WeightDrop(nn.Linear(window * input_size, gates * hidden_size), ["weight"], weight_drop)

    def init_prev_x(self, bsz: int, like: torch.Tensor) -> torch.Tensor:
        """Zero ``prev_x`` state, ``1×B×D`` (window 2) or ``1×B×0`` (window 1: nothing to carry)."""
        return like.new_zeros(1, bsz, self.input_size if self.window == 2 else 0)

    def next_prev_x(self, x: torch.Tensor) -> torch.Tensor:
        """The ``prev_x`` to carry after input ``x``: its last step, detached as in the
        reference (no gradient into the previous window); empty for window 1."""
        if self.window == 1:
            return x.new_zeros(1, x.size(1), 0)
        return x[-1:].detach()

    def forward(self, x: torch.Tensor, hidden: Optional[torch.Tensor] = None, prev_x: Optional[torch.Tensor] = None):
        T, B, _ = x.shape
        if self.window == 2:
            if prev_x is None or prev_x.numel() == 0:
                first = x.new_zeros(1, B, self.input_size)
            else:
                first = prev_x.reshape(1, B, self.input_size)
            x = torch.cat([x, torch.cat([first, x[:-1]])], dim=2)
        gates = self.linear(x)  # T×B×(gates·H): the layer's one GEMM over the whole window
        if cpu_bf16_autocast_active(x):  # --cpu-bf16: that GEMM in bf16, gates and forget-mult in fp32
            gates = gates.float()
        gates = gates.chunk(3 if self.output_gate else 2, dim=2)
        z, f = torch.tanh(gates[0]), torch.sigmoid(gates[1])
        if self.zoneout > 0.0:
            if self.training:
                # Unscaled mask: a zoned-out unit has F = 0, i.e. keeps its previous c.
                f = f * torch.empty_like(f).bernoulli_(1.0 - self.zoneout)
            else:
                f = f * (1.0 - self.zoneout)
        c = forget_mult_triton(f, z, hidden) if use_triton(self.recurrence_impl, f) else None
        if c is None:  # torch code (or a kernel that could not compile: already warned)
            # under autocast the gates are fp16/bf16 while a carried state may be fp32: one dtype for the loops
            c = forget_mult(f, z, None if hidden is None else hidden.to(f.dtype), self.forget_mult_impl)
        h = torch.sigmoid(gates[2]) * c if self.output_gate else c
        return h, c[-1:]

    def extra_repr(self) -> str:
        return (
            f"{self.input_size}, {self.hidden_size}, window={self.window}, output_gate={self.output_gate}, "
            f"zoneout={self.zoneout}"
        )
