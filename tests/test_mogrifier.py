"""Mogrifier LSTM (Melis et al. 2020): r = 0 is nn.LSTM, a per-step transcription of the paper's
equations matches forward and gradients, the authors' (deepmind/lamb) sizes, the decoder
interface (carried state, skip connections, sampling) and a fairseq train → eval-lm run."""

import argparse
import re
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from awd_plugins.errors import AwdUserError
from awd_plugins.models.mogrifier_lstm import (
    MogrifierLstmConfig, MogrifierLstmDecoder, MogrifierLstmModel, mogrifier_lstm_ptb, mogrifier_lstm_wt2,
)
from awd_plugins.modules.mogrifier import MogrifierLSTM
from _helpers import assert_eval_lm_pointer_equals_loop, dictionary_of_size, model_cfg
from test_rnn_lm import assert_low_temperature_is_greedy


def reference(layer: MogrifierLSTM, x, h, c, capped, state_mask=None):
    """The paper's Eq. (1)–(2) and the LSTM step, one time step and one round at a time.

    x: T×B×m, h, c: B×n. Q^i / R^i are rebuilt from the raw factors (rank k: up @ down).
    """
    def matrix_and_bias(gate):
        if gate.rank > 0:
            return gate.up.weight @ gate.down.weight, gate.up.bias
        return gate.proj.weight, gate.proj.bias

    W_ih, W_hh = layer.weight_ih_l0, layer.weight_hh_l0
    b = layer.bias_ih_l0 + layer.bias_hh_l0
    n = layer.hidden_size
    outs = []
    for t in range(x.size(0)):
        xi = x[t]
        hi = h if state_mask is None else h * state_mask
        for i in range(1, layer.rounds + 1):
            M, bias = matrix_and_bias(layer.rounds_gates[i - 1])
            if i % 2 == 1:  # x^i = 2σ(Q^i h^{i-1}) ⊙ x^{i-2}
                xi = 2 * torch.sigmoid(hi @ M.t() + bias) * xi
            else:  # h^i = 2σ(R^i x^{i-1}) ⊙ h^{i-2}
                hi = 2 * torch.sigmoid(xi @ M.t() + bias) * hi
        z = xi @ W_ih.t() + hi @ W_hh.t() + b
        ig, fg, gg, og = torch.sigmoid(z[:, :n]), torch.sigmoid(z[:, n:2 * n]), torch.tanh(z[:, 2 * n:3 * n]), \
            torch.sigmoid(z[:, 3 * n:])
        if capped:
            ig = torch.minimum(ig, 1 - fg)
        c = fg * c + ig * gg
        h = og * torch.tanh(c)
        outs.append(h)
    return torch.stack(outs), h, c


def _perturb(module, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))


def test_zero_rounds_is_exactly_nn_lstm_on_the_same_weights():
    torch.manual_seed(0)
    layer = MogrifierLSTM(5, 7, rounds=0, cap_input_gate=False).double()
    lstm = nn.LSTM(5, 7).double()
    lstm.load_state_dict({k: v for k, v in layer.state_dict().items()})
    assert set(layer.state_dict()) == set(lstm.state_dict())  # nothing but nn.LSTM's parameters
    x = torch.randn(6, 3, 5, dtype=torch.double)
    h0, c0 = torch.randn(1, 3, 7, dtype=torch.double), torch.randn(1, 3, 7, dtype=torch.double)
    out, (h, c) = layer(x, (h0, c0))
    want, (wh, wc) = lstm(x, (h0, c0))
    assert torch.allclose(out, want, atol=1e-12) and torch.allclose(h, wh, atol=1e-12) and torch.allclose(c, wc, atol=1e-12)


@pytest.mark.parametrize("rounds,rank,capped", [(1, 0, False), (2, 0, True), (5, 3, True), (6, 2, False), (4, 0, False)])
def test_forward_and_gradients_match_the_per_step_equations(rounds, rank, capped):
    torch.manual_seed(rounds)
    layer = MogrifierLSTM(5, 7, rounds=rounds, rank=rank, cap_input_gate=capped).double()
    _perturb(layer, rounds)  # non-zero mogrifier biases too
    assert len(layer.rounds_gates) == rounds
    x = torch.randn(6, 3, 5, dtype=torch.double, requires_grad=True)
    h0, c0 = torch.randn(3, 7, dtype=torch.double), torch.randn(3, 7, dtype=torch.double)
    out, (h, c) = layer(x, (h0[None], c0[None]))
    want, wh, wc = reference(layer, x, h0, c0, capped)
    assert torch.allclose(out, want, atol=1e-12) and torch.allclose(h[0], wh) and torch.allclose(c[0], wc)
    # gradients of a loss on every output and the final cell, w.r.t. every parameter and the input
    w = torch.randn_like(out)
    params = [x] + list(layer.parameters())
    got = torch.autograd.grad((out * w).sum() + c.pow(2).sum(), params)
    ref = torch.autograd.grad((want * w).sum() + wc.pow(2).sum(), params)
    for a, b in zip(got, ref):
        assert torch.allclose(a, b, atol=1e-10)


def test_rounds_gate_alternately_and_low_rank_factors_have_rank_k():
    layer = MogrifierLSTM(5, 7, rounds=3, rank=2)
    q1, r2, q3 = (g.matrix() for g in layer.rounds_gates)
    assert q1.shape == (5, 7) and r2.shape == (7, 5) and q3.shape == (5, 7)  # Q: h → x, R: x → h
    assert torch.linalg.matrix_rank(q1.detach()) == 2
    full = MogrifierLSTM(5, 7, rounds=2, rank=0)
    assert sum(p.numel() for p in full.rounds_gates.parameters()) == (7 * 5 + 5) + (5 * 7 + 7)
    # the paper's initial gates: zero bias, so 2σ(0) = 1 leaves x and h unchanged for zero weights
    assert all(torch.all(g.bias() == 0) for g in layer.rounds_gates)
    # lamb's forget_bias: the decoder's layers start with the forget gate's bias shifted by +1
    torch.manual_seed(0)
    dec = tiny(nhid=64, emsize=64)
    b = dec.rnns[0].bias_ih_l0.detach()
    assert 0.9 < b[64:128].mean() < 1.1 and abs(b[:64].mean()) < 0.1 and abs(b[192:].mean()) < 0.1


def test_state_dropout_is_one_mask_per_stream_for_the_whole_window():
    torch.manual_seed(0)
    layer = MogrifierLSTM(4, 6, rounds=2, rank=0, state_dropout=0.5).double().train()
    x = torch.randn(5, 3, 4, dtype=torch.double)
    h0, c0 = torch.randn(3, 6, dtype=torch.double), torch.randn(3, 6, dtype=torch.double)
    torch.manual_seed(7)
    out, _ = layer(x, (h0[None], c0[None]))
    torch.manual_seed(7)  # the same draw as the layer's: Bernoulli(1-p)/(1-p) of h's shape, once
    mask = torch.empty(3, 6, dtype=torch.double).bernoulli_(0.5) / 0.5
    want, _, _ = reference(layer, x, h0, c0, False, state_mask=mask)
    assert torch.allclose(out, want, atol=1e-12)
    layer.eval()
    assert torch.allclose(layer(x, (h0[None], c0[None]))[0], reference(layer, x, h0, c0, False)[0], atol=1e-12)


# -- sizes: the authors' configurations ----------------------------------------------------------
def lamb_count(h, e, V, rounds, rank, experts, layers=2):
    """Trainable parameters of lamb's LM (tiled_lstm.py, utils.mixture_of_softmaxes): tied embedding,
    softmax bias, per layer [x; h] → 4 gates with one bias per gate, rank-k round matrices with a bias,
    and the MoS projection (bias) and mixture weights (no bias)."""
    n = V * e + V
    for layer in range(layers):
        m = e if layer == 0 else h
        n += (m + h) * 4 * h + 4 * h
        n += sum(rank * (h + m) + (m if i % 2 == 1 else h) for i in range(1, rounds + 1))
    if experts:
        n += h * experts * e + experts * e + h * experts
    return n


def arch_cfg(arch):
    ns = argparse.Namespace()
    arch(ns)
    return model_cfg(MogrifierLstmConfig, **vars(ns))


@pytest.mark.parametrize("arch,vocab,budget,ratio,rounds,rank,experts", [
    (mogrifier_lstm_ptb, 10000, 24_000_000, 1.0, 5, 84, 0),
    (mogrifier_lstm_wt2, 33278, 35_000_000, 0.1993194960596213, 6, 48, 2),
])
def test_named_configurations_have_the_authors_sizes(arch, vocab, budget, ratio, rounds, rank, experts):
    cfg = arch_cfg(arch)
    h, e = cfg.nhid, cfg.emsize
    assert (cfg.nlayers, cfg.mogrifier_rounds, cfg.mogrifier_rank, cfg.n_experts) == (2, rounds, rank, experts)
    assert e == round(ratio * h)
    # lamb's rule: the largest hidden size whose parameter count stays within the budget
    assert lamb_count(h, e, vocab, rounds, rank, experts) <= budget
    assert lamb_count(h + 1, round(ratio * (h + 1)), vocab, rounds, rank, experts) > budget
    model = MogrifierLstmModel.build_model(cfg, SimpleNamespace(target_dictionary=dictionary_of_size(vocab)))
    ours = sum(p.numel() for p in model.parameters())
    # nn.LSTM's two bias vectors where lamb has one: 4h more per layer, nothing else differs
    assert ours == lamb_count(h, e, vocab, rounds, rank, experts) + 2 * 4 * h
    assert abs(ours - budget) < 0.001 * budget


def test_named_configurations_carry_the_tuned_dropouts():
    ptb, wt2 = arch_cfg(mogrifier_lstm_ptb), arch_cfg(mogrifier_lstm_wt2)
    assert (ptb.dropouti, ptb.dropouth, ptb.state_dropout, ptb.dropout, ptb.dropoute, ptb.wdrop) == (
        0.7291, 0.291, 0.3873, 0.7157, 0.0, 0.0)
    assert (wt2.dropouti, wt2.dropouth, wt2.state_dropout, wt2.dropout, wt2.dropoutl) == (
        0.5469, 0.1988, 0.2214, 0.3477, 0.0)
    assert not ptb.uncapped_input_gate and not ptb.no_skip_connections


# -- the decoder -----------------------------------------------------------------------------------
def tiny(**kw):
    base = dict(emsize=6, nhid=6, nlayers=2, mogrifier_rounds=3, mogrifier_rank=2)
    return MogrifierLstmDecoder(model_cfg(MogrifierLstmConfig, **{**base, **kw}), dictionary_of_size(30))


def test_skip_connections_sum_the_layers_and_windows_carry_state():
    torch.manual_seed(0)
    dec = tiny().eval()
    tokens = torch.randint(4, 30, (9, 2))
    with torch.no_grad():
        raw, dropped, state = dec.run(tokens, dec.init_state(2, dec.embed_tokens.weight))
        x = dec.embed_tokens(tokens)
        zero = dec.init_state(2, x)
        h1, _ = dec.rnns[0](x, zero[0])
        h2, _ = dec.rnns[1](h1, zero[1])
        assert torch.allclose(raw, h1 + h2, atol=1e-6) and torch.equal(raw, dropped)
        a, _, s = dec.run(tokens[:4], dec.init_state(2, dec.embed_tokens.weight))
        b, _, _ = dec.run(tokens[4:], s)
        assert torch.allclose(raw, torch.cat([a, b]), atol=1e-6)
        plain = tiny(no_skip_connections=True).eval()
        plain.load_state_dict(dec.state_dict())
        assert torch.allclose(plain.run(tokens, plain.init_state(2, x))[0], h2, atol=1e-6)


def test_wdrop_and_mixture_of_softmaxes_plug_in():
    torch.manual_seed(0)
    dec = tiny(wdrop=0.5, n_experts=2, nhidlast=6, emsize=4).train()
    assert type(dec.rnns[0]).__name__ == "WeightDrop" and dec.mixture_of_softmaxes is not None
    out, extra = dec(torch.randint(4, 30, (2, 5)))
    assert torch.allclose(out.logsumexp(-1), torch.zeros(2, 5), atol=1e-5)
    dec.nll(extra["dropped_out"], torch.randint(4, 30, (2, 5))).sum().backward()
    assert all(p.grad is not None for p in dec.parameters())


@pytest.mark.parametrize("kw,message", [
    (dict(mogrifier_rounds=-1), "--mogrifier-rounds and --mogrifier-rank must be >= 0"),
    (dict(nhid=8), "pass --no-skip-connections"),
    (dict(state_dropout=1.0), "--state-dropout must be in"),
])
def test_bad_options_are_user_errors(kw, message):
    with pytest.raises(AwdUserError, match=re.escape(message)):
        tiny(**kw)


def test_sampling_through_incremental_decoding():
    torch.manual_seed(0)
    d = dictionary_of_size(30)
    model = MogrifierLstmModel(MogrifierLstmDecoder(model_cfg(MogrifierLstmConfig, emsize=6, nhid=6,
                                                              mogrifier_rank=2), d)).eval()
    with torch.no_grad():
        model.decoder.embed_tokens.weight.mul_(40)  # a peaked distribution: clear gaps on the greedy path
    assert_low_temperature_is_greedy(model, d, [d.eos(), 7, 9])


def test_fairseq_train_then_eval_lm_with_pointer(small_bin, run_cli, tmp_path):
    run_cli(
        "fairseq-train", small_bin, "--task", "awd_language_modeling", "--arch", "mogrifier_lstm_ptb",
        "--emsize", "8", "--nhid", "8", "--mogrifier-rank", "3", "--criterion", "split_cross_entropy",
        "--optimizer", "nt_asgd", "--lr-scheduler", "nt_asgd", "--lr", "20", "--clip-norm", "0.25",
        "--batch-size", "4", "--bptt", "10", "--max-update", "4", "--seed", "1", "--cpu", "--log-format", "simple",
        "--num-workers", "0", "--save-dir", tmp_path, "--no-epoch-checkpoints",
    )
    ckpt = str(tmp_path / "checkpoint_best.pt")
    model = assert_eval_lm_pointer_equals_loop(run_cli, small_bin, ckpt)
    assert isinstance(model, MogrifierLstmModel) and model.decoder.rnns[0].rounds == 5
