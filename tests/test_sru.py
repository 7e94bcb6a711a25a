"""SRU recurrence and layer (REFERENCE §8.1, §8.8): the fast autograd Function against a
plain per-step loop (forward and backward), the recurrence's limiting cases, the
dropout mask, the interleaved weight layout, and the optional ``sru`` oracle."""

import math

import pytest
import torch

from awd_plugins.modules.sru import (
    SRU,
    SRULayer,
    SRURecurrence,
    interleaved_linear,
    sru_recurrence,
    sru_recurrence_reference,
)


def _inputs(T=9, B=3, d=6, dtype=torch.float32, mask=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    u, fr, rr, xs = (torch.randn(T, B, d, generator=g, dtype=dtype, requires_grad=True) for _ in range(4))
    weight_c = torch.empty(2 * d, dtype=dtype).uniform_(-1, 1, generator=g).requires_grad_()
    bias = torch.randn(2 * d, generator=g, dtype=dtype).requires_grad_()
    c0 = torch.randn(B, d, generator=g, dtype=dtype, requires_grad=True)
    m = (torch.rand(B, d, generator=g) > 0.3).to(dtype) / 0.7 if mask else None
    return [u, fr, rr, xs, weight_c, bias, c0, m]


@pytest.mark.parametrize("mask", [False, True])
def test_fast_recurrence_equals_reference_loop_forward_and_backward(mask):
    args = _inputs(mask=mask)
    h1, c1 = sru_recurrence(*args)
    grads1 = torch.autograd.grad((h1 * torch.linspace(-1, 1, h1.numel()).view_as(h1)).sum() + c1.square().sum(),
                                 args[:7])
    h2, c2 = sru_recurrence_reference(*args)
    grads2 = torch.autograd.grad((h2 * torch.linspace(-1, 1, h2.numel()).view_as(h2)).sum() + c2.square().sum(),
                                 args[:7])
    assert (h1 - h2).abs().max() <= 1e-5
    assert (c1 - c2).abs().max() <= 1e-5
    for name, a, b in zip(["u", "f", "r", "x'", "weight_c", "bias", "c0"], grads1, grads2):
        assert (a - b).abs().max() <= 1e-5, name


def test_hand_written_backward_passes_gradcheck():
    args = _inputs(T=4, B=2, d=3, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda *a: SRURecurrence.apply(*a), tuple(args))


def test_forget_gate_one_keeps_c_and_reset_gate_zero_is_highway():
    T, B, d = 5, 2, 4
    x = torch.randn(T, B, d)
    c0 = torch.randn(B, d)
    big = torch.full((T, B, d), 50.0)
    zeros = torch.zeros(2 * d)
    # f ≡ 1: c stays c0 whatever u is
    h, c = sru_recurrence(torch.randn(T, B, d), big, torch.zeros(T, B, d), x, zeros, zeros, c0)
    assert torch.allclose(c, c0)
    # r ≡ 0: h is the skip input, exactly the highway
    h, c = sru_recurrence(torch.randn(T, B, d), torch.zeros(T, B, d), -big, x, zeros, zeros, c0)
    assert torch.allclose(h, x)
    # r ≡ 1 and f ≡ 0: h = c = u
    u = torch.randn(T, B, d)
    h, c = sru_recurrence(u, -big, big, x, zeros, zeros, c0)
    assert torch.allclose(h, u) and torch.allclose(c, u[-1])


def test_highway_bias_init_makes_layers_mostly_skip():
    torch.manual_seed(0)
    layer = SRULayer(64, 64, highway_bias=-2.0)
    d = 64
    assert torch.equal(layer.bias[:d], torch.zeros(d))
    assert torch.equal(layer.bias[d:], torch.full((d,), -2.0))
    assert layer.weight_c.abs().max() <= 1.0 and layer.weight_c.abs().max() > 0.9  # U(−1, 1)
    x = torch.randn(30, 8, d)
    with torch.no_grad():
        U = layer.compute_u(x)
        r = torch.sigmoid(U[..., 2, :] + layer.bias[d:])  # at c = 0
    assert abs(r.mean().item() - 1 / (1 + math.exp(2))) < 0.03


def test_dropout_mask_is_shared_over_time_and_absent_in_last_layer_and_eval():
    torch.manual_seed(0)
    stack = SRU(5, 5, num_layers=2, dropout=0.5)
    assert stack.rnn_lst[0].dropout == 0.5 and stack.rnn_lst[1].dropout == 0.0
    layer = stack.rnn_lst[0]
    x = torch.randn(6, 3, 5)
    layer.train()
    torch.manual_seed(1)
    h, _ = layer(x)
    torch.manual_seed(1)
    mask = torch.empty(3, 5).bernoulli_(0.5).div_(0.5)  # drawn first, as the reference does
    U = layer.compute_u(x)
    h_ref, _ = sru_recurrence_reference(U[..., 0, :], U[..., 1, :], U[..., 2, :], x, layer.weight_c, layer.bias,
                                        None, mask)
    assert torch.allclose(h, h_ref, atol=1e-6)
    # a dropped unit passes its skip input unchanged at every time step (the kernel's form)
    dropped = mask == 0
    assert dropped.any()
    assert torch.allclose(h[:, dropped], x[:, dropped])
    layer.eval()
    with torch.no_grad():
        assert torch.equal(layer(x)[0], layer(x)[0])


def test_interleaved_weight_layout():
    d, k, n_in = 4, 3, 5
    w = torch.randn(k * d, n_in)
    x = torch.randn(2, n_in)
    blocks = interleaved_linear(x, w, k)
    full = x @ w.t()
    for j in range(d):
        for m in range(k):
            assert torch.allclose(blocks[:, m, j], full[:, j * k + m])


def test_layer_with_other_input_width_uses_fourth_matrix_as_skip():
    layer = SRULayer(3, 5, projection_size=2)
    assert layer.num_matrices == 4
    assert layer.transform_module[1].weight.shape == (20, 2)
    x = torch.randn(4, 2, 3)
    U = layer.compute_u(x)
    h, _ = layer(x)
    h_ref, _ = sru_recurrence_reference(U[..., 0, :], U[..., 1, :], U[..., 2, :], U[..., 3, :], layer.weight_c,
                                        layer.bias)
    assert torch.allclose(h, h_ref, atol=1e-6)


def test_rescale_multiplies_the_skip_input():
    layer = SRULayer(4, 4, highway_bias=-1.0, rescale=True)
    assert layer.scale_x.item() == pytest.approx(math.sqrt(1 + 2 * math.exp(-1.0)))
    x = torch.randn(3, 2, 4)
    U = layer.compute_u(x)
    h, _ = layer(x)
    h_ref, _ = sru_recurrence_reference(U[..., 0, :], U[..., 1, :], U[..., 2, :], x * layer.scale_x,
                                        layer.weight_c, layer.bias)
    assert torch.allclose(h, h_ref, atol=1e-6)


def test_oracle_sru_3_0_0_dev6():
    sru = pytest.importorskip("sru")
    if not hasattr(sru, "SRUpp"):
        pytest.skip("needs sru 3.0.0.dev6 (pip install --pre sru==3.0.0.dev6)")
    torch.manual_seed(0)
    for rescale, proj in [(False, 0), (True, 0), (False, 4)]:
        ref = sru.SRU(7, 10, num_layers=2, dropout=0.2, highway_bias=-1.0, rescale=rescale, projection_size=proj)
        ours = SRU(7, 10, num_layers=2, dropout=0.2, highway_bias=-1.0, rescale=rescale, projection_size=proj)
        ours.load_state_dict(ref.state_dict())
        ref.eval()
        ours.eval()
        x, c0 = torch.randn(5, 2, 7), torch.randn(2, 2, 10)
        with torch.no_grad():
            (h1, c1), (h2, c2) = ref(x, c0), ours(x, c0)
        assert (h1 - h2).abs().max() <= 1e-5 and (c1 - c2).abs().max() <= 1e-5
