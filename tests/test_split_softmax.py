"""Split softmax against the golden reference vectors and REFERENCE §4.2."""

import pytest
import torch
import torch.nn.functional as F

from awd_plugins.modules import SplitSoftmax
from awd_plugins.modules.split_softmax import parse_splits, published_splits


def _module(golden, state):
    sm = SplitSoftmax(golden["weight"].size(1), [10, 20])
    sm.load_state_dict(state)
    return sm


def test_golden_three_clusters(golden):
    g = golden("splitcross.pt")
    sm = _module(g, g["state_dict"])
    w, b, h = g["weight"], g["bias"], g["hiddens"]
    assert torch.allclose(sm.log_prob(h, w, b), g["logprob"], atol=1e-5)
    assert abs(sm.nll(h, g["targets"], w, b).mean().item() - g["loss"].item()) <= 1e-5
    assert abs(sm.nll(h, g["targets_b"], w, b).mean().item() - g["loss_targets_b"].item()) <= 1e-5


def test_golden_zero_tombstones_and_single_split(golden):
    g = golden("splitcross.pt")
    z = g["zero_tombstones"]
    sm = _module(g, {k: torch.zeros_like(v) for k, v in g["state_dict"].items()})
    w, b, h = g["weight"], g["bias"], g["hiddens"]
    assert torch.allclose(sm.log_prob(h, w, b), z["logprob"], atol=1e-5)
    assert abs(sm.nll(h, g["targets"], w, b).mean().item() - z["loss"].item()) <= 1e-5
    single = SplitSoftmax(h.size(1), [])
    assert abs(single.nll(h, g["targets"], w, b).mean().item() - g["single_split"]["loss"].item()) <= 1e-5


def test_no_split_equals_cross_entropy_with_same_gradients():
    torch.manual_seed(0)
    h = torch.randn(11, 6, requires_grad=True)
    w, b, y = torch.randn(40, 6), torch.randn(40), torch.randint(0, 40, (11,))
    SplitSoftmax(6, []).nll(h, y, w, b).mean().backward()
    g1 = h.grad.clone()
    h.grad = None
    ref = F.cross_entropy(h @ w.t() + b, y)
    ref.backward()
    assert torch.allclose(g1, h.grad, atol=1e-6)


def test_split_is_a_distribution_and_matches_log_prob():
    torch.manual_seed(1)
    sm = SplitSoftmax(5, [4, 9, 15])
    torch.nn.init.normal_(sm.tail_vectors)
    h, w, b = torch.randn(30, 5), torch.randn(22, 5), torch.randn(22)
    lp = sm.log_prob(h, w, b)
    assert torch.allclose(lp.exp().sum(-1), torch.ones(30), atol=1e-5)
    y = torch.randint(0, 22, (30,))
    assert torch.allclose(sm.nll(h, y, w, b), -lp.gather(1, y[:, None]).squeeze(1), atol=1e-5)
    # a batch whose targets miss whole clusters works too
    y_head = torch.randint(0, 4, (30,))
    assert torch.allclose(sm.nll(h, y_head, w, b), -lp.gather(1, y_head[:, None]).squeeze(1), atol=1e-5)


def test_zero_tombstones_give_each_tail_mass_one_over_head_partition():
    sm = SplitSoftmax(3, [4, 8])
    h, w, b = torch.randn(2, 3), torch.randn(12, 3), torch.zeros(12)
    lp = sm.log_prob(h, w, b).exp()
    z_head = (h @ w[:4].t()).exp().sum(-1) + 2  # two tombstone logits of 0
    assert torch.allclose(lp[:, 4:8].sum(-1), 1 / z_head, atol=1e-6)


def test_gradcheck_split():
    torch.manual_seed(2)
    sm = SplitSoftmax(3, [3, 6]).double()
    h = torch.randn(5, 3, dtype=torch.double, requires_grad=True)
    w, b = torch.randn(9, 3, dtype=torch.double), torch.randn(9, dtype=torch.double)
    y = torch.tensor([0, 4, 7, 8, 2])
    assert torch.autograd.gradcheck(lambda x: sm.nll(x, y, w, b), (h,))


def test_split_choice_rules():
    assert published_splits(10008) == [] and published_splits(267_744) == [2800, 20000, 76000]
    assert published_splits(800_000) == [4200, 35000, 180000]
    assert parse_splits("none", 100) == [] and parse_splits("10,50", 100) == [10, 50]
    with pytest.raises(ValueError):
        parse_splits("50,10", 100)
