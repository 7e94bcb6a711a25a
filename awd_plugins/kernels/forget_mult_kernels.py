"""Triton kernels of the QRNN forget-mult (Bradbury et al. 2016, eq. 4, fo-pooling; REFERENCE §6.1).

Plain functions in ``triton.language``; :func:`awd_plugins.kernels.dispatch.kernel`
compiles them (CUDA) or interprets them (CPU, ``TRITON_INTERPRET=1``). One program
owns ``BLOCK`` of the N = B·H columns and walks the T steps of its columns; the
state lives in fp32 registers whatever the storage dtype (fp32, fp16, bf16).
Tensors are contiguous T×N (step t of column n at ``t·N + n``). The torch
reference of the same equations is :func:`awd_plugins.kernels.forget_mult.forget_mult_reference`.
"""

import triton.language as tl

# Only triton.language builtins below (no @triton.jit helpers such as tl.sigmoid or tl.zeros):
# those are compiled or interpreted according to TRITON_INTERPRET when triton is first imported,
# and the interpreter could not run them if triton was imported before the variable was set.


def forget_mult_forward_kernel(f_ptr, z_ptr, c0_ptr, c_ptr, T, N, BLOCK: tl.constexpr):
    # c_t = f_t z_t + (1 − f_t) c_{t−1} = c_{t−1} + f_t (z_t − c_{t−1}),  c_{−1} = c0
    cols = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    live = cols < N
    c = tl.load(c0_ptr + cols, mask=live, other=0.0).to(tl.float32)
    f_ptrs = f_ptr + cols
    z_ptrs = z_ptr + cols
    c_ptrs = c_ptr + cols
    for _ in range(T):
        f = tl.load(f_ptrs, mask=live, other=0.0).to(tl.float32)
        z = tl.load(z_ptrs, mask=live, other=0.0).to(tl.float32)
        c = c + f * (z - c)
        tl.store(c_ptrs, c.to(c_ptr.dtype.element_ty), mask=live)
        f_ptrs += N
        z_ptrs += N
        c_ptrs += N


def forget_mult_backward_kernel(f_ptr, z_ptr, c0_ptr, c_ptr, gc_ptr, df_ptr, dz_ptr, dc0_ptr, T, N,
                                BLOCK: tl.constexpr):
    # Reverse recurrence (REFERENCE §6.1), G_t = ∂L/∂c_t through all paths:
    #   G_t = ∂c_t + (1 − f_{t+1}) G_{t+1};  ∂z_t = f_t G_t;  ∂f_t = (z_t − c_{t−1}) G_t;  ∂c0 = (1 − f_0) G_0
    cols = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    live = cols < N
    G = tl.full([BLOCK], 0.0, tl.float32)
    keep_next = tl.full([BLOCK], 0.0, tl.float32)  # 1 − f_{t+1}; nothing follows the last step
    last = (T - 1) * N + cols
    f_ptrs = f_ptr + last
    z_ptrs = z_ptr + last
    c_prev_ptrs = c_ptr + last - N  # c_{t−1}; for t = 0 the load comes from c0 instead
    gc_ptrs = gc_ptr + last
    df_ptrs = df_ptr + last
    dz_ptrs = dz_ptr + last
    c0 = tl.load(c0_ptr + cols, mask=live, other=0.0).to(tl.float32)
    for i in range(T):
        t = T - 1 - i
        f = tl.load(f_ptrs, mask=live, other=0.0).to(tl.float32)
        z = tl.load(z_ptrs, mask=live, other=0.0).to(tl.float32)
        has_prev = (tl.full([BLOCK], 0, tl.int32) + t) > 0  # t as a vector: a mask both compiled and interpreted
        c_prev = tl.load(c_prev_ptrs, mask=live & has_prev, other=0.0).to(tl.float32)
        c_prev = tl.where(has_prev, c_prev, c0)
        G = tl.load(gc_ptrs, mask=live, other=0.0).to(tl.float32) + keep_next * G
        tl.store(dz_ptrs, (f * G).to(dz_ptr.dtype.element_ty), mask=live)
        tl.store(df_ptrs, ((z - c_prev) * G).to(df_ptr.dtype.element_ty), mask=live)
        keep_next = 1.0 - f
        f_ptrs -= N
        z_ptrs -= N
        c_prev_ptrs -= N
        gc_ptrs -= N
        df_ptrs -= N
        dz_ptrs -= N
    tl.store(dc0_ptr + cols, (keep_next * G).to(dc0_ptr.dtype.element_ty), mask=live)
