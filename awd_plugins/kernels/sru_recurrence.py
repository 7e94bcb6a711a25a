"""The SRU / SRU++ element-wise recurrence (Lei 2021, arXiv:2102.12459; REFERENCE §8.1)
as a fused Triton kernel pair (:mod:`.sru_kernels`, equations there) and, beside
it, the plain torch loop with the same signature that defines what the kernels
must compute.

Signature of both: ``(u, fr, rr, xs, weight_c, bias, c0=None, mask=None,
pad_mask=None) → (h (T,B,d), c_T (B,d))`` with ``u``, ``fr`` (f̃), ``rr`` (r̃),
``xs`` (the skip input x') all (T, B, d), ``weight_c = [v_f ; v_r]`` and ``bias =
[b_f ; b_r]`` (2d), ``c0`` (B, d, zeros if None), ``mask`` the dropout mask on
``c`` (B, d, shared over time) and ``pad_mask`` (T, B, bool, True = padding: the
step keeps ``c``, outputs ``h = 0`` and receives no gradient).
"""

from typing import Optional, Tuple

import torch
from torch import Tensor

from awd_plugins.kernels import dispatch
from awd_plugins.kernels.forget_mult import KERNEL_DTYPES


def sru_recurrence_reference(u, fr, rr, xs, weight_c, bias, c0=None, mask=None, pad_mask=None):
    """Plain per-step loop of the equations (REFERENCE §8.1; the reference's naive CPU path), autograd
    through every step."""
    d = u.size(-1)
    v_f, v_r = weight_c[:d], weight_c[d:]
    b_f, b_r = bias[:d], bias[d:]
    c = u.new_zeros(u.shape[1:]) if c0 is None else c0
    m = 1.0 if mask is None else mask
    hs = []
    for t in range(u.size(0)):
        f = torch.sigmoid(fr[t] + v_f * c + b_f)
        r = torch.sigmoid(rr[t] + v_r * c + b_r)
        c_new = f * c + (1 - f) * u[t]
        h = xs[t] + (c_new - xs[t]) * m * r
        if pad_mask is not None:
            pad = pad_mask[t].unsqueeze(-1)  # (B, 1)
            c_new = torch.where(pad, c, c_new)
            h = torch.where(pad, torch.zeros_like(h), h)
        c = c_new
        hs.append(h)
    return torch.stack(hs), c


def _kernels():
    from awd_plugins.kernels import sru_kernels

    return sru_kernels


def _strides(*tensors):
    out = []
    for t in tensors:
        out += [t.stride(0), t.stride(1)]
    return out


class SRURecurrenceTriton(torch.autograd.Function):
    """Forward and backward each one kernel launch (:mod:`.sru_kernels`)."""

    @staticmethod
    def forward(ctx, u, fr, rr, xs, weight_c, bias, c0, mask, pad_mask, block):
        T, B, D = u.shape
        N = B * D
        c_all = u.new_empty((T + 1, B, D), dtype=torch.float32)  # fp32 states, row 0 = c0
        c_all[0].copy_(c0)
        h = u.new_empty((T, B, D))
        bs = dispatch.block_size(N, u, block)
        pad = pad_mask.view(torch.uint8) if pad_mask is not None else weight_c  # dummy pointer when absent
        dispatch.launch(
            _kernels().sru_forward_kernel, ((N + bs - 1) // bs,),
            u, fr, rr, xs, weight_c, bias, mask if mask is not None else weight_c, pad, c_all, h,
            T, B, D, *_strides(u, fr, rr, xs),
            HAS_MASK=mask is not None, HAS_PAD=pad_mask is not None, BLOCK=bs,
        )
        ctx.block = bs
        ctx.has_mask, ctx.has_pad = mask is not None, pad_mask is not None
        ctx.c0_dtype = c0.dtype
        ctx.save_for_backward(u, fr, rr, xs, weight_c, bias, mask, pad_mask, c_all)
        return h, c_all[-1].to(u.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gh, gc_last):
        u, fr, rr, xs, weight_c, bias, mask, pad_mask, c_all = ctx.saved_tensors
        T, B, D = u.shape
        N = B * D
        gh = torch.zeros_like(u) if gh is None else gh.contiguous()
        gc_last = torch.zeros_like(u[0]) if gc_last is None else gc_last.contiguous()
        g_u, g_f, g_r = (torch.empty((T, B, D), dtype=t.dtype, device=t.device) for t in (u, fr, rr))
        g_x = torch.empty((T, B, D), dtype=xs.dtype, device=xs.device)
        g_param = u.new_empty((4, B, D), dtype=torch.float32)  # per-column sums: v_f, v_r, b_f, b_r
        g_c0 = u.new_empty((B, D), dtype=ctx.c0_dtype)
        bs = ctx.block
        pad = pad_mask.view(torch.uint8) if pad_mask is not None else weight_c
        try:
            dispatch.launch(
                _kernels().sru_backward_kernel, ((N + bs - 1) // bs,),
                u, fr, rr, xs, weight_c, bias, mask if mask is not None else weight_c, pad, c_all, gh, gc_last,
                g_u, g_f, g_r, g_x, g_param, g_c0,
                T, B, D, *_strides(u, fr, rr, xs),
                HAS_MASK=ctx.has_mask, HAS_PAD=ctx.has_pad, BLOCK=bs,
            )
        except dispatch.KernelUnavailable:
            # already warned; the same gradients through the reference loop (recomputed with autograd)
            return (*_reference_grads(u, fr, rr, xs, weight_c, bias, c_all[0].to(ctx.c0_dtype), mask, pad_mask,
                                      gh, gc_last), None, None, None)
        sums = g_param.sum(1)  # (4, D)
        g_weight_c = sums[:2].reshape(-1).to(weight_c.dtype)
        g_bias = sums[2:].reshape(-1).to(bias.dtype)
        return g_u, g_f, g_r, g_x, g_weight_c, g_bias, g_c0, None, None, None


def _reference_grads(u, fr, rr, xs, weight_c, bias, c0, mask, pad_mask, gh, gc_last):
    inputs = [t.detach().requires_grad_() for t in (u, fr, rr, xs, weight_c, bias, c0)]
    with torch.enable_grad():
        h, c = sru_recurrence_reference(*inputs, mask=mask, pad_mask=pad_mask)
        return torch.autograd.grad((h, c), inputs, (gh, gc_last), allow_unused=True)


def sru_recurrence_triton(u: Tensor, fr: Tensor, rr: Tensor, xs: Tensor, weight_c: Tensor, bias: Tensor,
                          c0: Optional[Tensor] = None, mask: Optional[Tensor] = None,
                          pad_mask: Optional[Tensor] = None, block: Optional[int] = None
                          ) -> Optional[Tuple[Tensor, Tensor]]:
    """The fused kernels; ``None`` when they cannot run (a failed compile, already warned about:
    the caller then uses the torch code), and for float64 inputs (the kernels compute in fp32).
    ``block``: columns per program (tests)."""
    T, B, D = u.shape
    if T == 0 or max(t.numel() for t in (u, fr, rr, xs)) >= 2**31 or u.dtype not in KERNEL_DTYPES:
        return None  # nothing to do / beyond the kernels' 32-bit offsets / float64: the torch code
    for name, t in (("fr", fr), ("rr", rr), ("xs", xs)):
        if t.shape != u.shape:
            raise ValueError(f"SRU recurrence: {name} has shape {tuple(t.shape)}, u {tuple(u.shape)}")
    # strided views are read in place; only the unit (d) stride must be 1
    u, fr, rr, xs = (t if t.stride(-1) == 1 else t.contiguous() for t in (u, fr, rr, xs))
    c0 = u.new_zeros((B, D)) if c0 is None else c0.reshape(B, D).contiguous()
    mask = None if mask is None else mask.reshape(B, D).contiguous()
    if pad_mask is not None:
        if pad_mask.shape != (T, B):
            raise ValueError(f"SRU recurrence: pad_mask must be (T, B) = {(T, B)}, got {tuple(pad_mask.shape)}")
        pad_mask = pad_mask.to(torch.bool).contiguous()
    try:
        return SRURecurrenceTriton.apply(u, fr, rr, xs, weight_c.contiguous(), bias.contiguous(), c0, mask,
                                         pad_mask, block)
    except dispatch.KernelUnavailable:
        return None
