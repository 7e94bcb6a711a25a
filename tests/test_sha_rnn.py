"""SHA-RNN (REFERENCE §7.1–7.5, fidelity checks §7.8) against the golden vectors of
Smerity/sha-rnn and the equations of the block."""

import math

import pytest
import torch
import torch.nn.functional as F
from _helpers import dictionary_of_size as dictionary
import awd_plugins  # noqa: F401  (registers everything)
from awd_plugins.errors import AwdUserError
from awd_plugins.models.sha_rnn import (
    ShaRnnConfig,
    ShaRnnDecoder,
    ShaRnnModel,
    map_reference_state_dict,
    parse_attention_blocks,
    sha_rnn_enwik8,
    sha_rnn_enwik8_full,
)
from awd_plugins.modules.boom import Boom, sigmoid_gelu
from awd_plugins.modules.sha_block import ShaBlock
from awd_plugins.modules.single_head_attention import causal_memory_mask


def build(vocab=20, **overrides):
    cfg = ShaRnnConfig(**{"emsize": 8, "nhid": 24, "nlayers": 3, **overrides})
    return ShaRnnModel(ShaRnnDecoder(cfg, dictionary(vocab)))


def randomise_constants(model, seed=0):
    """LayerNorm affines and attention gates off their constant init (the stock init hides ordering errors)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".ln" in name or name.endswith(("qs", "ks", "vs")) or ".qln." in name:
                p.add_(torch.randn(p.shape, generator=g) * 0.5)


# -- golden vectors -------------------------------------------------------------------------

@pytest.mark.parametrize("variant", ["stock", "perturbed"])
def test_golden_two_windows_with_carried_state(golden, variant):
    g = golden("sha_rnn.pt")
    c = g["config"]
    ref = g if variant == "stock" else g["perturbed"]
    model = ShaRnnModel(ShaRnnDecoder(
        ShaRnnConfig(emsize=c["ninp"], nhid=c["nhid"], nlayers=c["nlayers"], dropout=c["dropout"],
                     dropouth=c["dropouth"], dropouti=c["dropouti"], memory_len=c["num_max_positions"]),
        dictionary(c["ntoken"]),
    ))
    assert model.decoder.attention_blocks == [c["nlayers"] - 2]
    model.load_state_dict(map_reference_state_dict(ref["state_dict"]), strict=True)
    model.eval()
    decoder = model.decoder
    pos = 0
    for window in ("w1", "w2"):
        tokens = g[f"tokens_{window}"]  # T×B
        with torch.no_grad():
            logits, extra = decoder(tokens.t(), carry_key="golden", carry_pos=pos)
        pos += tokens.size(0)
        want = ref[window]
        assert (extra["raw_out"].transpose(0, 1) - want["output"]).abs().max() <= 1e-5
        logprobs = model.get_normalized_probs((logits, extra), log_probs=True).transpose(0, 1)
        assert (logprobs - want["logprobs"]).abs().max() <= 1e-5
        state = decoder._carried["golden"].state_out
        for block, (h, c_, memory) in enumerate(state):
            assert (h - want["hidden"][block][0]).abs().max() <= 1e-5
            assert (c_ - want["hidden"][block][1]).abs().max() <= 1e-5
            if want["mems"][block].numel() == 0:
                assert memory.shape == (0, g["batch_size"], c["ninp"])
            else:
                assert memory.shape == want["mems"][block].shape
                assert (memory - want["mems"][block]).abs().max() <= 1e-5


def test_perturbed_golden_detects_swapped_layernorms(golden):
    """The perturbed set really tests the order: swapping LN_ff and LN_xff breaks it."""
    g = golden("sha_rnn.pt")
    c = g["config"]
    sd = map_reference_state_dict(g["perturbed"]["state_dict"])
    for b in range(c["nlayers"]):
        for suffix in ("weight", "bias"):
            a, x = f"decoder.blocks.{b}.lnff.{suffix}", f"decoder.blocks.{b}.lnxff.{suffix}"
            sd[a], sd[x] = sd[x], sd[a]
    model = ShaRnnModel(ShaRnnDecoder(ShaRnnConfig(emsize=c["ninp"], nhid=c["nhid"], nlayers=c["nlayers"]),
                                      dictionary(c["ntoken"])))
    model.load_state_dict(sd)
    model.eval()
    with torch.no_grad():
        raw, _, _ = model.decoder.run(g["tokens_w1"], model.decoder.init_state(g["batch_size"], raw_like(model)))
    assert (raw - g["perturbed"]["w1"]["output"]).abs().max() > 1e-2


def raw_like(model):
    return model.decoder.embed_tokens.weight


# -- block, attention, Boom -------------------------------------------------------------------

def test_block_order_matches_the_written_equations():
    torch.manual_seed(0)
    d, T, B, M = 6, 5, 2, 3
    block = ShaBlock(d, 18, dropout=0.0, use_attention=True, memory_len=50)
    with torch.no_grad():
        for p in block.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    block.eval()
    x, memory = torch.randn(T, B, d), torch.randn(M, B, d)
    hidden = (torch.randn(1, B, d), torch.randn(1, B, d))

    def ln(name, t):
        m = getattr(block, name)
        return F.layer_norm(t, (d,), m.weight, m.bias, eps=1e-12)

    a = block.attn
    r, (h_n, c_n) = block.rnn(ln("lnstart", x), hidden)
    keys = ln("lnmem", r)
    q_in = ln("lnmid", r)
    big = torch.cat([memory, keys])
    q = F.layer_norm(F.linear(q_in, a.q.weight, a.q.bias), (d,), a.qln.weight, a.qln.bias, eps=1e-12) * torch.sigmoid(a.qs)
    k = big * torch.sigmoid(a.ks)
    cf = F.linear(torch.sigmoid(a.vs), a.vq.l1.weight, a.vq.l1.bias)
    v = big * (torch.sigmoid(cf[..., d:]) * torch.tanh(cf[..., :d]))
    out = torch.empty(T, B, d)
    for b in range(B):
        scores = q[:, b] @ k[:, b].T / math.sqrt(d)
        for t in range(T):
            scores[t, M + t + 1:] = float("-inf")
        out[:, b] = torch.softmax(scores, -1) @ v[:, b]
    h = q_in + out
    u = sigmoid_gelu(F.linear(ln("lnxff", h), block.ff.linear1.weight, block.ff.linear1.bias))
    want = ln("lnff", h) + u.view(T, B, 3, d).sum(2)

    with torch.no_grad():
        got, (h2, c2), new_memory = block(x, hidden, memory)
    assert (got - want).abs().max() <= 1e-5
    assert (h2 - h_n).abs().max() <= 1e-6 and (c2 - c_n).abs().max() <= 1e-6
    assert (new_memory - big).abs().max() <= 1e-6


def test_no_residual_around_the_lstm():
    """With Boom zeroed and no attention the block is LN_ff(LSTM(LN_start(x))): the input is not added back."""
    torch.manual_seed(1)
    d = 5
    block = ShaBlock(d, 10, use_attention=False).eval()
    with torch.no_grad():
        block.ff.linear1.weight.zero_()
        block.ff.linear1.bias.zero_()
    x = torch.randn(4, 2, d) * 3
    zeros = (torch.zeros(1, 2, d), torch.zeros(1, 2, d))
    with torch.no_grad():
        got, _, memory = block(x, zeros, torch.zeros(0, 2, d))
        r, _ = block.rnn(block.lnstart(x), zeros)
    assert torch.allclose(got, block.lnff(r), atol=1e-6)
    assert memory.shape == (0, 2, d)


def test_gates_are_one_half_and_layernorms_one_zero_at_init():
    model = build(vocab=30, emsize=16, nhid=32, nlayers=4, attention_blocks="all")
    for block in model.decoder.blocks:
        a = block.attn
        for gate in (a.qs, a.ks, a.vs):
            assert torch.equal(torch.sigmoid(gate), torch.full_like(gate, 0.5))
        assert torch.equal(a.qkvs, torch.zeros_like(a.qkvs)) and torch.equal(a.r_gate, torch.ones_like(a.r_gate))
    layernorms = [m for m in model.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert len(layernorms) == 4 * 6 + 4  # six per block plus each attention's query LayerNorm
    for m in layernorms:
        assert m.eps == 1e-12
        assert torch.equal(m.weight, torch.ones_like(m.weight)) and torch.equal(m.bias, torch.zeros_like(m.bias))


def test_linear_and_embedding_init():
    torch.manual_seed(3)
    d = 64
    model = build(vocab=400, emsize=d, nhid=256, nlayers=2)
    std = 0.1 / math.sqrt(d)
    dec = model.decoder
    assert dec.output_projection.weight is dec.embed_tokens.weight
    for w in (dec.embed_tokens.weight, dec.blocks[0].attn.q.weight, dec.blocks[0].attn.vq.l1.weight,
              dec.blocks[1].ff.linear1.weight):
        assert abs(w.std().item() / std - 1) < 0.1
    for b in (dec.output_projection.bias, dec.blocks[0].attn.q.bias, dec.blocks[1].ff.linear1.bias):
        assert torch.equal(b, torch.zeros_like(b))
    # the LSTM keeps torch's U(±1/√d)
    w_hh = dec.blocks[0].rnn.weight_hh_l0
    assert w_hh.abs().max() <= 1 / math.sqrt(d) and w_hh.std() > 3 * std


def test_boom_width_is_the_sum_of_chunks():
    torch.manual_seed(2)
    boom = Boom(4, 16)
    x = torch.randn(3, 2, 4)
    u = sigmoid_gelu(boom.linear1(x))
    assert boom(x).shape == (3, 2, 4)
    assert torch.allclose(boom(x), u[..., 0:4] + u[..., 4:8] + u[..., 8:12] + u[..., 12:16], atol=1e-6)
    assert torch.allclose(sigmoid_gelu(torch.tensor([1.0])), torch.tensor([1.0]) * torch.sigmoid(torch.tensor([1.702])))
    odd = Boom(4, 10)  # two whole chunks, the last two features are ignored as in the reference
    u = sigmoid_gelu(odd.linear1(x))
    assert torch.allclose(odd(x), u[..., 0:4] + u[..., 4:8], atol=1e-6)


def test_causal_memory_mask():
    mask = causal_memory_mask(3, 2, torch.zeros(1))
    inf = float("-inf")
    assert mask.tolist() == [[0, 0, 0, inf, inf], [0, 0, 0, 0, inf], [0, 0, 0, 0, 0]]


# -- model-level behaviour ---------------------------------------------------------------------

def eval_model(**kw):
    torch.manual_seed(4)
    model = build(vocab=25, **kw)
    randomise_constants(model)
    return model.eval()


def test_causality_with_and_without_memory():
    model = eval_model(attention_blocks="all")
    dec = model.decoder
    torch.manual_seed(5)
    first, tokens = torch.randint(4, 25, (6, 2)), torch.randint(4, 25, (8, 2))
    with torch.no_grad():
        _, _, after_first = dec.run(first, dec.init_state(2, raw_like(model)))
        for state in (dec.init_state(2, raw_like(model)), after_first):
            base, _, _ = dec.run(tokens, state)
            for t in (0, 3, 7):
                changed = tokens.clone()
                changed[t] = (changed[t] + 1 - 4) % 21 + 4
                out, _, _ = dec.run(changed, state)
                assert torch.equal(out[:t], base[:t])
                assert (out[t] - base[t]).abs().max() > 1e-4


def test_two_windows_with_memory_equal_one_long_window():
    model = eval_model(attention_blocks="all")
    dec = model.decoder
    torch.manual_seed(6)
    tokens = torch.randint(4, 25, (14, 3))
    with torch.no_grad():
        whole, _, state_whole = dec.run(tokens, dec.init_state(3, raw_like(model)))
        a, _, state = dec.run(tokens[:9], dec.init_state(3, raw_like(model)))
        b, _, state = dec.run(tokens[9:], state)
    assert (torch.cat([a, b]) - whole).abs().max() <= 1e-5
    for (h1, c1, m1), (h2, c2, m2) in zip(state, state_whole):
        assert m1.shape == (14, 3, 8)
        assert (h1 - h2).abs().max() <= 1e-5 and (m1 - m2).abs().max() <= 1e-5


def test_memory_cap_keeps_at_most_5000_keys():
    """Default cap 5000 (REFERENCE §7.4): memory is cut to its last 5000 − T rows before the
    call, so memory plus window never exceed 5000 keys, and the last 5000 rows are kept."""
    torch.manual_seed(7)
    model = build(vocab=12, emsize=4, nhid=8, nlayers=2).eval()  # attention in block 0
    dec = model.decoder
    assert dec.attention_blocks == [0] and dec.blocks[0].memory_len == 5000
    seen = []
    dec.blocks[0].attn.register_forward_hook(lambda m, args, out: seen.append(args[1].size(0)))
    T = 20
    for old_len, keys in ((3000, 3020), (4980, 5000), (4990, 5000), (5000, 5000)):
        state = dec.init_state(2, raw_like(model))
        old = torch.randn(old_len, 2, 4)
        state[0] = (state[0][0], state[0][1], old)
        with torch.no_grad():
            _, _, new_state = dec.run(torch.randint(4, 12, (T, 2)), state)
        memory = new_state[0][2]
        assert seen[-1] == keys
        assert memory.size(0) == keys
        kept = keys - T
        assert torch.equal(memory[:kept], old[old_len - kept:])


def test_memory_keeps_the_latest_rows_across_windows():
    """Block 0's memory (LN_mem of its LSTM output) does not depend on the cap, so a capped run's
    memory is the last ``cap`` rows of an uncapped run's; the span never exceeds the cap."""
    torch.manual_seed(8)
    capped = ShaRnnDecoder(ShaRnnConfig(emsize=4, nhid=8, nlayers=2, memory_len=7), dictionary(12)).eval()
    uncapped = ShaRnnDecoder(ShaRnnConfig(emsize=4, nhid=8, nlayers=2, memory_len=10**6), dictionary(12)).eval()
    uncapped.load_state_dict(capped.state_dict())
    seen = []
    capped.blocks[0].attn.register_forward_hook(lambda m, args, out: seen.append(args[1].size(0)))
    s_cap = capped.init_state(1, capped.embed_tokens.weight)
    s_all = uncapped.init_state(1, uncapped.embed_tokens.weight)
    with torch.no_grad():
        for _ in range(5):
            tokens = torch.randint(4, 12, (3, 1))
            _, _, s_cap = capped.run(tokens, s_cap)
            _, _, s_all = uncapped.run(tokens, s_all)
            assert torch.equal(s_cap[0][2], s_all[0][2][-7:])
    assert seen == [3, 6, 7, 7, 7]
    assert s_all[0][2].size(0) == 15 and s_cap[1][2].shape == (0, 1, 4)


def test_memory_len_option_and_window_longer_than_the_cap():
    model = build(memory_len=5, attention_blocks="0").eval()
    dec = model.decoder
    with torch.no_grad():
        _, _, state = dec.run(torch.randint(4, 20, (3, 2)), dec.init_state(2, raw_like(model)))
        assert state[0][2].size(0) == 3
        _, _, state = dec.run(torch.randint(4, 20, (4, 2)), state)  # 1 memory row kept + 4 → 5
        assert state[0][2].size(0) == 5
        _, _, state = dec.run(torch.randint(4, 20, (7, 2)), state)  # no room: the window alone, last 5 kept
        assert state[0][2].size(0) == 5


def test_incremental_decoding_equals_the_full_forward():
    model = eval_model(attention_blocks="all")
    tokens = torch.randint(4, 25, (2, 7))
    with torch.no_grad():
        full, _ = model.decoder(tokens)
        incremental = {}
        steps = [model.decoder(tokens[:, : t + 1], incremental_state=incremental)[0] for t in range(7)]
    assert (torch.cat(steps, dim=1) - full).abs().max() <= 1e-5


def test_cache_pointer_with_lambda_zero_is_the_base_model():
    model = eval_model()
    model.set_pointer(window=10, theta=1.0, lambdasm=0.0)
    tokens = torch.randint(4, 25, (1, 12))
    sample = {"net_input": {"src_tokens": tokens[:, :-1], "carry_key": "eval", "carry_pos": 0}, "target": tokens[:, 1:]}
    with torch.no_grad():
        out = model(**sample["net_input"])
        mixed = model.get_normalized_probs(out, log_probs=True, sample=sample)
        base = F.log_softmax(out[0].float(), dim=-1)
    assert (mixed - base).abs().max() <= 1e-5


def test_training_mode_uses_dropout_and_backpropagates():
    model = build(dropout=0.3, dropouth=0.3, dropouti=0.3, wdrop=0.2)
    model.train()
    tokens = torch.randint(4, 20, (2, 6))
    a, _ = model.decoder(tokens)
    b, _ = model.decoder(tokens)
    assert not torch.equal(a, b)
    F.cross_entropy(a.reshape(-1, 20), tokens.reshape(-1)).backward()
    assert model.decoder.blocks[1].attn.qs.grad.abs().sum() > 0
    assert model.decoder.blocks[0].rnn.module.weight_hh_l0.grad is not None


# -- configuration -----------------------------------------------------------------------------

def test_attention_placement_and_named_architectures():
    assert parse_attention_blocks("auto", 4) == [2]
    assert parse_attention_blocks("all", 3) == [0, 1, 2]
    assert parse_attention_blocks("none", 3) == []
    assert parse_attention_blocks("0,-1", 4) == [0, 3]
    with pytest.raises(AwdUserError, match="does not exist"):
        parse_attention_blocks("4", 4)
    with pytest.raises(AwdUserError, match="attention-blocks"):
        parse_attention_blocks("middle", 4)

    class Args:
        pass

    single, full = Args(), Args()
    sha_rnn_enwik8(single)
    sha_rnn_enwik8_full(full)
    assert (single.emsize, single.nhid, single.nlayers, single.dropout, single.dropouth, single.dropouti) == (
        1024, 4096, 4, 0.1, 0.1, 0.1)
    assert single.attention_blocks == "auto" and full.attention_blocks == "all" and full.nhid == 4096


def test_bad_sizes_are_user_errors():
    with pytest.raises(AwdUserError, match="--nhid"):
        build(emsize=16, nhid=8)
    with pytest.raises(AwdUserError, match="--memory-len"):
        build(memory_len=0)
    with pytest.raises(AwdUserError, match="dropouth"):
        build(dropouth=1.0)


def count(attention_blocks):
    with torch.device("meta"):
        cfg = ShaRnnConfig(attention_blocks=attention_blocks)
        sha_rnn_enwik8(cfg)
        model = ShaRnnModel(ShaRnnDecoder(cfg, dictionary(205)))
    return sum(p.numel() for p in model.parameters())


def test_published_parameter_counts():
    """REFERENCE §7.8: ≈53.8M (attention in block 2) and ≈63.3M (all blocks) with V = 205."""
    d, n, V = 1024, 4096, 205
    block = (8 * d * d + 8 * d) + (d * n + n) + 6 * 2 * d  # LSTM (two biases), Boom linear1, six LayerNorms
    attention = 3 * d * d + 12 * d  # q, Overparam, qln, qs/ks/vs, qkvs, r_gate
    tied = V * d + V
    single, full = count("auto"), count("all")
    assert single == 4 * block + attention + tied == 53_798_093
    assert full == 4 * block + 4 * attention + tied == 63_272_141
    assert round(single / 1e6, 1) == 53.8 and round(full / 1e6, 1) == 63.3
