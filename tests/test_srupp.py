"""SRU++ (REFERENCE §8.2–8.8): golden vectors, the fidelity checks that run on a CPU,
published parameter counts, the LM decoder's state/memory/mask wiring and adaptive
softmax, and the optimiser (decoupled RAdam) and its warmup + cosine schedule."""

import math
from argparse import Namespace

import pytest
import torch
from omegaconf import OmegaConf

from _helpers import dictionary_of_size, model_cfg
from awd_plugins.models import srupp as srupp_models
from awd_plugins.models.srupp import SruDecoder, SruppConfig
from awd_plugins.modules.sru import sru_recurrence_reference
from awd_plugins.modules.srupp import SRUpp, SRUppAttention, SRUppProjectedLinear, attention_mask
from awd_plugins.optim.radam_decoupled import RAdamDecoupled, RAdamDecoupledConfig, SruppCosineConfig, SruppCosineSchedule

GOLDEN_TOL = 1e-5


def _perturb(module, seed=0):
    """Random α, LayerNorms and gate biases, so attention and memory matter."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("alpha"):
                p.uniform_(0.5, 1.0, generator=g)
            elif "layer_norm" in name or name.endswith(".bias"):
                p.add_(0.5 * torch.randn(p.shape, generator=g))
    return module


# -- golden ------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["stock", "perturbed"])
def test_golden_two_segments_with_memory(golden, variant):
    g = golden("srupp.pt")
    run = g if variant == "stock" else g["perturbed"]
    cfg = g["config"]
    model = SRUpp(cfg["input_size"], cfg["hidden_size"], cfg["proj_size"], num_layers=cfg["num_layers"],
                  dropout=cfg["dropout"], attn_dropout=cfg["attn_dropout"], num_heads=cfg["num_heads"],
                  highway_bias=cfg["highway_bias"], attention_every_n_layers=cfg["attention_every_n_layers"])
    # the reference's key names and interleaved layout are ours: the state dict loads unchanged
    model.load_state_dict(run["state_dict"])
    model.eval()
    c, memory = None, None
    for seg in ("w1", "w2"):
        x = g[f"input_{seg}"]
        mem_len = 0 if memory is None else memory[0].size(0)
        mask = attention_mask(mem_len, x.size(0))
        assert torch.equal(mask, run[seg]["attn_mask"])
        with torch.no_grad():
            h, c, memory = model(x, c, memory=memory, attn_mask=mask)
        assert (h - run[seg]["output"]).abs().max() <= GOLDEN_TOL
        assert (c - run[seg]["c"]).abs().max() <= GOLDEN_TOL
        for ours, ref in zip(memory, run[seg]["memory"]):
            assert (ours - ref).abs().max() <= GOLDEN_TOL
        # carry exactly what the reference carried
        c, memory = run[seg]["c"], list(run[seg]["memory"])


# -- fidelity checks (§8.8) --------------------------------------------------------------------


def test_alpha_zero_reduces_to_sru_with_low_rank_transform():
    torch.manual_seed(0)
    model = SRUpp(12, 12, 4, num_layers=2).eval()
    with torch.no_grad():
        for ln in (m.transform_module.layer_norm for m in model.rnn_lst):
            ln.weight.uniform_(0.5, 1.5)
            ln.bias.normal_()
    x = torch.randn(6, 3, 12)
    memory = [torch.randn(5, 3, 12) for _ in range(2)]
    with torch.no_grad():
        h_plain, c_plain, _ = model(x, attn_mask=attention_mask(0, 6))
        h_mem, c_mem, _ = model(x, memory=memory, attn_mask=attention_mask(5, 6))
        # by hand: U = W_3 LN(W_1 x), then the plain SRU recurrence
        y = x
        for layer in model.rnn_lst:
            t = layer.transform_module
            U = t.layer_norm(y @ t.linear1.weight.t()) @ t.linear3.weight.t()
            U = U.view(6, 3, 12, 3)  # interleaved: feature j·3 + m
            y, _ = sru_recurrence_reference(U[..., 0], U[..., 1], U[..., 2], y, layer.weight_c, layer.bias)
    assert (h_plain - y).abs().max() <= 1e-5
    assert torch.equal(h_plain, h_mem) and torch.equal(c_plain, c_mem)  # attention adds exactly 0


def test_memory_segments_equal_one_pass():
    torch.manual_seed(1)
    model = _perturb(SRUpp(10, 10, 6, num_layers=3, num_heads=2)).eval()
    T = 5
    x = torch.randn(2 * T, 2, 10)
    with torch.no_grad():
        h_all, c_all, _ = model(x, attn_mask=attention_mask(0, 2 * T))
        h1, c1, mem = model(x[:T], attn_mask=attention_mask(0, T))
        h2, c2, _ = model(x[T:], c1, memory=mem, attn_mask=attention_mask(T, T))
        h_nomem, _, _ = model(x[T:], c1, attn_mask=attention_mask(0, T))
    assert (torch.cat([h1, h2]) - h_all).abs().max() <= 1e-5
    assert (c2 - c_all).abs().max() <= 1e-5
    assert (h_nomem - h2).abs().max() > 1e-3  # the memory is really used


@pytest.mark.parametrize("mem_len,length,window", [(0, 6, 6), (6, 6, 6), (6, 3, 6), (4, 4, 4), (3, 4, 5)])
def test_same_length_mask_is_the_reference_slice(mem_len, length, window):
    M = max(window, mem_len + length)
    ones = torch.ones(2 * M, 2 * M)
    ref = (torch.triu(ones, diagonal=1) + torch.tril(ones, diagonal=-1 - window)) * -10000.0
    ref = ref[mem_len : mem_len + length, : mem_len + length]
    assert torch.equal(attention_mask(mem_len, length, window), ref)
    train_ref = (torch.triu(ones, diagonal=1) * -10000.0)[mem_len : mem_len + length, : mem_len + length]
    assert torch.equal(attention_mask(mem_len, length), train_ref)


def test_same_length_mask_sees_m_plus_one_keys():
    M = 7
    warm = attention_mask(M, M, window=M)
    assert warm.unique().tolist() == [-10000.0, 0.0]
    assert (warm == 0).sum(1).tolist() == [M + 1] * M
    first = attention_mask(0, M, window=M)
    assert (first == 0).sum(1).tolist() == list(range(1, M + 1))
    train = attention_mask(M, M)
    assert (train == 0).sum(1).tolist() == [M + 1 + i for i in range(M)]


def test_init_and_attention_placement():
    torch.manual_seed(0)
    d, p, drop = 32, 8, 0.36
    model = SRUpp(d, d, p, num_layers=10, dropout=drop, attention_every_n_layers=5)
    assert [i for i, a in enumerate(model.attends) if a] == [4, 9]
    for i, layer in enumerate(model.rnn_lst):
        t = layer.transform_module
        assert isinstance(t, SRUppAttention if i in (4, 9) else SRUppProjectedLinear)
        assert torch.equal(layer.bias[d:], torch.full((d,), -2.0)) and torch.equal(layer.bias[:d], torch.zeros(d))
        assert layer.dropout == (drop if i < 9 else 0.0)  # recurrence dropout not in the last layer
        assert t.dropout.p == drop  # the transform's dropout on every layer
        assert torch.equal(t.layer_norm.weight, torch.ones(p)) and torch.equal(t.layer_norm.bias, torch.zeros(p))
        out = t.linear3 if isinstance(t, SRUppAttention) else t.linear2
        bound = math.sqrt(6 / (p + 3 * d)) * math.sqrt(1 - drop)  # Xavier × √(1 − dropout)
        assert bound * 0.95 < out.weight.abs().max() <= bound
        if isinstance(t, SRUppAttention):
            assert t.alpha.item() == 0.0
            assert t.linear2.weight.shape == (2 * p, p)
            assert t.linear2.weight.abs().max() <= math.sqrt(6 / (3 * p))


def test_oracle_srupp_3_0_0_dev6():
    sru = pytest.importorskip("sru")
    if not hasattr(sru, "SRUpp"):
        pytest.skip("needs sru 3.0.0.dev6 (pip install --pre sru==3.0.0.dev6)")
    torch.manual_seed(0)
    ref = sru.SRUpp(12, 16, 8, num_layers=3, dropout=0.1, attn_dropout=0.1, num_heads=2,
                    attention_every_n_layers=2)
    with torch.no_grad():
        for q in ref.parameters():
            q.add_(0.3 * torch.randn_like(q))
    ours = SRUpp(12, 16, 8, num_layers=3, dropout=0.1, attn_dropout=0.1, num_heads=2, attention_every_n_layers=2)
    ours.load_state_dict(ref.state_dict())
    ref.eval()
    ours.eval()
    x1, x2 = torch.randn(6, 3, 12), torch.randn(4, 3, 12)
    with torch.no_grad():
        h, c, saved = ref(x1, attn_mask=attention_mask(0, 6))
        h_, c_, saved_ = ours(x1, attn_mask=attention_mask(0, 6))
        assert (h - h_).abs().max() <= 1e-5 and (c - c_).abs().max() <= 1e-5
        m2 = attention_mask(6, 4, window=6)
        h, c, _ = ref(x2, c, memory=saved["saved_inputs"], attn_mask=m2)
        h_, c_, _ = ours(x2, c_, memory=saved_, attn_mask=m2)
    assert (h - h_).abs().max() <= 1e-5 and (c - c_).abs().max() <= 1e-5


# -- published sizes ---------------------------------------------------------------------------


class _Vocab:
    """Just what the decoder reads from a dictionary (a 793k-word Dictionary is slow to build)."""

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def pad(self):
        return 1

    def eos(self):
        return 2

    def unk(self):
        return 3

    def bos(self):
        return 0


def _arch_cfg(arch):
    cfg = Namespace()
    getattr(srupp_models, arch)(cfg)
    for k, v in vars(SruppConfig()).items():
        if not hasattr(cfg, k):
            setattr(cfg, k, v)
    return cfg


@pytest.mark.parametrize(
    "arch,vocab,published",
    [
        ("srupp_enwik8_base", 209, 107.6e6),
        ("srupp_enwik8_large", 209, 190.6e6),
        ("srupp_wt103_base", 267_744, 147.7e6),
        ("srupp_wt103_large", 267_744, 231.7e6),
        ("srupp_wt103_large_k5", 267_744, 225e6),
        ("srupp_lm1b_base", 793_472, 328e6),
        ("srupp_lm1b_large_k5", 793_472, 465e6),
    ],
)
def test_published_parameter_counts(arch, vocab, published, monkeypatch):
    # normal_ on meta tensors imports torch._dynamo (seconds); values do not matter for a count
    monkeypatch.setattr(torch.nn.init, "normal_", lambda tensor, *args, **kwargs: tensor)
    # vocabularies as fairseq-preprocess makes them: 4 specials (+ padding to 8 for WT103)
    with torch.device("meta"):
        decoder = SruDecoder(_arch_cfg(arch), _Vocab(vocab), attention=True)
    count = sum(p.numel() for p in decoder.parameters())
    assert abs(count - published) / published < 0.01, count


# -- the LM decoder ----------------------------------------------------------------------------


def _decoder(vocab=40, attention=True, **overrides):
    base = dict(n_d=12, n_proj=6, depth=3, dropout=0.1, attn_dropout=0.1, attn_every=2)
    base.update(overrides)
    torch.manual_seed(0)
    return SruDecoder(model_cfg(SruppConfig, **base), dictionary_of_size(vocab), attention=attention)


def test_decoder_eval_windows_use_previous_window_memory_and_same_length_mask():
    dec = _decoder()
    _perturb(dec.rnn)
    dec.eval()
    assert dec.attends == [False, True, False]
    tokens = torch.randint(4, 40, (10, 2))
    state = dec.init_state(2, dec.embed_tokens.weight)
    assert state[0].shape == (3, 2, 12) and all(m.shape == (0, 2, 12) for m in state[1])
    with torch.no_grad():
        h1, _, state = dec.run(tokens[:6], state)
        assert [m.size(0) for m in state[1]] == [0, 6, 0]  # only attention layers keep a memory
        h2, _, state2 = dec.run(tokens[6:], state)
        # by hand: memory = the layers' inputs of window 1, same-length window max(6, 4) = 6
        x1, x2 = dec.embed_tokens(tokens[:6]), dec.embed_tokens(tokens[6:])
        r1, c1, saved = dec.rnn(x1, attn_mask=attention_mask(0, 6, window=6))
        r2, c2, _ = dec.rnn(x2, c1, memory=saved, attn_mask=attention_mask(6, 4, window=6))
    assert torch.allclose(h1, r1, atol=1e-6) and torch.allclose(h2, r2, atol=1e-6)
    assert torch.allclose(state2[0], c2, atol=1e-6)
    assert torch.equal(state[1][1], saved[1])


def test_decoder_training_memory_is_fully_visible_and_memory_len_rolls():
    dec = _decoder(memory_len=8)
    dec.train()
    state = dec.init_state(2, dec.embed_tokens.weight)
    sizes = []
    for _ in range(3):
        _, _, state = dec.run(torch.randint(4, 40, (5, 2)), state)
        sizes.append(state[1][1].size(0))
    assert sizes == [5, 8, 8]
    dec = _decoder(eval_memory_len=3).eval()
    state = dec.init_state(1, dec.embed_tokens.weight)
    with torch.no_grad():
        for _ in range(2):
            _, _, state = dec.run(torch.randint(4, 40, (5, 1)), state)
    assert state[1][1].size(0) == 3


@pytest.mark.parametrize("untie_proj", [False, True])
def test_adaptive_softmax_ties_and_matches_fairseq_adaptive_loss(untie_proj):
    from fairseq.criterions.adaptive_loss import AdaptiveLoss

    dec = _decoder(vocab=64, adaptive_softmax_cutoff="20,40", n_e=8, div_val=2.0, emb_dropout=0.2,
                   untie_adaptive_proj=untie_proj)
    ai, asm = dec.embed_tokens, dec.adaptive_softmax
    for band in range(3):
        emb, proj = ai.weights_for_band(band)
        if band == 0:
            head_proj = asm.head.word_proj[0].weight
            assert asm.head.word_proj[2].weight is emb
        else:
            head_proj = asm.tail[band - 1][0].weight
            assert asm.tail[band - 1][2].weight is emb
        assert (head_proj is proj) != untie_proj
    assert asm.dropout_module.p == 0.0 and asm.head.word_proj[1].p == 0.2
    assert ai.dropout_module.p == 0.2

    dec.eval()
    tokens = torch.randint(4, 64, (2, 7))
    target = torch.randint(4, 64, (2, 8))[:, 1:]  # a column slice, as the stream task gives
    target = target.masked_fill((target == 21) | (target == 41), 30)  # see the quirk below
    features, _ = dec(tokens)
    nll = dec.nll(features, target)
    lprobs = dec.get_normalized_probs((features, None), log_probs=True, sample={"target": target})
    assert torch.allclose(-lprobs.gather(-1, target.unsqueeze(-1)).view(-1), nll, atol=1e-5)
    full = dec.get_normalized_probs((features, None), log_probs=False)
    assert torch.allclose(full.sum(-1), torch.ones(2, 7), atol=1e-5)

    class _Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.decoder = dec

        def forward(self, src_tokens):
            return dec(src_tokens)

        def get_targets(self, sample, net_output):
            return srupp_models.SruppModel.get_targets(self, sample, net_output)

    crit = AdaptiveLoss(Namespace(target_dictionary=dictionary_of_size(64)), sentence_avg=False)
    loss, _, _ = crit(_Model(), {"net_input": {"src_tokens": tokens}, "target": target})
    assert torch.allclose(loss, nll.sum(), atol=1e-4)
    # fairseq quirk: adaptive_loss passes ignore_index=pad (1) to the tail cross-entropies, whose
    # targets are relative to the cluster start, so word cutoff+1 of every tail gets no tail loss
    target[0, 0] = 21
    loss, _, _ = crit(_Model(), {"net_input": {"src_tokens": tokens}, "target": target})
    features, _ = dec(tokens)
    assert loss.item() < dec.nll(features, target).sum().item() - 1e-3


def test_plain_sru_decoder_and_bad_options():
    from awd_plugins.errors import AwdUserError

    dec = _decoder(attention=False, n_proj=0, tie_weights=True)
    assert dec.output_projection.weight is dec.embed_tokens.weight
    out, extra = dec(torch.randint(4, 40, (2, 5)))
    assert out.shape == (2, 5, 40) and extra["raw_out"].shape == (2, 5, 12)
    with pytest.raises(AwdUserError, match="n-proj"):
        _decoder(n_proj=5, attn_heads=2)
    with pytest.raises(AwdUserError, match="adaptive-softmax-cutoff"):
        _decoder(adaptive_softmax_cutoff="30,20")


# -- optimisation (§8.5) -----------------------------------------------------------------------


def _radam(params, lr=0.01, wd=0.1):
    cfg = OmegaConf.structured(RAdamDecoupledConfig)
    cfg.lr, cfg.weight_decay = [lr], wd
    return RAdamDecoupled(cfg, params)


def test_radam_weight_decay_is_decoupled_and_matches_the_rectified_update():
    p = torch.nn.Parameter(torch.ones(3))
    opt = _radam([p], lr=0.1, wd=0.5)
    p.grad = torch.zeros(3)
    opt.step()
    assert torch.allclose(p.detach(), torch.full((3,), 0.95))  # p ← p − lr·wd·p, no gradient coupling

    # reference RAdam (Liu et al.), decoupled decay, momentum step while ρ_t ≤ 5
    torch.manual_seed(0)
    q = torch.nn.Parameter(torch.randn(5))
    ref = q.detach().clone()
    opt = _radam([q], lr=0.01, wd=0.1)
    m, v = torch.zeros(5), torch.zeros(5)
    b1, b2, rho_inf = 0.9, 0.999, 2 / (1 - 0.999) - 1
    for t in range(1, 9):
        g = torch.randn(5)
        q.grad = g.clone()
        opt.step()
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        rho = rho_inf - 2 * t * b2**t / (1 - b2**t)
        ref = ref * (1 - 0.01 * 0.1)
        if rho > 5:
            rect = math.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
            ref = ref - 0.01 * rect * math.sqrt(1 - b2**t) / (1 - b1**t) * m / (v.sqrt() + 1e-8)
        else:
            ref = ref - 0.01 * m / (1 - b1**t)
        assert torch.allclose(q.detach(), ref, atol=1e-6), t


@pytest.mark.parametrize("warmup,from_zero", [(5, False), (5, True), (0, False)])
def test_schedule_equals_reference_warmup_then_chained_cosine(warmup, from_zero):
    total, lr = 40, 0.3
    # the reference loop: set the warmup lr, step, CosineAnnealingLR.step() after every update
    p = torch.nn.Parameter(torch.zeros(1))
    sgd = torch.optim.SGD([p], lr=lr)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(sgd, total)
    expected = []
    for n in range(total):
        if n < warmup:
            sgd.param_groups[0]["lr"] = lr * (n if from_zero else n + 1) / warmup
        expected.append(sgd.param_groups[0]["lr"])
        sgd.step()
        cosine.step()

    cfg = OmegaConf.structured(SruppCosineConfig)
    cfg.warmup_updates, cfg.warmup_from_zero, cfg.lr, cfg.max_update = warmup, from_zero, [lr], total
    opt = _radam([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    sched = SruppCosineSchedule(cfg, opt)
    ours = [opt.get_lr()] + [sched.step_update(n) for n in range(1, total)]
    assert ours == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert sched.step_update(total) == 0.0
