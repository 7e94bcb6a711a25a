"""The fused Triton recurrences (awd_plugins.kernels) on the CPU through Triton's interpreter
(TRITON_INTERPRET=1): forward and every gradient against the plain torch loops written
beside them (and, for the loops themselves, against the equations), on awkward sizes
(T = 1, odd T, B·H not a multiple of the block), with and without c0, the dropout mask
and the padding mask; fp16/bf16 inputs within stated tolerances; the dispatcher's
choices, errors and one-warning fallback; the layers and a tiny fairseq-train with
``--recurrence-impl triton`` equal to ``torch``.

Skipped as a whole when triton is not installed.
"""

import re

import pytest
import torch

pytest.importorskip("triton")

from awd_plugins.errors import AwdUserError  # noqa: E402
from awd_plugins.kernels import dispatch  # noqa: E402
from awd_plugins.kernels import (  # noqa: E402
    forget_mult_reference,
    forget_mult_triton,
    sru_recurrence_reference,
    sru_recurrence_triton,
    use_triton,
)
from awd_plugins.modules import QRNNLayer, SRULayer  # noqa: E402

# (T, B, H, block): T = 1, odd T, B·H = 15 and 26 not multiples of the block (4, 16), one
# program only (block 64 > B·H), several programs
SIZES = [(1, 2, 3, 4), (7, 3, 5, 4), (6, 2, 13, 16), (5, 1, 7, 64)]
# fp16 / bf16 inputs against the fp32 loop on the same (rounded) inputs, |Δ| ≤ atol + rtol·|ref|.
# The kernels keep the state in fp32, so the error is the rounding of the stored outputs
# (fp16 2^-11, bf16 2^-8 relative) plus, backward, of the stored intermediates.
LOW_PRECISION = {torch.float16: dict(atol=2e-3, rtol=2e-3), torch.bfloat16: dict(atol=2e-2, rtol=2e-2)}


@pytest.fixture(autouse=True)
def interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    dispatch.reset()
    yield
    dispatch.reset()


def grads(outputs, inputs, cotangents):
    return torch.autograd.grad(outputs, inputs, cotangents)


def assert_close(a, b, atol=1e-5, rtol=0.0, what=""):
    assert a.dtype == b.dtype and a.shape == b.shape, what
    torch.testing.assert_close(a, b, atol=atol, rtol=rtol, msg=lambda m: f"{what}: {m}")


# -- the reference loops are the equations -------------------------------------------------
def test_forget_mult_reference_is_eq4():
    torch.manual_seed(0)
    f, z, c0 = torch.rand(4, 2, 3), torch.randn(4, 2, 3), torch.randn(2, 3)
    c = forget_mult_reference(f, z, c0)
    prev = c0
    for t in range(4):
        prev = f[t] * z[t] + (1 - f[t]) * prev
        assert torch.equal(c[t], prev)


def test_sru_reference_padding_keeps_c_and_zeroes_h():
    torch.manual_seed(0)
    T, B, d = 4, 3, 2
    u, fr, rr, xs = (torch.randn(T, B, d) for _ in range(4))
    wc, bias, c0 = torch.randn(2 * d), torch.randn(2 * d), torch.randn(B, d)
    pad = torch.zeros(T, B, dtype=torch.bool)
    pad[1:, 2] = True  # stream 2 ends after its first step
    pad[2, 0] = True
    h, c = sru_recurrence_reference(u, fr, rr, xs, wc, bias, c0, pad_mask=pad)
    h_once, _ = sru_recurrence_reference(u[:1, 2:], fr[:1, 2:], rr[:1, 2:], xs[:1, 2:], wc, bias, c0[2:])
    assert torch.equal(h[1:, 2], torch.zeros(3, d)) and torch.equal(h[2, 0], torch.zeros(d))
    assert torch.equal(h[0, 2], h_once[0, 0])
    # the padded step 2 of stream 0 leaves c as step 1 left it: the unpadded run without step 2 agrees
    keep = [0, 1, 3]
    h_skip, c_skip = sru_recurrence_reference(u[keep, :1], fr[keep, :1], rr[keep, :1], xs[keep, :1], wc, bias, c0[:1])
    assert torch.allclose(h[keep, 0], h_skip[:, 0]) and torch.allclose(c[0], c_skip[0])
    # and no unpadded stream is affected
    h_free, _ = sru_recurrence_reference(u[:, 1:2], fr[:, 1:2], rr[:, 1:2], xs[:, 1:2], wc, bias, c0[1:2])
    assert torch.equal(h[:, 1], h_free[:, 0])


# -- forget-mult ----------------------------------------------------------------------------
def fm_inputs(T, B, H, dtype=torch.float32, with_c0=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    f = torch.rand(T, B, H, generator=g).to(dtype).requires_grad_()
    z = torch.randn(T, B, H, generator=g).tanh().to(dtype).requires_grad_()
    c0 = torch.randn(B, H, generator=g).to(dtype).requires_grad_() if with_c0 else None
    return f, z, c0


@pytest.mark.parametrize("T,B,H,block", SIZES)
@pytest.mark.parametrize("with_c0", [True, False])
def test_forget_mult_kernel_equals_loop_fp32(T, B, H, block, with_c0):
    f, z, c0 = fm_inputs(T, B, H, with_c0=with_c0)
    inputs = [t for t in (f, z, c0) if t is not None]
    c = forget_mult_triton(f, z, c0, block=block)
    ref = forget_mult_reference(f, z, c0)
    assert_close(c, ref, what="c")
    gc = torch.randn_like(ref)
    for got, want, name in zip(grads(c, inputs, gc), grads(ref, inputs, gc), ("f", "z", "c0")):
        assert_close(got, want, what=f"∂{name}")
    assert dispatch._state["failed"] is None


@pytest.mark.parametrize("dtype", list(LOW_PRECISION))
def test_forget_mult_kernel_low_precision(dtype):
    f, z, c0 = fm_inputs(9, 3, 7, dtype)
    c = forget_mult_triton(f, z, c0, block=8)
    assert c.dtype == dtype
    f32, z32, c032 = (t.detach().float().requires_grad_() for t in (f, z, c0))
    ref = forget_mult_reference(f32, z32, c032)
    tol = LOW_PRECISION[dtype]
    assert_close(c.float(), ref, what="c", **tol)
    gc = torch.randn_like(ref)
    for got, want in zip(grads(c, (f, z, c0), gc.to(dtype)), grads(ref, (f32, z32, c032), gc)):
        assert got.dtype == dtype
        assert_close(got.float(), want, what="grad", **tol)


def test_forget_mult_kernel_keeps_the_state_in_fp32():
    # 200 steps with f = 2^-12 in fp16: each update f·(z − c) moves c by less than half an fp16
    # ulp of c, so a state kept in fp16 never moves; the fp32 state does, as the fp32 loop
    T = 200
    f = torch.full((T, 1, 1), 2.0**-12, dtype=torch.float16)
    z = torch.ones(T, 1, 1, dtype=torch.float16)
    c0 = torch.full((1, 1), 0.5, dtype=torch.float16)
    c = forget_mult_triton(f, z, c0)
    ref = forget_mult_reference(f.float(), z.float(), c0.float())
    assert abs(c[-1].item() - ref[-1].item()) < 1e-3 and c[-1].item() > 0.51


# -- SRU recurrence -------------------------------------------------------------------------
def sru_inputs(T, B, d, k=3, dtype=torch.float32, with_c0=True, dropout=False, pad=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    U = torch.randn(T, B, k, d, generator=g).to(dtype).requires_grad_()  # the transform's output blocks
    x = torch.randn(T, B, d, generator=g).to(dtype).requires_grad_()
    wc = torch.randn(2 * d, generator=g).to(dtype).requires_grad_()
    bias = torch.randn(2 * d, generator=g).to(dtype).requires_grad_()
    c0 = torch.randn(B, d, generator=g).to(dtype).requires_grad_() if with_c0 else None
    mask = (torch.rand(B, d, generator=g) > 0.3).to(dtype) / 0.7 if dropout else None
    pad_mask = torch.rand(T, B, generator=g) < 0.3 if pad else None
    xs = U[..., 3, :] if k == 4 else x  # strided views, as SRULayer passes them
    args = (U[..., 0, :], U[..., 1, :], U[..., 2, :], xs, wc, bias, c0)
    leaves = [t for t in (U, x if k == 3 else None, wc, bias, c0) if t is not None]
    return args, dict(mask=mask, pad_mask=pad_mask), leaves


@pytest.mark.parametrize("T,B,d,block", SIZES)
@pytest.mark.parametrize("with_c0,dropout,pad,k", [
    (True, True, True, 3), (False, False, False, 3), (True, False, True, 4), (False, True, False, 4),
])
def test_sru_kernel_equals_loop_fp32(T, B, d, block, with_c0, dropout, pad, k):
    args, kw, leaves = sru_inputs(T, B, d, k, with_c0=with_c0, dropout=dropout, pad=pad)
    h, c = sru_recurrence_triton(*args, **kw, block=block)
    h_ref, c_ref = sru_recurrence_reference(*args, **kw)
    assert_close(h, h_ref, what="h")
    assert_close(c, c_ref, what="c_T")
    gh, gc = torch.randn_like(h_ref), torch.randn_like(c_ref)
    for i, (got, want) in enumerate(zip(grads((h, c), leaves, (gh, gc)), grads((h_ref, c_ref), leaves, (gh, gc)))):
        assert_close(got, want, what=f"grad of leaf {i}")
    assert dispatch._state["failed"] is None


def test_sru_kernel_gradient_of_h_only():
    # c_T unused: its incoming gradient is None, not a tensor
    args, kw, leaves = sru_inputs(5, 2, 3, dropout=True)
    h, _ = sru_recurrence_triton(*args, **kw, block=4)
    h_ref, _ = sru_recurrence_reference(*args, **kw)
    for got, want in zip(grads(h.sum(), leaves, None), grads(h_ref.sum(), leaves, None)):
        assert_close(got, want)


@pytest.mark.parametrize("dtype", list(LOW_PRECISION))
def test_sru_kernel_low_precision(dtype):
    args, kw, leaves = sru_inputs(9, 3, 5, dtype=dtype, dropout=True, pad=True)
    h, c = sru_recurrence_triton(*args, **kw, block=8)
    assert h.dtype == c.dtype == dtype
    leaves32 = [t.detach().float().requires_grad_() for t in leaves]
    U, x, wc, bias, c0 = leaves32
    args32 = (U[..., 0, :], U[..., 1, :], U[..., 2, :], x, wc, bias, c0)
    kw32 = dict(mask=kw["mask"].float(), pad_mask=kw["pad_mask"])
    h_ref, c_ref = sru_recurrence_reference(*args32, **kw32)
    tol = LOW_PRECISION[dtype]
    assert_close(h.float(), h_ref, what="h", **tol)
    assert_close(c.float(), c_ref, what="c", **tol)
    gh, gc = torch.randn_like(h_ref), torch.randn_like(c_ref)
    got = grads((h, c), leaves, (gh.to(dtype), gc.to(dtype)))
    want = grads((h_ref, c_ref), leaves32, (gh, gc))
    for name, a, b in zip(("U", "x", "v", "b", "c0"), got, want):
        assert a.dtype == dtype
        # v and b sum T·B terms: the tolerance grows with the size of the sum
        scale = 9 * 3 if name in ("v", "b") else 1
        assert_close(a.float(), b, what=name, atol=tol["atol"] * scale, rtol=tol["rtol"])


def test_float64_goes_to_the_torch_code():
    f, z, c0 = fm_inputs(3, 2, 2, torch.float64)
    assert forget_mult_triton(f, z, c0) is None
    args, kw, _ = sru_inputs(3, 2, 2, dtype=torch.float64)
    assert sru_recurrence_triton(*args, **kw) is None


# -- dispatch -------------------------------------------------------------------------------
def test_dispatch_choices_and_errors(monkeypatch):
    cpu = torch.zeros(1)
    assert not use_triton("torch", cpu)
    assert not use_triton("auto", cpu)  # auto: Triton only for CUDA tensors
    assert use_triton("triton", cpu)  # interpreter on
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(AwdUserError, match=r"runs on CUDA tensors.*TRITON_INTERPRET=1.*recurrence_impl"):
        use_triton("triton", cpu)
    with pytest.raises(AwdUserError, match="must be one of auto, torch, triton"):
        use_triton("cuda", cpu)
    monkeypatch.setattr(dispatch, "triton_importable", lambda: False)
    with pytest.raises(AwdUserError, match="needs the triton package"):
        use_triton("triton", cpu)
    assert not use_triton("auto", cpu)


def kernel_warnings(caplog):
    return [r.getMessage() for r in caplog.records if r.name == dispatch.__name__ and r.levelname == "WARNING"]


@pytest.mark.parametrize("make", [lambda: QRNNLayer(4, 5, window=2, recurrence_impl="triton"),
                                  lambda: SRULayer(4, 5, dropout=0.3, recurrence_impl="triton")])
def test_failed_compile_warns_once_and_falls_back(monkeypatch, caplog, make):
    def broken(fn, like):
        raise RuntimeError("ptxas not found\nmore detail")

    monkeypatch.setattr(dispatch, "kernel", broken)
    layer = make()
    x = torch.randn(6, 3, 4)
    torch.manual_seed(0)
    h, c = layer(x)
    assert kernel_warnings(caplog) == [
        "Triton recurrence kernel unavailable (RuntimeError: ptxas not found); "
        "falling back to --recurrence-impl torch for this run"
    ]
    layer.recurrence_impl = "torch"
    torch.manual_seed(0)
    h_ref, c_ref = layer(x)
    assert torch.equal(h, h_ref) and torch.equal(c, c_ref)
    layer.recurrence_impl = "triton"
    assert not use_triton("triton", x)  # from now on the torch code straight away, silently
    layer(x)
    assert len(kernel_warnings(caplog)) == 1


@pytest.mark.parametrize("which", ["forget_mult", "sru"])
def test_failed_backward_kernel_gives_the_same_gradients(monkeypatch, caplog, which):
    real = dispatch.kernel

    def backward_broken(fn, like):
        if "backward" in fn.__name__:
            raise RuntimeError("out of resources")
        return real(fn, like)

    monkeypatch.setattr(dispatch, "kernel", backward_broken)
    if which == "forget_mult":
        f, z, c0 = fm_inputs(5, 2, 3)
        leaves, out, ref = (f, z, c0), forget_mult_triton(f, z, c0), forget_mult_reference(f, z, c0)
        cot = torch.randn_like(ref)
    else:
        args, kw, leaves = sru_inputs(5, 2, 3, dropout=True, pad=True)
        out, ref = sru_recurrence_triton(*args, **kw), sru_recurrence_reference(*args, **kw)
        cot = tuple(torch.randn_like(r) for r in ref)
    got = grads(out, leaves, cot)
    assert len(kernel_warnings(caplog)) == 1 and "out of resources" in kernel_warnings(caplog)[0]
    for a, b in zip(got, grads(ref, leaves, cot)):
        assert_close(a, b)


# -- layers and models ----------------------------------------------------------------------
def test_qrnn_layer_triton_equals_torch():
    torch.manual_seed(0)
    layer = QRNNLayer(6, 7, window=2, weight_drop=0.0)
    x, c0, prev = torch.randn(5, 3, 6, requires_grad=True), torch.randn(1, 3, 7), torch.randn(1, 3, 6)
    outs = {}
    for impl in ("torch", "triton"):
        layer.recurrence_impl = impl
        h, c = layer(x, c0, prev)
        outs[impl] = (h, c, *torch.autograd.grad((h * h).sum() + c.sum(), [x, *layer.parameters()]))
    for a, b in zip(outs["torch"], outs["triton"]):
        assert_close(a, b)


def test_sru_layers_triton_equal_torch():
    from awd_plugins.modules.srupp import SRUpp

    torch.manual_seed(0)
    for make in (lambda: SRULayer(5, 6, dropout=0.2), lambda: SRULayer(6, 6, dropout=0.0, rescale=True),
                 lambda: SRUpp(6, 6, 4, num_layers=2, dropout=0.1, attn_dropout=0.0)):
        layer = make()
        x = torch.randn(4, 3, layer.rnn_lst[0].input_size if hasattr(layer, "rnn_lst") else layer.input_size,
                        requires_grad=True)
        outs = {}
        for impl in ("torch", "triton"):
            for m in layer.modules():
                if isinstance(m, SRULayer):
                    m.recurrence_impl = impl
            torch.manual_seed(1)  # same dropout masks for both
            out = layer(x)
            h, c = out[0], out[1]
            outs[impl] = (h, c, *torch.autograd.grad((h * h).sum() + c.sum(), [x, *layer.parameters()],
                                                      allow_unused=True))
        for a, b in zip(outs["torch"], outs["triton"]):
            if a is not None:
                assert_close(a, b)


def _losses(log):
    """Per-update training losses, then the validation loss."""
    return (re.findall(r"train_inner \| .* loss=([0-9.]+),", log)
            + re.findall(r"valid on 'valid' subset \| loss ([0-9.]+)", log))


TINY = {
    "awd_qrnn": ["--arch", "awd_qrnn", "--emsize", "12", "--nhid", "16", "--nlayers", "2",
                 "--criterion", "split_cross_entropy", "--optimizer", "nt_asgd", "--lr-scheduler", "nt_asgd",
                 "--lr", "30", "--clip-norm", "0.2"],
    "srupp": ["--arch", "srupp", "--n-d", "16", "--n-proj", "8", "--depth", "2", "--dropout", "0.1",
              "--attn-dropout", "0.1", "--criterion", "cross_entropy", "--optimizer", "radam_decoupled",
              "--lr", "3e-3", "--fixed-bptt", "--no-lr-rescale"],
}


@pytest.mark.parametrize("arch", list(TINY))
def test_fairseq_train_triton_equals_torch(arch, small_bin, run_cli, tmp_path):
    logs = {}
    for impl in ("torch", "triton"):
        logs[impl] = run_cli(
            "fairseq-train", small_bin, "--task", "awd_language_modeling", *TINY[arch], "--recurrence-impl", impl,
            "--batch-size", "4", "--bptt", "8", "--max-update", "3", "--log-interval", "1", "--seed", "1",
            "--cpu", "--log-format", "simple", "--num-workers", "0", "--eval-batch-size", "40",
            "--save-dir", str(tmp_path / impl), "--no-save", env={"TRITON_INTERPRET": "1"},
        ).stdout
    torch_losses, triton_losses = _losses(logs["torch"]), _losses(logs["triton"])
    assert len(torch_losses) >= 4, logs["torch"][-2000:]  # 3 updates + validation
    assert triton_losses == torch_losses, (torch_losses, triton_losses)
    assert "kernel unavailable" not in logs["triton"]  # the kernels ran: no fallback
    if arch == "awd_qrnn":
        # and the run went through them: without the interpreter a CPU run stops with one error line
        out = run_cli("fairseq-train", small_bin, "--task", "awd_language_modeling", *TINY[arch],
                      "--recurrence-impl", "triton", "--batch-size", "4", "--bptt", "8", "--max-update", "1",
                      "--cpu", "--num-workers", "0", "--no-save", expect_fail=True,
                      env={"TRITON_INTERPRET": "0"})
        assert out.returncode == 2
        assert "error: --recurrence-impl triton runs on CUDA tensors (this one is on cpu)" in out.stdout
        assert "Traceback" not in out.stdout


def test_sru_layer_under_cpu_bf16_autocast():
    # CPU bf16 autocast (--cpu-bf16): the transform's GEMM runs in bf16, its output U is cast back to
    # fp32 (awd_plugins.autocast), so the recurrence, h and c are fp32 in both implementations and every
    # gradient comes back in its input's dtype (bf16 inputs to the kernels: test_sru_kernel_low_precision above)
    torch.manual_seed(0)
    layer = SRULayer(6, 6, dropout=0.2)
    x, c0 = torch.randn(5, 3, 6, requires_grad=True), torch.randn(3, 6, requires_grad=True)
    outs = {}
    for impl in ("torch", "triton"):
        layer.recurrence_impl = impl
        torch.manual_seed(1)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            h, c = layer(x, c0)
        assert h.dtype == c.dtype == torch.float32
        grads_ = torch.autograd.grad(h.float().pow(2).sum() + c.float().sum(), [x, c0, layer.weight_c, layer.bias])
        assert [g.dtype for g in grads_] == [torch.float32] * 4
        outs[impl] = (h.float(), c.float(), *grads_)
    for a, b in zip(outs["torch"], outs["triton"]):
        # the torch code rounds x, c0, v, b to bf16 first (the reference's amp_recurrence_fp16); the kernel does not
        torch.testing.assert_close(a, b, atol=5e-2, rtol=5e-2)


def test_qrnn_layer_under_bf16_autocast():
    # CPU bf16 autocast (--cpu-bf16): the gates' GEMM in bf16, cast back to fp32 for the forget-mult, so
    # both implementations run in fp32 and agree within the GEMM's bf16 rounding
    torch.manual_seed(0)
    layer = QRNNLayer(4, 5, window=2)
    x, c0 = torch.randn(6, 2, 4, requires_grad=True), torch.randn(1, 2, 5, requires_grad=True)
    outs = {}
    for impl in ("torch", "triton"):
        layer.recurrence_impl = impl
        with torch.autocast("cpu", dtype=torch.bfloat16):
            h, c = layer(x, c0)
        assert h.dtype == torch.float32
        outs[impl] = (h.float(), c.float(), *torch.autograd.grad(h.float().pow(2).sum(), [x, c0]))
    for a, b in zip(outs["torch"], outs["triton"]):
        torch.testing.assert_close(a, b, atol=3e-2, rtol=3e-2)
