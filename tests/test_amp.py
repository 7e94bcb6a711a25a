"""``--amp`` unscales once (awd_plugins.compat.amp_single_unscale), shown on the CPU by
giving fairseq's own AMPOptimizer an enabled CPU GradScaler and driving it in the
trainer's order (backward, multiply_grads, clip_grad_norm, step)."""

import copy
from types import SimpleNamespace

import pytest
import torch
from fairseq.optim.amp_optimizer import AMPOptimizer
from omegaconf import OmegaConf

import awd_plugins  # noqa: F401  (applies the shims)
from awd_plugins.compat import _amp_clip_grad_norm
from awd_plugins.optim.min_trust_lamb import FairseqMinTrustLamb, MinTrustLambConfig
from awd_plugins.optim.nt_asgd import NtAsgd, NtAsgdConfig

SCALE = 2.0**10  # a power of two: scaling and unscaling are exact, so AMP and fp32 steps agree bitwise


def amp(fp32_optimizer, scale=SCALE):
    common = SimpleNamespace(fp16_init_scale=scale, amp_scale_window=None, min_loss_scale=1e-4)
    opt = AMPOptimizer(SimpleNamespace(common=common, optimizer=fp32_optimizer.cfg), None, fp32_optimizer)
    opt._grad_scaler = torch.amp.GradScaler("cpu", init_scale=scale)  # fairseq builds a CUDA one: disabled here
    assert opt.scaler.is_enabled()
    return opt


def trainer_step(opt, params, grads, clip_norm=0.0):
    """fairseq's Trainer.train_step order; the loss Σ g·p has gradient g."""
    opt.zero_grad()
    opt.backward(sum((g * p).sum() for g, p in zip(grads, params)))
    opt.multiply_grads(1.0)
    norm = opt.clip_grad_norm(clip_norm)
    opt.step()
    return norm


def sgd(params, lr=1.0):
    import argparse

    from fairseq.optim.sgd import SGD

    opt = SGD(argparse.Namespace(lr=[lr], momentum=0.0, weight_decay=0.0), params)
    opt.cfg = opt.args  # AMPOptimizer reads cfg.optimizer
    return opt


def make_params(seed=0):
    g = torch.Generator().manual_seed(seed)
    params = [torch.nn.Parameter(torch.randn(3, 4, generator=g)), torch.nn.Parameter(torch.randn(5, generator=g))]
    grads = [torch.randn(p.shape, generator=g) for p in params]
    return params, grads


def test_the_shim_is_installed():
    assert AMPOptimizer.clip_grad_norm is _amp_clip_grad_norm


def test_sgd_lr_1_moves_a_parameter_by_exactly_its_gradient():
    params, grads = make_params()
    before = [p.detach().clone() for p in params]
    opt = amp(sgd(params))
    norm = trainer_step(opt, params, grads)
    for p, p0, g in zip(params, before, grads):
        assert torch.equal(p.detach(), p0 - g)
    # the reported norm is that of the unscaled gradient
    assert torch.allclose(norm, torch.cat([g.flatten() for g in grads]).norm())
    assert opt.scaler.get_scale() == SCALE  # no overflow: the scale is unchanged (growth after 2000 steps)


def test_fairseqs_own_clip_grad_norm_unscales_twice(monkeypatch):
    # the defect the shim removes: with fairseq's method the step is grad / scale
    params, grads = make_params()
    before = [p.detach().clone() for p in params]
    opt = amp(sgd(params))
    monkeypatch.setattr(AMPOptimizer, "clip_grad_norm", AMPOptimizer.fairseq_clip_grad_norm)
    trainer_step(opt, params, grads)
    for p, p0, g in zip(params, before, grads):
        assert torch.equal(p.detach(), p0 - g / SCALE)


def test_overflow_skips_the_step_and_lowers_the_scale():
    params, grads = make_params()
    before = [p.detach().clone() for p in params]
    opt = amp(sgd(params))
    grads[0][0, 0] = float("inf")
    norm = trainer_step(opt, params, grads)
    assert not torch.isfinite(norm)
    for p, p0 in zip(params, before):
        assert torch.equal(p.detach(), p0)
    assert opt.scaler.get_scale() == SCALE / 2


def _both(make, clip_norm, steps=3, prepare=lambda opt: None):
    """Parameters after the same updates with ``make(params)`` in fp32 and wrapped in AMP."""
    params32, grads = make_params(1)
    params_amp = copy.deepcopy(params32)
    fp32, wrapped = make(params32), amp(make(params_amp))
    prepare(fp32)
    prepare(wrapped.fp32_optimizer)
    for step in range(steps):
        gs = [g * (step + 1) for g in grads]
        fp32.zero_grad()
        sum((g * p).sum() for g, p in zip(gs, params32)).backward()
        fp32.multiply_grads(1.0)
        fp32.clip_grad_norm(clip_norm)
        fp32.step()
        trainer_step(wrapped, params_amp, gs, clip_norm)
    return params32, params_amp


@pytest.mark.parametrize("clip_norm", [0.0, 0.25])
def test_min_trust_lamb_under_amp_equals_fp32(clip_norm):
    def make(params):
        return FairseqMinTrustLamb(OmegaConf.structured(MinTrustLambConfig(lr=[2e-3])), params)

    for a, b in zip(*_both(make, clip_norm)):
        assert torch.equal(a, b)


@pytest.mark.parametrize("asgd", [False, True])
def test_nt_asgd_under_amp_equals_fp32(asgd):
    def make(params):
        return NtAsgd(OmegaConf.structured(NtAsgdConfig(lr=[30.0], asgd_from_start=asgd)), params)

    def prepare(opt):
        opt.trigger_attached = opt.scheduler_attached = True

    p32, pamp = _both(make, 0.25, prepare=prepare)
    for a, b in zip(p32, pamp):
        assert torch.equal(a, b)
