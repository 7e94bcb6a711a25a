"""AWD-QRNN (REFERENCE §6): the QRNN layer against the golden vectors of
salesforce/pytorch-qrnn, the fidelity checks of §6.1, the forget-mult paths against a
plain sequential recurrence, the published parameter counts (§2.6) and one run through
fairseq-train → fairseq-eval-lm (with the cache pointer)."""

import argparse
import math
import re
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from _helpers import assert_eval_lm_pointer_equals_loop, dictionary_of_size, model_cfg
from awd_plugins.models.awd_qrnn import (
    AwdQrnnConfig,
    AwdQrnnDecoder,
    AwdQrnnModel,
    awd_qrnn_ptb,
    awd_qrnn_wt2,
    awd_qrnn_wt103,
)
from awd_plugins.modules import QRNNLayer, WeightDrop
from awd_plugins.modules.qrnn import forget_mult

IMPLS = ["loop", "scan"]


def sequential(f, z, c0):
    """The recurrence written out step by step (autograd through it)."""
    c, out = c0, []
    for t in range(f.size(0)):
        c = f[t] * z[t] + (1 - f[t]) * c
        out.append(c)
    return torch.stack(out)


def gates(T, B, H, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    f = torch.rand(T, B, H, generator=g, dtype=dtype)
    z = torch.randn(T, B, H, generator=g, dtype=dtype).tanh()
    c0 = torch.randn(B, H, generator=g, dtype=dtype)
    return f, z, c0


# -- golden ---------------------------------------------------------------------------------
def golden_layers(gold, impl):
    cfg = gold["config"]
    sizes = [cfg["input_size"]] + [cfg["hidden_size"]] * cfg["num_layers"]
    rnns = nn.ModuleList(
        QRNNLayer(sizes[l], sizes[l + 1], window=w, output_gate=cfg["output_gate"], zoneout=cfg["zoneout"],
                  forget_mult_impl=impl)
        for l, w in enumerate(cfg["windows"])
    )
    # reference keys layers.l.linear.{weight,bias} → ours l.linear.module.{weight,bias} (always weight-dropped)
    mapped = {re.sub(r"^layers\.(\d+)\.linear\.", r"\1.linear.module.", k): v for k, v in gold["state_dict"].items()}
    rnns.load_state_dict(mapped, strict=True)
    return rnns.eval()


@pytest.mark.parametrize("impl", IMPLS)
def test_golden_two_windows(golden, impl):
    gold = golden("qrnn.pt")
    assert gold["config"]["windows"] == [2, 1]
    rnns = golden_layers(gold, impl)
    state = [(None, None)] * len(rnns)  # w1: hidden=None, prevX=None (after reset)
    with torch.no_grad():
        for w in ("w1", "w2"):
            x, new_state = gold[f"input_{w}"], []
            for rnn, (c, prev_x) in zip(rnns, state):
                next_prev_x = rnn.next_prev_x(x)
                x, c = rnn(x, c, prev_x)
                new_state.append((c, next_prev_x))
            state = new_state
            ref = gold[w]
            assert x.shape == ref["output"].shape
            assert (x - ref["output"]).abs().max() <= 1e-5
            assert (torch.cat([c for c, _ in state]) - ref["hidden"]).abs().max() <= 1e-5
            assert torch.equal(state[0][1], ref["prevX"][0])  # the window-2 layer keeps its last input
            assert state[1][1].numel() == 0 and ref["prevX"][1].numel() == 0  # window 1 keeps nothing


def test_golden_through_the_decoder_layout(golden):
    """The AWD-QRNN decoder's layers load the golden weights under their checkpoint names
    (``rnns.l.linear.module.weight``, the reference's ``…weight_raw``) and reproduce both windows."""
    gold = golden("qrnn.pt")
    cfg = model_cfg(AwdQrnnConfig, emsize=6, nhid=8, nlayers=2, untie_weights=True, wdrop=0.3)
    dec = AwdQrnnDecoder(cfg, dictionary_of_size(20)).eval()
    sd = {re.sub(r"^layers\.(\d+)\.linear\.", r"rnns.\1.linear.module.", k): v for k, v in gold["state_dict"].items()}
    missing, unexpected = dec.load_state_dict(sd, strict=False)
    assert not unexpected and not [k for k in missing if k.startswith("rnns.")]
    state = [(c, px) for c, px in dec.init_state(2, gold["input_w1"])]
    with torch.no_grad():
        for w in ("w1", "w2"):
            x, new = gold[f"input_{w}"], []
            for rnn, (c, px) in zip(dec.rnns, state):  # run()'s layer loop without the embedding
                npx = rnn.next_prev_x(x)
                x, c = rnn(x, c, px)
                new.append((c, npx))
            state = new
            assert (x - gold[w]["output"]).abs().max() <= 1e-5
            assert (torch.cat([c for c, _ in state]) - gold[w]["hidden"]).abs().max() <= 1e-5


# -- forget-mult paths ------------------------------------------------------------------------
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("T", [1, 2, 7, 70])
def test_forget_mult_matches_sequential_forward_and_backward(impl, T):
    f0, z0, c00 = gates(T, 3, 5, seed=T)
    f0[0, 0, :2] = 1.0  # saturated gates must be exact too (no division in the scan)
    f0[-1, 1, :2] = 0.0
    w = torch.randn(T, 3, 5, generator=torch.Generator().manual_seed(9))
    results = []
    for fn in (sequential, lambda f, z, c: forget_mult(f, z, c, impl)):
        f, z, c0 = (t.clone().requires_grad_() for t in (f0, z0, c00))
        c = fn(f, z, c0)
        (c * w).sum().backward()
        results.append((c.detach(), f.grad, z.grad, c0.grad))
    for ours, ref in zip(results[1], results[0]):
        assert ours.shape == ref.shape
        assert (ours - ref).abs().max() <= 1e-5


@pytest.mark.parametrize("impl", IMPLS)
def test_forget_mult_gradcheck(impl):
    f, z, c0 = (t.requires_grad_() for t in gates(5, 2, 2, seed=1, dtype=torch.float64))
    assert torch.autograd.gradcheck(lambda f, z, c: forget_mult(f, z, c, impl), (f, z, c0))
    # and against the naive loop's own autograd, including a gradient on c_last only
    fr, zr, cr = (t.detach().clone().requires_grad_() for t in (f, z, c0))
    forget_mult(f, z, c0, impl)[-1].sum().backward()
    sequential(fr, zr, cr)[-1].sum().backward()
    for a, b in ((f, fr), (z, zr), (c0, cr)):
        assert torch.allclose(a.grad, b.grad, atol=1e-12)


@pytest.mark.parametrize("impl", IMPLS)
def test_forget_gate_extremes(impl):
    _, z, c0 = gates(5, 2, 4)
    # F ≡ 1: c_t = Z_t; F ≡ 0: c_t = c_{−1} for every t (exactly)
    assert torch.equal(forget_mult(torch.ones_like(z), z, c0, impl), z)
    assert torch.equal(forget_mult(torch.zeros_like(z), z, c0, impl), c0.expand_as(z))
    assert torch.equal(forget_mult(torch.zeros_like(z), z, None, impl), torch.zeros_like(z))


def test_forget_mult_auto_is_loop_on_cpu_and_rejects_bad_input():
    f, z, c0 = gates(4, 2, 3)
    assert torch.equal(forget_mult(f, z, c0), forget_mult(f, z, c0, "loop"))
    with pytest.raises(ValueError, match="one of"):
        forget_mult(f, z, c0, "cupy")
    with pytest.raises(ValueError, match="same"):
        forget_mult(f, z[:2], c0)


# -- layer fidelity (REFERENCE §6.1) ----------------------------------------------------------
@pytest.mark.parametrize("window", [1, 2])
@pytest.mark.parametrize("impl", IMPLS)
def test_one_call_equals_two_calls_with_carried_state(window, impl):
    torch.manual_seed(0)
    layer = QRNNLayer(4, 6, window=window, forget_mult_impl=impl).eval()
    x = torch.randn(9, 3, 4)
    c0 = torch.randn(1, 3, 6)
    prev = torch.randn(1, 3, 4) if window == 2 else layer.init_prev_x(3, x)
    with torch.no_grad():
        h_all, c_all = layer(x, c0, prev)
        h1, c1 = layer(x[:4], c0, prev)
        h2, c2 = layer(x[4:], c1, layer.next_prev_x(x[:4]))
    assert (torch.cat([h1, h2]) - h_all).abs().max() <= 1e-6
    assert (c2 - c_all).abs().max() <= 1e-6
    assert c_all.shape == (1, 3, 6) and h_all.shape == (9, 3, 6)


def test_window2_first_step_sees_zeros_after_reset_and_prev_x_otherwise():
    torch.manual_seed(0)
    layer = QRNNLayer(4, 6, window=2).eval()
    x = torch.randn(5, 2, 4)
    with torch.no_grad():
        reset, _ = layer(x, None, None)
        zeros, _ = layer(x, None, layer.init_prev_x(2, x))
        carried, _ = layer(x, None, torch.randn(1, 2, 4))
        # X_{−1} = 0 means step 0 uses only the current-input half of W
        w = layer.linear.module.weight[:, :4]
        y0 = x[0] @ w.t() + layer.linear.module.bias
        z, f, o = y0.chunk(3, -1)
        step0 = torch.sigmoid(o) * torch.sigmoid(f) * torch.tanh(z)
    assert torch.equal(reset, zeros)
    assert (reset[0] - step0).abs().max() <= 1e-6
    assert not torch.allclose(carried[0], reset[0])
    x.requires_grad_()  # the carried prevX is detached: no gradient into the previous window
    assert not layer.next_prev_x(x).requires_grad and torch.equal(layer.next_prev_x(x), x[-1:])


def test_window2_input_is_current_then_previous():
    """S_t = [X_t ; X_{t−1}]: zeroing the second half of W makes the layer a window-1 layer."""
    torch.manual_seed(0)
    w2, w1 = QRNNLayer(3, 5, window=2).eval(), QRNNLayer(3, 5, window=1).eval()
    with torch.no_grad():
        w2.linear.module.weight[:, 3:] = 0
        w1.linear.module.weight.copy_(w2.linear.module.weight[:, :3])
        w1.linear.module.bias.copy_(w2.linear.module.bias)
        x = torch.randn(4, 2, 3)
        assert torch.equal(w2(x, None, torch.randn(1, 2, 3))[0], w1(x)[0])


def test_gates_are_contiguous_blocks_z_f_o_and_output_gate_optional():
    torch.manual_seed(0)
    layer = QRNNLayer(3, 4, window=1).eval()
    bare = QRNNLayer(3, 4, window=1, output_gate=False).eval()
    assert layer.linear.module.weight.shape == (12, 3) and bare.linear.module.weight.shape == (8, 3)
    with torch.no_grad():
        bare.linear.module.weight.copy_(layer.linear.module.weight[:8])
        bare.linear.module.bias.copy_(layer.linear.module.bias[:8])
        x = torch.randn(6, 2, 3)
        h, c_last = layer(x)
        hb, cb_last = bare(x)
        o = torch.sigmoid(x @ layer.linear.module.weight[8:].t() + layer.linear.module.bias[8:])
    # without the output gate h = c; with it h = O ⊙ c, O from the third block
    assert torch.equal(hb[-1:], cb_last) and torch.equal(c_last, cb_last)
    assert (h - o * hb).abs().max() <= 1e-6


def test_zoneout_unscaled_in_training_and_eval_scaling_is_its_expectation():
    torch.manual_seed(0)
    p = 0.3
    layer = QRNNLayer(3, 4, window=1, zoneout=p)
    plain = QRNNLayer(3, 4, window=1)
    plain.load_state_dict(layer.state_dict())
    x = torch.randn(1, 1, 3).expand(1, 10000, 3)  # one step from c = 0: h = O·F·Z is linear in F
    with torch.no_grad():
        h_plain = plain.eval()(x)[0]
        h_eval = layer.eval()(x)[0]
        h_train = layer.train()(x)[0]
    assert torch.allclose(h_eval, (1 - p) * h_plain, atol=1e-7)
    # each unit is either zoned out (F = 0, h = 0) or untouched (no 1/(1−p) rescale)
    kept = h_train != 0
    assert torch.equal(h_train[kept], h_plain[kept])
    assert abs((~kept).float().mean().item() - p) < 0.01
    assert (h_train.mean(1) - h_eval[:, 0]).abs().max() <= 4 * h_plain.abs().max() * math.sqrt(p * (1 - p) / 10000)


def test_gate_projection_always_weight_dropped():
    layer = QRNNLayer(3, 4, window=2, weight_drop=0.0)
    assert isinstance(layer.linear, WeightDrop) and layer.linear.weights == ["weight"]
    assert set(layer.state_dict()) == {"linear.module.weight", "linear.module.bias"}
    torch.manual_seed(0)
    dropped = QRNNLayer(3, 4, weight_drop=0.5)
    x = torch.randn(4, 2, 3)
    with torch.no_grad():
        a, b = dropped.train()(x)[0], dropped.train()(x)[0]
        e1, e2 = dropped.eval()(x)[0], dropped.eval()(x)[0]
    assert not torch.equal(a, b) and torch.equal(e1, e2)
    with pytest.raises(ValueError, match="window"):
        QRNNLayer(3, 4, window=3)


# -- the AWD-QRNN model --------------------------------------------------------------------------
def tiny_decoder(**over):
    cfg = model_cfg(AwdQrnnConfig, emsize=6, nhid=10, nlayers=3, **over)
    return AwdQrnnDecoder(cfg, dictionary_of_size(30))


def test_decoder_layout_and_state():
    torch.manual_seed(0)
    dec = tiny_decoder()
    assert [r.window for r in dec.rnns] == [2, 1, 1]
    assert [(r.input_size, r.hidden_size) for r in dec.rnns] == [(6, 10), (10, 10), (10, 6)]
    assert all(r.output_gate and r.zoneout == 0 and r.linear.p == 0.1 for r in dec.rnns)
    assert dec.output_projection.weight is dec.embed_tokens.weight
    state = dec.init_state(3, dec.embed_tokens.weight)
    shapes = [tuple(t.shape) for s in state for t in s]
    assert shapes == [(1, 3, 10), (1, 3, 6), (1, 3, 10), (1, 3, 0), (1, 3, 6), (1, 3, 0)]
    tokens = torch.randint(4, 30, (7, 3))
    dec.eval()
    with torch.no_grad():
        raw, dropped, new_state = dec.run(tokens, state)
    assert raw.shape == (7, 3, 6) and torch.equal(raw, dropped)
    assert torch.equal(new_state[0][1], dec.embed_tokens(tokens[-1:]))  # prevX = last (dropped) input of layer 0
    untied = tiny_decoder(untie_weights=True)
    assert untied.rnns[-1].hidden_size == 10 and untied.output_projection.weight is not untied.embed_tokens.weight


def test_carried_state_through_the_base_and_reset():
    """Consecutive windows (carry_key/carry_pos) continue (c, prevX); a non-continuing window starts
    from zeros, i.e. window 2 sees X_{−1} = 0 again."""
    torch.manual_seed(0)
    dec = tiny_decoder().eval()
    tokens = torch.randint(4, 30, (2, 12))  # B×T as fairseq passes them
    with torch.no_grad():
        full = dec(tokens, features_only=True)[0]
        first = dec(tokens[:, :5], features_only=True, carry_key="valid", carry_pos=0)[0]
        second = dec(tokens[:, 5:], features_only=True, carry_key="valid", carry_pos=5)[0]
        restart = dec(tokens[:, 5:], features_only=True, carry_key="valid", carry_pos=40)[0]
        fresh = dec(tokens[:, 5:], features_only=True)[0]
    assert (torch.cat([first, second], 1) - full).abs().max() <= 1e-6
    assert torch.equal(restart, fresh) and not torch.allclose(restart, second)


def test_incremental_decoding_and_reorder_match_full_run():
    torch.manual_seed(0)
    dec = tiny_decoder().eval()
    tokens = torch.randint(4, 30, (3, 6))
    with torch.no_grad():
        full = dec(tokens)[0]
        inc, steps = {}, []
        for t in range(tokens.size(1)):
            steps.append(dec(tokens[:, : t + 1], incremental_state=inc)[0])
            if t == 2:  # beam reordering: reverse the streams, then continue with reversed tokens
                order = torch.tensor([2, 1, 0])
                dec.reorder_incremental_state(inc, order)
                tokens = tokens[order]
                full_rest = dec(tokens)[0]
    assert (torch.cat(steps[:3], 1) - full[:, :3]).abs().max() <= 1e-6
    assert (torch.cat(steps[3:], 1) - full_rest[:, 3:]).abs().max() <= 1e-6


def test_training_forward_backward_with_regularizers():
    torch.manual_seed(0)
    dec = tiny_decoder(dropoute=0.1, dropouti=0.4, dropouth=0.3, dropout=0.4, wdrop=0.1).train()
    tokens = torch.randint(4, 30, (2, 9))
    out, extra = dec(tokens)
    assert out.shape == (2, 9, 30) and extra["raw_out"].shape == extra["dropped_out"].shape == (2, 9, 6)
    nll = dec.nll(extra["dropped_out"], tokens)
    (nll.mean() + extra["dropped_out"].pow(2).mean()).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in dec.parameters())


def arch_cfg(arch):
    ns = argparse.Namespace()
    arch(ns)  # as fairseq applies a named architecture to the parsed arguments
    return model_cfg(AwdQrnnConfig, **vars(ns))


def param_count(vocab, arch):
    cfg = arch_cfg(arch)
    # built on the CPU: ~1 s, while the meta device's first use costs several seconds of lazy set-up here
    model = AwdQrnnModel.build_model(cfg, SimpleNamespace(target_dictionary=dictionary_of_size(vocab)))
    return sum(p.numel() for p in model.parameters()), cfg


def test_published_parameter_counts_and_named_architectures():
    ptb, cfg = param_count(10000, awd_qrnn_ptb)
    assert ptb == 24_020_150
    assert (cfg.emsize, cfg.nhid, cfg.nlayers, cfg.wdrop, cfg.dropouth, cfg.dropouti, cfg.dropout, cfg.dropoute) == (
        400, 1550, 4, 0.1, 0.3, 0.4, 0.4, 0.1)
    wt2, cfg = param_count(33278, awd_qrnn_wt2)
    assert wt2 == 33_354_628 and (cfg.dropouth, cfg.dropouti, cfg.wdrop) == (0.2, 0.4, 0.1)
    base = model_cfg(AwdQrnnConfig)  # --arch awd_qrnn: the PTB command's values
    assert (base.emsize, base.nhid, base.nlayers, base.wdrop, base.dropouth, base.dropouti) == (
        400, 1550, 4, 0.1, 0.3, 0.4)
    cfg = arch_cfg(awd_qrnn_wt103)
    assert (cfg.emsize, cfg.nhid, cfg.nlayers, cfg.dropout, cfg.dropouth, cfg.dropouti, cfg.dropoute, cfg.wdrop) == (
        400, 2500, 4, 0.1, 0.1, 0.1, 0.0, 0.0)


# -- end to end ------------------------------------------------------------------------------------
def test_fairseq_train_then_eval_lm_with_pointer(small_bin, run_cli, tmp_path):
    run_cli(
        "fairseq-train", small_bin, "--task", "awd_language_modeling", "--arch", "awd_qrnn", "--emsize", "12",
        "--nhid", "16", "--nlayers", "2", "--criterion", "split_cross_entropy", "--optimizer", "nt_asgd",
        "--lr-scheduler", "nt_asgd", "--lr", "30", "--clip-norm", "0.2", "--batch-size", "4", "--bptt", "10",
        "--max-update", "4", "--seed", "1", "--cpu", "--log-format", "simple", "--num-workers", "0",
        "--save-dir", tmp_path, "--no-epoch-checkpoints",
    )
    ckpt = str(tmp_path / "checkpoint_best.pt")
    # fairseq-eval-lm (windows of 50, carried (c, prevX), pointer) equals a one-token-at-a-time loop
    model = assert_eval_lm_pointer_equals_loop(run_cli, small_bin, ckpt)
    assert isinstance(model, AwdQrnnModel) and model.decoder.rnns[0].window == 2
