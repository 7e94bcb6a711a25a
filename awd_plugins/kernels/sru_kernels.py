"""Triton kernels of the SRU / SRU++ element-wise recurrence (Lei 2021, arXiv:2102.12459,
eqs. 1–3 with the 3.0 gates; REFERENCE §8.1), every term of the reference's fused
CUDA kernel (asappresearch/sru ``sru_cuda_kernel.cu``, the "simple" k = 3 path):

    f_t = σ(f̃_t + v_f ⊙ c_{t−1} + b_f)          forget gate, v and bias terms
    r_t = σ(r̃_t + v_r ⊙ c_{t−1} + b_r)          reset gate
    c_t = (c_{t−1} − u_t) ⊙ f_t + u_t
    h_t = (c_t − x'_t) ⊙ m ⊙ r_t + x'_t          highway/skip x', dropout mask m (B×d)

with carried ``c0`` and an optional padding mask (T×B): at a padded step ``c`` is
carried unchanged, ``h`` is 0 and nothing flows back into that step's inputs.

One program owns ``BLOCK`` of the N = B·d columns (column n = b·d + j) and walks
the T steps; state and gradients accumulate in fp32 for fp32/fp16/bf16 inputs.
``u``, ``f̃``, ``r̃``, ``x'`` may be strided views (time stride, batch stride,
unit stride 1), e.g. the blocks of the transform output (T, B, k, d), so they are
never copied. The forward stores every ``c_t`` in fp32 (T+1)×N (row 0 = c0) for
the backward. The torch reference is
:func:`awd_plugins.kernels.sru_recurrence.sru_recurrence_reference`.
"""

import triton.language as tl

# Only triton.language builtins below (no @triton.jit helpers such as tl.sigmoid or tl.zeros):
# those are compiled or interpreted according to TRITON_INTERPRET when triton is first imported,
# and the interpreter could not run them if triton was imported before the variable was set.



def sru_forward_kernel(u_ptr, fr_ptr, rr_ptr, x_ptr, wc_ptr, bias_ptr, mask_ptr, pad_ptr, c_ptr, h_ptr,
                       T, B, D, su_t, su_b, sf_t, sf_b, sr_t, sr_b, sx_t, sx_b,
                       HAS_MASK: tl.constexpr, HAS_PAD: tl.constexpr, BLOCK: tl.constexpr):
    N = B * D
    cols = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    live = cols < N
    b = cols // D
    j = cols % D
    v_f = tl.load(wc_ptr + j, mask=live, other=0.0).to(tl.float32)
    v_r = tl.load(wc_ptr + D + j, mask=live, other=0.0).to(tl.float32)
    b_f = tl.load(bias_ptr + j, mask=live, other=0.0).to(tl.float32)
    b_r = tl.load(bias_ptr + D + j, mask=live, other=0.0).to(tl.float32)
    if HAS_MASK:
        m = tl.load(mask_ptr + cols, mask=live, other=0.0).to(tl.float32)
    else:
        m = tl.full([BLOCK], 1.0, tl.float32)
    c = tl.load(c_ptr + cols, mask=live, other=0.0)  # row 0 = c0 (fp32)
    u_ptrs = u_ptr + b * su_b + j
    f_ptrs = fr_ptr + b * sf_b + j
    r_ptrs = rr_ptr + b * sr_b + j
    x_ptrs = x_ptr + b * sx_b + j
    c_ptrs = c_ptr + N + cols
    h_ptrs = h_ptr + cols
    pad_ptrs = pad_ptr + b
    for _ in range(T):
        u = tl.load(u_ptrs, mask=live, other=0.0).to(tl.float32)
        x = tl.load(x_ptrs, mask=live, other=0.0).to(tl.float32)
        f = 1.0 / (1.0 + tl.exp(-(tl.load(f_ptrs, mask=live, other=0.0).to(tl.float32) + v_f * c + b_f)))  # σ
        r = 1.0 / (1.0 + tl.exp(-(tl.load(r_ptrs, mask=live, other=0.0).to(tl.float32) + v_r * c + b_r)))  # σ
        c_new = (c - u) * f + u
        h = (c_new - x) * m * r + x
        if HAS_PAD:
            pad = tl.load(pad_ptrs, mask=live, other=0) != 0
            c_new = tl.where(pad, c, c_new)
            h = tl.where(pad, 0.0, h)
            pad_ptrs += B
        c = c_new
        tl.store(c_ptrs, c, mask=live)
        tl.store(h_ptrs, h.to(h_ptr.dtype.element_ty), mask=live)
        u_ptrs += su_t
        f_ptrs += sf_t
        r_ptrs += sr_t
        x_ptrs += sx_t
        c_ptrs += N
        h_ptrs += N


def sru_backward_kernel(u_ptr, fr_ptr, rr_ptr, x_ptr, wc_ptr, bias_ptr, mask_ptr, pad_ptr, c_ptr, gh_ptr,
                        gc_last_ptr, gu_ptr, gf_ptr, gr_ptr, gx_ptr, gparam_ptr, gc0_ptr,
                        T, B, D, su_t, su_b, sf_t, sf_b, sr_t, sr_b, sx_t, sx_b,
                        HAS_MASK: tl.constexpr, HAS_PAD: tl.constexpr, BLOCK: tl.constexpr):
    # Reverse pass; g = running ∂L/∂c_t from later steps (starts at ∂L/∂c_T):
    #   ∂r̃ = ∂h (c − x') m r(1 − r);   ∂c_t = ∂h m r + g;   ∂f̃ = ∂c_t (c_{t−1} − u) f(1 − f)
    #   ∂u = ∂c_t (1 − f);   ∂x' = ∂h (1 − m r);   g ← ∂c_t f + ∂f̃ v_f + ∂r̃ v_r
    # Per-column sums of ∂f̃ c_{t−1}, ∂r̃ c_{t−1}, ∂f̃, ∂r̃ go to gparam (4, N) fp32 (summed over b outside).
    # Gradient outputs are contiguous T×N.
    N = B * D
    cols = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    live = cols < N
    b = cols // D
    j = cols % D
    v_f = tl.load(wc_ptr + j, mask=live, other=0.0).to(tl.float32)
    v_r = tl.load(wc_ptr + D + j, mask=live, other=0.0).to(tl.float32)
    b_f = tl.load(bias_ptr + j, mask=live, other=0.0).to(tl.float32)
    b_r = tl.load(bias_ptr + D + j, mask=live, other=0.0).to(tl.float32)
    if HAS_MASK:
        m = tl.load(mask_ptr + cols, mask=live, other=0.0).to(tl.float32)
    else:
        m = tl.full([BLOCK], 1.0, tl.float32)
    g = tl.load(gc_last_ptr + cols, mask=live, other=0.0).to(tl.float32)
    g_vf = tl.full([BLOCK], 0.0, tl.float32)
    g_vr = tl.full([BLOCK], 0.0, tl.float32)
    g_bf = tl.full([BLOCK], 0.0, tl.float32)
    g_br = tl.full([BLOCK], 0.0, tl.float32)
    last = T - 1
    u_ptrs = u_ptr + last * su_t + b * su_b + j
    f_ptrs = fr_ptr + last * sf_t + b * sf_b + j
    r_ptrs = rr_ptr + last * sr_t + b * sr_b + j
    x_ptrs = x_ptr + last * sx_t + b * sx_b + j
    c_ptrs = c_ptr + last * N + cols  # c_{t−1}; c_t is one row further
    out = last * N + cols
    gh_ptrs = gh_ptr + out
    gu_ptrs = gu_ptr + out
    gf_ptrs = gf_ptr + out
    gr_ptrs = gr_ptr + out
    gx_ptrs = gx_ptr + out
    pad_ptrs = pad_ptr + last * B + b
    for _ in range(T):
        c_prev = tl.load(c_ptrs, mask=live, other=0.0)
        c = tl.load(c_ptrs + N, mask=live, other=0.0)
        u = tl.load(u_ptrs, mask=live, other=0.0).to(tl.float32)
        x = tl.load(x_ptrs, mask=live, other=0.0).to(tl.float32)
        gh = tl.load(gh_ptrs, mask=live, other=0.0).to(tl.float32)
        f = 1.0 / (1.0 + tl.exp(-(tl.load(f_ptrs, mask=live, other=0.0).to(tl.float32) + v_f * c_prev + b_f)))  # σ
        r = 1.0 / (1.0 + tl.exp(-(tl.load(r_ptrs, mask=live, other=0.0).to(tl.float32) + v_r * c_prev + b_r)))  # σ
        g_rpre = gh * (c - x) * m * r * (1.0 - r)
        g_c = gh * m * r + g
        g_fpre = g_c * (c_prev - u) * f * (1.0 - f)
        g_u = g_c * (1.0 - f)
        g_x = gh * (1.0 - m * r)
        g_new = g_c * f + g_fpre * v_f + g_rpre * v_r
        if HAS_PAD:
            pad = tl.load(pad_ptrs, mask=live, other=0) != 0
            g_rpre = tl.where(pad, 0.0, g_rpre)
            g_fpre = tl.where(pad, 0.0, g_fpre)
            g_u = tl.where(pad, 0.0, g_u)
            g_x = tl.where(pad, 0.0, g_x)
            g_new = tl.where(pad, g, g_new)
            pad_ptrs -= B
        g = g_new
        g_vf += g_fpre * c_prev
        g_vr += g_rpre * c_prev
        g_bf += g_fpre
        g_br += g_rpre
        tl.store(gu_ptrs, g_u.to(gu_ptr.dtype.element_ty), mask=live)
        tl.store(gf_ptrs, g_fpre.to(gf_ptr.dtype.element_ty), mask=live)
        tl.store(gr_ptrs, g_rpre.to(gr_ptr.dtype.element_ty), mask=live)
        tl.store(gx_ptrs, g_x.to(gx_ptr.dtype.element_ty), mask=live)
        u_ptrs -= su_t
        f_ptrs -= sf_t
        r_ptrs -= sr_t
        x_ptrs -= sx_t
        c_ptrs -= N
        gh_ptrs -= N
        gu_ptrs -= N
        gf_ptrs -= N
        gr_ptrs -= N
        gx_ptrs -= N
    tl.store(gparam_ptr + cols, g_vf, mask=live)
    tl.store(gparam_ptr + N + cols, g_vr, mask=live)
    tl.store(gparam_ptr + 2 * N + cols, g_bf, mask=live)
    tl.store(gparam_ptr + 3 * N + cols, g_br, mask=live)
    tl.store(gc0_ptr + cols, g.to(gc0_ptr.dtype.element_ty), mask=live)
