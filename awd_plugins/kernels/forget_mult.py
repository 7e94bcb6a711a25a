"""QRNN forget-mult, ``c_t = f_t ⊙ z_t + (1 − f_t) ⊙ c_{t−1}`` (Bradbury et al. 2016,
"Quasi-Recurrent Neural Networks", eq. 4; REFERENCE §6.1), as a fused Triton kernel
pair (:mod:`.forget_mult_kernels`) and, beside it, the plain torch loop with the
same signature that defines what the kernels must compute.

Both take gates ``f``, ``z`` (T×B×H) and an optional start state ``c0`` (B×H or
1×B×H, zeros if None) and return every ``c_t`` (T×B×H) in ``f``'s dtype. The
kernels keep the running state (and, backward, the running gradient) in fp32 for
fp32, fp16 and bf16 inputs; the backward reads ``c_{t−1}`` from the stored output
(the input dtype), as the reference's CUDA kernel does.
"""

from typing import Optional

import torch

from awd_plugins.kernels import dispatch


def forget_mult_reference(f: torch.Tensor, z: torch.Tensor, c0: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The sequential loop of eq. 4, autograd through every step (the definition the kernels are tested against)."""
    c = f.new_zeros(f.shape[1:]) if c0 is None else c0.reshape(f.shape[1:])
    cs = []
    for t in range(f.size(0)):
        c = f[t] * z[t] + (1 - f[t]) * c
        cs.append(c)
    return torch.stack(cs)


KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _kernels():
    from awd_plugins.kernels import forget_mult_kernels

    return forget_mult_kernels


class ForgetMultTriton(torch.autograd.Function):
    """Forward and backward each one kernel launch (:mod:`.forget_mult_kernels`)."""

    @staticmethod
    def forward(ctx, f, z, c0, block):
        T, N = f.size(0), f[0].numel()
        c = torch.empty_like(f)
        bs = dispatch.block_size(N, f, block)
        dispatch.launch(_kernels().forget_mult_forward_kernel, ((N + bs - 1) // bs,), f, z, c0, c, T, N, BLOCK=bs)
        ctx.block = bs
        ctx.save_for_backward(f, z, c0, c)
        return c

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_c):
        f, z, c0, c = ctx.saved_tensors
        grad_c = grad_c.contiguous()
        T, N = f.size(0), f[0].numel()
        df, dz, dc0 = torch.empty_like(f), torch.empty_like(z), torch.empty_like(c0)
        bs = ctx.block
        try:
            dispatch.launch(_kernels().forget_mult_backward_kernel, ((N + bs - 1) // bs,),
                            f, z, c0, c, grad_c, df, dz, dc0, T, N, BLOCK=bs)
        except dispatch.KernelUnavailable:
            # already warned; the same gradients by the torch implementation's analytic backward
            from awd_plugins.modules.qrnn import _loop_backward, _scan_backward

            return (*(_scan_backward if f.is_cuda else _loop_backward)(f, z, c0, c, grad_c), None)
        return df, dz, dc0, None


def forget_mult_triton(f: torch.Tensor, z: torch.Tensor, c0: Optional[torch.Tensor] = None,
                       block: Optional[int] = None) -> Optional[torch.Tensor]:
    """The fused kernels; ``None`` when they cannot run (a failed compile, already warned about:
    the caller then uses the torch code), and for float64 inputs (the kernels compute in fp32).
    ``block``: columns per program (tests)."""
    if z.shape != f.shape or f.dim() != 3:
        raise ValueError(f"forget-mult needs F and Z of the same T×B×H shape, got {tuple(f.shape)} and {tuple(z.shape)}")
    if f.size(0) == 0 or f.numel() >= 2**31 or f.dtype not in KERNEL_DTYPES:
        return None  # nothing to do / beyond the kernels' 32-bit offsets / float64: the torch code
    z = z.to(f.dtype)
    c0 = f.new_zeros(f.shape[1:]) if c0 is None else c0.reshape(f.shape[1:])
    try:
        c = ForgetMultTriton.apply(f.contiguous(), z.contiguous(), c0.contiguous(), block)
    except dispatch.KernelUnavailable:
        return None
    return c
