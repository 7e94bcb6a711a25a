"""Minimum-trust LAMB (REFERENCE §7.7) and its warm-up through fairseq's ``fixed`` scheduler (§7.6)."""

import copy
import math

import pytest
import torch
from fairseq.optim import OPTIMIZER_REGISTRY
from fairseq.optim.lr_scheduler.fixed_schedule import FixedLRSchedule, FixedLRScheduleConfig

import awd_plugins  # noqa: F401
from awd_plugins.errors import AwdUserError
from awd_plugins.optim.min_trust_lamb import FairseqMinTrustLamb, MinTrustLamb, MinTrustLambConfig


def one_step(p0, grad, **kw):
    p = p0.clone().requires_grad_()
    opt = MinTrustLamb([p], **kw)
    p.grad = grad.clone()
    opt.step()
    return p.detach(), opt.state[p]


def test_golden_four_steps(golden):
    g = golden("lamb.pt")
    c = g["config"]
    params = [p.clone().requires_grad_() for p in g["params_init"]]
    opt = MinTrustLamb(params, lr=c["lr"], betas=c["betas"], eps=c["eps"], weight_decay=c["weight_decay"],
                       min_trust=c["min_trust"], adam=c["adam"])
    for step in range(g["steps"]):
        for p, grad in zip(params, g["grads"][step]):
            p.grad = grad.clone()
        opt.step()
        diag = g["diagnostics"][step]
        for i, p in enumerate(params):
            state = opt.state[p]
            assert (p.detach() - g["params_after_step"][step][i]).abs().max() <= 1e-6
            assert state["trust_ratio"].item() == pytest.approx(diag["trust_ratio"][i], rel=1e-5)
            assert state["weight_norm"].item() == pytest.approx(diag["weight_norm"][i], rel=1e-5, abs=1e-7)
            assert state["adam_norm"].item() == pytest.approx(diag["adam_norm"][i], rel=1e-5)
            assert (state["exp_avg"] - diag["exp_avg"][i]).abs().max() <= 1e-6
            assert (state["exp_avg_sq"] - diag["exp_avg_sq"][i]).abs().max() <= 1e-6
    # the file exercises the three special rules
    first = g["diagnostics"][0]
    assert first["weight_norm"][0] == 0.0 and first["trust_ratio"][0] == 1.0
    assert first["weight_norm"][1] == 10.0
    assert first["trust_ratio"][2] == 0.25


def test_no_bias_correction():
    g = torch.tensor([0.5, -2.0, 3.0])
    _, state = one_step(torch.ones(3), g, lr=0.1)
    assert torch.allclose(state["exp_avg"], 0.1 * g)
    assert torch.allclose(state["exp_avg_sq"], 0.001 * g * g)


def test_zero_tensor_gets_trust_one_and_moves():
    g = torch.tensor([1.0, -4.0])
    p, state = one_step(torch.zeros(2), g, lr=0.01, eps=1e-6, min_trust=0.25)
    u = 0.1 * g / (torch.sqrt(0.001 * g * g) + 1e-6)
    assert state["trust_ratio"].item() == 1.0
    assert torch.allclose(p, -0.01 * u)


def test_trust_floor():
    p0 = torch.full((4,), 1e-4)  # ‖p‖ = 2e-4, ‖u‖ ≈ 2: the raw ratio is ≈ 1e-4
    g = torch.tensor([1.0, 2.0, -3.0, 4.0])
    p, state = one_step(p0, g, lr=0.5, min_trust=0.25)
    u = 0.1 * g / (torch.sqrt(0.001 * g * g) + 1e-6)
    assert state["trust_ratio"].item() == 0.25
    assert torch.allclose(p, p0 - 0.5 * 0.25 * u)
    p_none, state_none = one_step(p0, g, lr=0.5, min_trust=None)
    assert state_none["trust_ratio"].item() == pytest.approx(2e-4 / u.norm().item(), rel=1e-5)


def test_weight_norm_is_clamped_at_ten():
    g = torch.tensor([[0.3, -1.0], [2.0, 0.1]])
    big = torch.tensor([[20.0, 1.0], [3.0, -7.0]])
    assert big.norm() > 10
    _, s1 = one_step(big, g, lr=1e-3)
    _, s2 = one_step(2 * big, g, lr=1e-3)
    assert s1["weight_norm"].item() == s2["weight_norm"].item() == 10.0
    assert s1["trust_ratio"].item() == pytest.approx(s2["trust_ratio"].item(), rel=1e-6)


def test_weight_decay_is_added_after_the_adam_ratio_and_trust_has_no_upper_clamp():
    p0 = torch.tensor([3.0, -4.0])  # ‖p‖ = 5
    g = torch.tensor([0.2, 0.1])
    wd, lr = 0.5, 0.01
    p, state = one_step(p0, g, lr=lr, weight_decay=wd, min_trust=0.25)
    u = 0.1 * g / (torch.sqrt(0.001 * g * g) + 1e-6) + wd * p0
    trust = 5.0 / u.norm()
    assert state["adam_norm"].item() == pytest.approx(u.norm().item(), rel=1e-6)
    assert trust > 1 and state["trust_ratio"].item() == pytest.approx(trust.item(), rel=1e-6)
    assert torch.allclose(p, p0 - lr * trust * u)


def test_without_min_trust_it_is_upstream_lamb():
    torch.manual_seed(0)
    p0, g1, g2 = torch.randn(3, 4), torch.randn(3, 4), torch.randn(3, 4)
    p = p0.clone().requires_grad_()
    opt = MinTrustLamb([p], lr=0.05, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.01, min_trust=None)
    m, v, q = torch.zeros(3, 4), torch.zeros(3, 4), p0.clone()
    for g in (g1, g2):
        p.grad = g.clone()
        opt.step()
        m = 0.8 * m + 0.2 * g
        v = 0.99 * v + 0.01 * g * g
        u = m / (v.sqrt() + 1e-6) + 0.01 * q
        q = q - 0.05 * (min(q.norm(), 10) / u.norm()) * u
    assert (p.detach() - q).abs().max() <= 1e-6


def test_adam_switch_forces_trust_one():
    p0, g = torch.full((3,), 1e-3), torch.tensor([1.0, 2.0, 3.0])
    p, state = one_step(p0, g, lr=0.1, min_trust=0.25, adam=True)
    u = 0.1 * g / (torch.sqrt(0.001 * g * g) + 1e-6)
    assert torch.allclose(p, p0 - 0.1 * u)
    assert state["trust_ratio"].item() == 0.25  # the diagnostic keeps the computed ratio, as the reference


def test_fairseq_wrapper_and_name():
    assert OPTIMIZER_REGISTRY["min_trust_lamb"] is FairseqMinTrustLamb
    assert OPTIMIZER_REGISTRY["lamb"] is not FairseqMinTrustLamb  # fairseq's apex FusedLAMB keeps its name
    p = torch.nn.Parameter(torch.ones(3))
    opt = FairseqMinTrustLamb(MinTrustLambConfig(lr=[2e-3]), [p])
    group = opt.optimizer.param_groups[0]
    assert (group["lr"], group["betas"], group["eps"], group["weight_decay"], group["min_trust"]) == (
        2e-3, (0.9, 0.999), 1e-6, 1.2e-6, 0.25)
    p.grad = torch.ones(3)
    opt.step()
    saved = copy.deepcopy(opt.state_dict())  # as through a checkpoint file: no shared tensors
    q = torch.nn.Parameter(p.detach().clone())
    again = FairseqMinTrustLamb(MinTrustLambConfig(lr=[2e-3]), [q])
    again.load_state_dict(saved)
    for opt_ in (opt, again):
        opt_.optimizer.param_groups[0]["params"][0].grad = torch.full((3,), 0.5)
        opt_.step()
    assert torch.equal(p, q)
    with pytest.raises(AwdUserError, match="betas"):
        FairseqMinTrustLamb(MinTrustLambConfig(lr=[1e-3], min_trust_lamb_betas="0.9"), [p])


def test_fixed_scheduler_warmup_is_the_reference_schedule():
    """fairseq's ``--lr-scheduler fixed --warmup-updates W`` gives update k (1-based) the lr
    lr·min(k, W)/W, the reference's ``step = e·(rows//bptt) + b + 1`` warm-up while the first
    epoch lasts at least W updates (enwik8: 5,493 > 800), across epoch starts and after a
    restart with a fresh optimizer (``--reset-optimizer``/``--finetune-from-model``: update 0)."""
    lr, warmup = 2e-3, 8
    holder = FairseqMinTrustLamb(MinTrustLambConfig(lr=[lr]), [torch.nn.Parameter(torch.zeros(1))])
    sched = FixedLRSchedule(FixedLRScheduleConfig(warmup_updates=warmup, lr=[lr]), holder)
    used, num_updates = [], 0
    for epoch, updates in ((1, 5), (2, 5), (3, 3)):
        sched.step_begin_epoch(epoch)  # the trainer's lr_step_begin_epoch ...
        sched.step_update(num_updates)  # ... followed by lr_step_update
        for _ in range(updates):
            used.append(holder.get_lr())  # the lr of update num_updates + 1
            num_updates += 1
            sched.step_update(num_updates)
        sched.step(epoch, None)
        sched.step_update(num_updates)
    want = [lr * min(k, warmup) / warmup for k in range(1, num_updates + 1)]
    assert used == pytest.approx(want, rel=1e-12)
    fresh = FixedLRSchedule(FixedLRScheduleConfig(warmup_updates=warmup, lr=[lr / 2]), holder)
    fresh.step_begin_epoch(1)
    fresh.step_update(0)
    assert holder.get_lr() == pytest.approx(lr / 2 / warmup)
    assert math.isclose(want[-1], lr)
