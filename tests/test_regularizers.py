"""Weight drop, embedding dropout and locked dropout, each on its own (REFERENCE §2.2–2.4)."""

import pytest
import torch
from torch import nn

from awd_plugins.modules import EmbeddingDropout, LockedDropout, WeightDrop


def test_locked_dropout_mask_shared_over_time_not_batch():
    torch.manual_seed(0)
    drop = LockedDropout(0.5).train()
    x = torch.ones(7, 4, 6)
    y = drop(x)
    assert torch.equal(y, y[:1].expand_as(y))  # same mask at every time step
    assert not torch.equal(y[:, 0], y[:, 1])  # different streams, different masks
    assert set(y.unique().tolist()) <= {0.0, 2.0}  # inverted dropout scaling 1/(1-p)


def test_locked_dropout_identity_in_eval_and_unbiased():
    drop = LockedDropout(0.3)
    x = torch.randn(5, 3, 4)
    assert torch.equal(drop.eval()(x), x)
    drop.train()
    torch.manual_seed(1)
    mean = torch.stack([drop(torch.ones(1, 200, 50)) for _ in range(40)]).mean()
    assert abs(mean.item() - 1.0) < 0.02


def test_locked_dropout_rejects_bad_probability():
    with pytest.raises(ValueError):
        LockedDropout(1.5)


def test_embedding_dropout_drops_whole_word_types():
    torch.manual_seed(0)
    emb = nn.Embedding(20, 8)
    drop = EmbeddingDropout(0.5).train()
    tokens = torch.tensor([[1, 2, 1, 3, 2, 1] * 5])
    out = drop(emb, tokens)
    zero = out.abs().sum(-1) == 0
    for tok in (1, 2, 3):
        rows = out[tokens == tok]
        assert bool(zero[tokens == tok].all()) or bool((~zero[tokens == tok]).all())
        if not zero[tokens == tok][0]:
            assert torch.allclose(rows, emb.weight[tok].expand_as(rows) / 0.5)


def test_embedding_dropout_eval_is_plain_lookup_and_rate_matches():
    emb = nn.Embedding(2000, 4)
    tokens = torch.arange(2000).unsqueeze(0)
    assert torch.equal(EmbeddingDropout(0.3).eval()(emb, tokens), emb(tokens))
    torch.manual_seed(3)
    out = EmbeddingDropout(0.3).train()(emb, tokens)
    frac = (out.abs().sum(-1) == 0).float().mean().item()
    assert abs(frac - 0.3) < 0.04
    # gradients reach the embedding only through kept rows
    out.sum().backward()
    dropped = (out.abs().sum(-1) == 0).squeeze(0)
    assert torch.all(emb.weight.grad[dropped] == 0) and torch.all(emb.weight.grad[~dropped] != 0)


def _lstm(seed=0):
    torch.manual_seed(seed)
    return nn.LSTM(5, 6)


def test_weight_drop_has_one_recurrent_parameter_and_state_dict_roundtrips():
    wd = WeightDrop(_lstm(), ["weight_hh_l0"], 0.5)
    names = [n for n, _ in wd.named_parameters()]
    assert names.count("module.weight_hh_l0") == 1 and len(names) == 4
    clone = WeightDrop(_lstm(1), ["weight_hh_l0"], 0.5)
    clone.load_state_dict(wd.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(wd.state_dict().values(), clone.state_dict().values()))


def test_weight_drop_equals_lstm_with_masked_weight():
    lstm = _lstm()
    wd = WeightDrop(lstm, ["weight_hh_l0"], 0.5).train()
    x = torch.randn(9, 3, 5)
    torch.manual_seed(42)
    out, _ = wd(x)
    torch.manual_seed(42)
    masked = torch.nn.functional.dropout(lstm.weight_hh_l0, 0.5, training=True)
    plain = _lstm()
    with torch.no_grad():
        plain.weight_hh_l0.copy_(masked)
    ref, _ = plain(x)
    assert torch.allclose(out, ref, atol=1e-6)


def test_weight_drop_mask_is_shared_over_time_first_step_unaffected():
    wd = WeightDrop(_lstm(), ["weight_hh_l0"], 0.5).train()
    x = torch.randn(6, 2, 5)
    a, _ = wd(x)
    b, _ = wd(x)
    # W_hh multiplies the zero initial state at t=0, so only later steps see the mask
    assert torch.allclose(a[0], b[0]) and not torch.allclose(a[1:], b[1:])


def test_weight_drop_eval_uses_raw_weight_unscaled():
    lstm = _lstm()
    wd = WeightDrop(lstm, ["weight_hh_l0"], 0.5).eval()
    x = torch.randn(4, 2, 5)
    assert torch.equal(wd(x)[0], _lstm()(x)[0])


def test_weight_drop_gradient_is_masked_and_scaled():
    lstm = _lstm()
    wd = WeightDrop(lstm, ["weight_hh_l0"], 0.5).train()
    x = torch.randn(5, 2, 5)
    torch.manual_seed(5)
    wd(x)[0].sum().backward()
    torch.manual_seed(5)
    mask = torch.nn.functional.dropout(torch.ones_like(lstm.weight_hh_l0), 0.5, training=True)
    grad = lstm.weight_hh_l0.grad
    assert torch.all(grad[mask == 0] == 0)
    assert (grad[mask != 0] != 0).float().mean() > 0.9


def test_weight_drop_rejects_unknown_weight():
    with pytest.raises(ValueError):
        WeightDrop(_lstm(), ["weight_hh_l9"], 0.5)
