"""Simple Recurrent Unit (Lei et al. 2018; the 3.0 recurrence of Lei 2021, "When
Attention Meets Fast Recurrence", arXiv:2102.12459), REFERENCE §8.1.

A transform maps the layer input ``x`` to ``k`` matrices per step,
``U_t = [ũ_t, f̃_t, r̃_t (, x̃_t)]``; the element-wise recurrence is

    f_t = σ(f̃_t + v_f ⊙ c_{t−1} + b_f)
    r_t = σ(r̃_t + v_r ⊙ c_{t−1} + b_r)
    c_t = f_t ⊙ c_{t−1} + (1 − f_t) ⊙ ũ_t
    h_t = x'_t + (c_t − x'_t) ⊙ m ⊙ r_t

with ``x'_t`` the skip input (``x_t``, times ``√(1 + 2e^{b_highway})`` when
``rescale``, or ``x̃_t`` when the input width differs from ``d``), ``g`` the
identity, and ``m`` the variational dropout mask (B × d, shared over time, only
in training, never in the last layer). The last line is the reference kernel's
exact form (``sru/ops.py`` and the CUDA kernel): it equals
``r ⊙ m ⊙ c + (1 − m ⊙ r) ⊙ x'``, so a dropped unit passes ``x'`` unchanged. It
differs from the ``r ⊙ (m ⊙ c) + (1 − r) ⊙ x'`` written in REFERENCE §8.1 only
in training with dropout > 0; the kernel's form is what produced the published
numbers.

Weight layout (so published checkpoints load unchanged): the transform's output
feature ``j·k + m`` is matrix ``m`` of unit ``j`` (interleaved); ``weight_c`` is
``[v_f ; v_r]`` and ``bias`` ``[b_f ; b_r]``. Internally the transform weight is
viewed as ``k`` contiguous blocks (:func:`interleaved_linear`) so the recurrence
reads plain (T, B, d) slices.

Speed: :class:`SRURecurrence` is an autograd Function with a hand-derived
backward. Everything that does not depend on the previous step is computed for
all steps at once; only ``c_t`` (forward: an ``addcmul``, a ``sigmoid`` and a
``lerp`` per step) and ``∂L/∂c_t`` (backward: an ``add`` and an ``addcmul`` per
step, a linear recurrence) stay sequential, in TorchScript loops (no Python per
time step, no autograd graph per step). The same code runs on CUDA tensors (the
device check in :func:`sru_recurrence` only picks the loop implementation); it
launches a few small kernels per step, correct but not a fused kernel.
:func:`sru_recurrence_reference` is the plain per-step loop used by the tests
(defined in :mod:`awd_plugins.kernels.sru_recurrence`, beside the fused Triton
kernels that ``recurrence_impl="triton"`` runs).
"""

import math
import warnings
from typing import Callable, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from awd_plugins.autocast import cpu_bf16_autocast_active
from awd_plugins.kernels import sru_recurrence_reference, sru_recurrence_triton, use_triton

# -- the sequential parts --------------------------------------------------------------


def _forward_steps(u: Tensor, f_pre: Tensor, v_f: Tensor, c_all: Tensor) -> Tensor:
    # c_all[0] holds c_0; c_all[t + 1] = u_t + f_t · (c_t − u_t)
    for t in range(u.size(0)):
        f = torch.sigmoid(torch.addcmul(f_pre[t], v_f, c_all[t]))
        torch.lerp(u[t], c_all[t], f, out=c_all[t + 1])
    return c_all


def _backward_steps(a: Tensor, b: Tensor, dd: Tensor, gc: Tensor, gc_total: Tensor) -> Tensor:
    # gc_total[t] = ∂L/∂c_t (all paths); gc = ∂L/∂c_{t−1} through step t
    for t in range(a.size(0) - 1, -1, -1):
        torch.add(gc, a[t], out=gc_total[t])
        gc = torch.addcmul(b[t], gc_total[t], dd[t])
    return gc


_LOOPS: Optional[Tuple[Callable, Callable]] = None


def _loops() -> Tuple[Callable, Callable]:
    """The two step loops, scripted once (TorchScript removes the per-step Python cost)."""
    global _LOOPS
    if _LOOPS is None:
        try:
            with warnings.catch_warnings():
                # torch ≥ 2.9 marks torch.jit.script deprecated; it still compiles these loops
                warnings.simplefilter("ignore")
                _LOOPS = (torch.jit.script(_forward_steps), torch.jit.script(_backward_steps))
        except Exception:  # a torch without TorchScript: same loops, eagerly
            _LOOPS = (_forward_steps, _backward_steps)
    return _LOOPS


class SRURecurrence(torch.autograd.Function):
    """``h, c_T = SRURecurrence.apply(u, f̃, r̃, x', weight_c, bias, c_0, mask)``, all (T, B, d) but
    ``weight_c``/``bias`` (2d), ``c_0`` (B, d) and ``mask`` (B, d or None)."""

    @staticmethod
    def forward(ctx, u, fr, rr, xs, weight_c, bias, c0, mask):
        d = u.size(-1)
        v_f, v_r = weight_c[:d], weight_c[d:]
        b_f, b_r = bias[:d], bias[d:]
        steps_fwd, _ = _loops()
        c_all = u.new_empty((u.size(0) + 1,) + tuple(u.shape[1:]))
        c_all[0].copy_(c0)
        steps_fwd(u, fr + b_f, v_f, c_all)
        c_prev, c = c_all[:-1], c_all[1:]
        r = torch.sigmoid(torch.addcmul(rr + b_r, v_r, c_prev))
        mr = r if mask is None else r * mask
        h = torch.addcmul(xs, c - xs, mr)
        ctx.save_for_backward(u, fr, rr, xs, weight_c, bias, mask, c_all)
        return h, c_all[-1].clone()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gh, gc_last):
        u, fr, rr, xs, weight_c, bias, mask, c_all = ctx.saved_tensors
        d = u.size(-1)
        v_f, v_r = weight_c[:d], weight_c[d:]
        b_f, b_r = bias[:d], bias[d:]
        c_prev, c = c_all[:-1], c_all[1:]
        f = torch.sigmoid(torch.addcmul(fr + b_f, v_f, c_prev))
        r = torch.sigmoid(torch.addcmul(rr + b_r, v_r, c_prev))
        mr = r if mask is None else r * mask
        # ∂h_t/∂c_t = m r_t; the r-gate path; the f-gate path (k = (c_{t−1} − u_t) f (1 − f))
        a = gh * mr
        g_r = gh * (c - xs) * mr * (1 - r)
        k = (c_prev - u) * f * (1 - f)
        _, steps_bwd = _loops()
        gc_total = torch.empty_like(a)
        gc0 = steps_bwd(a, g_r * v_r, torch.addcmul(f, v_f, k), gc_last.clone(), gc_total)
        g_f = gc_total * k
        g_u = gc_total * (1 - f)
        g_xs = gh - a
        g_weight_c = torch.cat([(g_f * c_prev).sum((0, 1)), (g_r * c_prev).sum((0, 1))])
        g_bias = torch.cat([g_f.sum((0, 1)), g_r.sum((0, 1))])
        return g_u, g_f, g_r, g_xs, g_weight_c, g_bias, gc0, None


def sru_recurrence(u: Tensor, fr: Tensor, rr: Tensor, xs: Tensor, weight_c: Tensor, bias: Tensor,
                   c0: Optional[Tensor] = None, mask: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
    """The SRU element-wise recurrence (module docstring), returns ``(h (T,B,d), c_T (B,d))``.

    Runs in ``u``'s dtype (the reference's ``amp_recurrence_fp16``): the other
    inputs are cast to it.
    """
    if c0 is None:
        c0 = u.new_zeros(u.shape[1:])
    dtype = u.dtype
    cast = [t if t is None or t.dtype == dtype else t.to(dtype) for t in (xs, weight_c, bias, c0, mask)]
    if u.device.type in ("cpu", "cuda") and not torch.jit.is_tracing():
        # the inputs are in u's dtype already; autocast would re-cast the ops of the step loops
        # (σ in fp32, lerp in bf16: a dtype error under CPU bf16 autocast)
        with torch.autocast(u.device.type, enabled=False):
            return SRURecurrence.apply(u, fr, rr, *cast)
    # export (awd_plugins.inference traces the model) and other devices: the reference loop
    return sru_recurrence_reference(u, fr, rr, *cast)


# -- layer ------------------------------------------------------------------------------


def interleaved_linear(x: Tensor, weight: Tensor, k: int) -> Tensor:
    """``x @ weight.T`` for a weight in the reference's interleaved layout (row ``j·k + m``),
    returned as (..., k, d) blocks. The weight, not the activation, is permuted."""
    d = weight.size(0) // k
    blocks = weight.view(d, k, weight.size(1)).transpose(0, 1).reshape(k * d, weight.size(1))
    return F.linear(x, blocks).unflatten(-1, (k, d))


def dropout_mask(like: Tensor, shape, p: float) -> Tensor:
    """Bernoulli(1 − p)/(1 − p) mask (inverted dropout)."""
    return like.new_empty(shape).bernoulli_(1 - p).div_(1 - p)


class SRULayer(nn.Module):
    """One SRU layer (3.0.0.dev6 ``SRUCell``, REFERENCE §8.1).

    ``transform_module`` defaults to ``Linear(input_size, k·d, bias=False)`` (or two
    factorised linears when ``projection_size`` > 0); any other module must return
    U as (T, B, k, d) blocks and may take the keyword arguments passed to
    :meth:`forward` (SRU++ passes ``memory`` and ``attn_mask``).
    """

    def __init__(self, input_size: int, hidden_size: int, dropout: float = 0.0, highway_bias: float = 0.0,
                 projection_size: int = 0, rescale: bool = False, weight_c_init: float = 1.0,
                 transform_module: Optional[nn.Module] = None, recurrence_impl: str = "auto"):
        super().__init__()
        self.recurrence_impl = recurrence_impl  # "torch" | "triton" | "auto": awd_plugins.kernels.dispatch
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.dropout = float(dropout)
        self.highway_bias = highway_bias
        self.rescale = rescale
        self.weight_c_init = weight_c_init
        self.num_matrices = 3 if input_size == hidden_size else 4
        out = hidden_size * self.num_matrices
        if transform_module is None:
            if projection_size > 0:
                transform_module = nn.Sequential(
                    nn.Linear(input_size, projection_size, bias=False), nn.Linear(projection_size, out, bias=False)
                )
            else:
                transform_module = nn.Linear(input_size, out, bias=False)
        self.transform_module = transform_module
        self.weight_c = nn.Parameter(torch.empty(2 * hidden_size))
        self.bias = nn.Parameter(torch.empty(2 * hidden_size))
        self.register_buffer("scale_x", torch.ones(1))
        self.reset_parameters()

    def reset_parameters(self):
        """3.0.0.dev6 init: b = [0 ; highway_bias], v ~ U(±weight_c_init), transform Xavier."""
        d = self.hidden_size
        with torch.no_grad():
            self.bias.zero_()
            self.bias[d:].fill_(self.highway_bias)
            self.scale_x.fill_(math.sqrt(1 + 2 * math.exp(self.highway_bias)) if self.rescale else 1.0)
            self.weight_c.uniform_(-self.weight_c_init, self.weight_c_init)
        t = self.transform_module
        for m in t if isinstance(t, nn.Sequential) else [t]:
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
            else:
                m.reset_parameters()  # SRU++ transforms (their own scaled init)

    def compute_u(self, x: Tensor, **kwargs) -> Tensor:
        t = self.transform_module
        k = self.num_matrices
        if isinstance(t, nn.Linear):
            return interleaved_linear(x, t.weight, k)
        if isinstance(t, nn.Sequential):
            return interleaved_linear(t[0](x), t[1].weight, k)
        return t(x, **kwargs)

    def forward(self, x: Tensor, c0: Optional[Tensor] = None, **kwargs) -> Tuple[Tensor, Tensor]:
        """``x`` (T, B, input_size) → ``h`` (T, B, d), ``c_T`` (B, d)."""
        mask = None
        if self.training and self.dropout > 0:
            # drawn before the transform's dropouts, in the reference's order (same seed, same masks)
            mask = dropout_mask(x, (x.size(1), self.hidden_size), self.dropout)
        U = self.compute_u(x, **kwargs)
        if cpu_bf16_autocast_active(x):  # --cpu-bf16: the transform in bf16, the recurrence in fp32
            U = U.float()
        if self.num_matrices == 4:
            xs = U[..., 3, :]
        else:
            xs = x * self.scale_x if self.rescale else x
        args = (U[..., 0, :], U[..., 1, :], U[..., 2, :], xs, self.weight_c, self.bias, c0, mask)
        out = sru_recurrence_triton(*args) if use_triton(self.recurrence_impl, U) else None
        return out if out is not None else sru_recurrence(*args)  # None: torch code (or a failed compile, warned)

    def extra_repr(self):
        return f"{self.input_size}, {self.hidden_size}, dropout={self.dropout}, highway_bias={self.highway_bias}"


class SRU(nn.Module):
    """Stack of :class:`SRULayer` (3.0.0.dev6 ``SRU``): recurrence dropout on all but the last
    layer; returns ``(h of the last layer, c stacked over layers (L, B, d))``."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 2, dropout: float = 0.0,
                 highway_bias: float = 0.0, projection_size: int = 0, rescale: bool = False,
                 weight_c_init: float = 1.0, recurrence_impl: str = "auto"):
        super().__init__()
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.rnn_lst = nn.ModuleList(
            SRULayer(input_size if i == 0 else hidden_size, hidden_size,
                     dropout=dropout if i + 1 < num_layers else 0.0, highway_bias=highway_bias,
                     projection_size=projection_size, rescale=rescale, weight_c_init=weight_c_init,
                     recurrence_impl=recurrence_impl)
            for i in range(num_layers)
        )

    def forward(self, x: Tensor, c0: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        cs = []
        for i, layer in enumerate(self.rnn_lst):
            x, c = layer(x, None if c0 is None else c0[i])
            cs.append(c)
        return x, torch.stack(cs)
