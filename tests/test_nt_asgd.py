"""NT-ASGD (REFERENCE §3.3): the trigger, the averaging, the swap and exact resume."""

import pytest
import torch
from omegaconf import OmegaConf

from awd_plugins.errors import AwdUserError
from awd_plugins.optim.nt_asgd import NtAsgd, NtAsgdConfig, NtAsgdScheduler, NtAsgdSchedulerConfig, should_trigger


def test_trigger_rule_from_reference():
    history = [5, 4, 3, 3.5, 3.6, 3.7, 3.8]
    assert should_trigger(history, 4.1, 5)  # 4.1 > min([5, 4]) = 4
    assert not should_trigger(history, 3.9, 5)
    assert not should_trigger(history[:5], 100.0, 5)  # needs more than nonmono entries
    assert should_trigger([1.0], 2.0, 0)


def _optimizer(params, **kw):
    cfg = OmegaConf.structured(NtAsgdConfig(lr=[0.1], **kw))
    opt = NtAsgd(cfg, params)
    opt.trigger_attached = True  # what the task does
    NtAsgdScheduler(OmegaConf.structured(NtAsgdSchedulerConfig(lr=[0.1])), opt)
    return opt


def _quadratic_step(opt, p, target):
    opt.zero_grad()
    ((p - target) ** 2).sum().backward()
    opt.step()


def test_average_is_mean_of_iterates_two_to_k_and_swap_is_exact():
    p = torch.nn.Parameter(torch.tensor([3.0, -2.0]))
    opt = _optimizer([p], weight_decay=0.0)
    opt.observe_validation(1, 1.0)
    opt._switch(epoch=1)
    iterates = []
    for _ in range(6):
        _quadratic_step(opt, p, torch.tensor([1.0, 1.0]))
        iterates.append(p.detach().clone())
    live = p.detach().clone()
    assert opt.swap_in_average()
    assert torch.allclose(p.detach(), torch.stack(iterates[1:]).mean(0), atol=1e-6)
    with pytest.raises(RuntimeError):
        opt.step()
    assert opt.swap_out_average()
    assert torch.equal(p.detach(), live)


def test_switch_uses_original_lr_and_resume_restores_raw_iterate():
    p = torch.nn.Parameter(torch.tensor([3.0]))
    opt = _optimizer([p], nonmono=1)
    opt.set_lr(0.05)  # whatever a schedule did, ASGD restarts at --lr
    for epoch, val in enumerate([3.0, 2.0, 3.5], start=1):
        fired = opt.observe_validation(epoch, val)
    assert fired and opt.mode == "asgd" and opt.get_lr() == 0.1 and opt.switch_epoch == 3
    for _ in range(3):
        _quadratic_step(opt, p, torch.tensor([0.0]))
    opt.swap_in_average()
    averaged, state = p.detach().clone(), opt.state_dict()
    raw = state["raw_params"][0].clone()
    # a fresh optimizer on a model holding the averaged weights (the checkpoint) resumes the raw iterate
    q = torch.nn.Parameter(averaged.clone())
    resumed = _optimizer([q], nonmono=1)
    resumed.load_state_dict(state)
    assert resumed.mode == "asgd" and resumed.history == [3.0, 2.0, 3.5]
    assert torch.equal(q.detach(), raw) and not torch.equal(raw, averaged)
    opt.swap_out_average()
    _quadratic_step(opt, p, torch.tensor([0.0]))
    _quadratic_step(resumed, q, torch.tensor([0.0]))
    assert torch.equal(p.detach(), q.detach())


def test_finetune_mode_averages_from_start_and_trigger_stops():
    p = torch.nn.Parameter(torch.tensor([1.0]))
    opt = _optimizer([p], nonmono=1, asgd_from_start=True)
    sched = NtAsgdScheduler(OmegaConf.structured(NtAsgdSchedulerConfig(lr=[0.1])), opt)
    assert opt.mode == "asgd"
    for epoch, val in [(1, 2.0), (2, 1.5)]:
        opt.observe_validation(epoch, val)
        assert sched.step(epoch, val) == 0.1
    opt.observe_validation(3, 2.5)  # 2.5 > min([2.0]): finetuning ends
    assert opt.finished and sched.step(3, 2.5) == 0.0


def test_optimizer_outside_the_task_is_a_user_error():
    p = torch.nn.Parameter(torch.tensor([1.0]))
    opt = NtAsgd(OmegaConf.structured(NtAsgdConfig(lr=[0.1])), [p])
    p.grad = torch.ones(1)
    with pytest.raises(AwdUserError, match="awd_language_modeling"):
        opt.step()
    opt = NtAsgd(OmegaConf.structured(NtAsgdConfig(lr=[0.1], asgd_from_start=True)), [p])
    opt.trigger_attached = True
    with pytest.raises(AwdUserError, match="lr-scheduler nt_asgd"):
        opt.step()
