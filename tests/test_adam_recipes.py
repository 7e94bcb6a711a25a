"""awd-lstm-lm's Adam runs: coupled-L2 Adam (``adam_l2``) and the ``--when`` lr rule (``awd_when``)."""

import re

import pytest
import torch
from fairseq.optim import OPTIMIZER_REGISTRY

import awd_plugins  # noqa: F401
from awd_plugins.errors import AwdUserError
from awd_plugins.optim.adam_l2 import AdamL2, AdamL2Config
from awd_plugins.optim.when_schedule import parse_when, when_lr
from _helpers import model_cfg
from conftest import PLUGIN, cli, run


def _steps(opt_step, params, grads):
    for g in grads:
        for p, gi in zip(params, g):
            p.grad = gi.clone()
        opt_step()
    return [p.detach() for p in params]


def test_adam_l2_equals_torch_adam_with_coupled_weight_decay():
    torch.manual_seed(0)
    init = [torch.randn(5, 3), torch.randn(3)]
    grads = [[torch.randn(5, 3), torch.randn(3)] for _ in range(3)]
    wd, lr = 0.1, 1e-2  # a large decay makes coupled and decoupled clearly different

    ours_params = [p.clone().requires_grad_() for p in init]
    ours = AdamL2(model_cfg(AdamL2Config, lr=[lr], weight_decay=wd), ours_params)
    ours_after = _steps(ours.step, ours_params, grads)

    # the reference's optimiser written out: g ← ∇ + wd·p, then Adam on g
    ref = [p.clone() for p in init]
    m = [torch.zeros_like(p) for p in init]
    v = [torch.zeros_like(p) for p in init]
    b1, b2, eps = 0.9, 0.999, 1e-8
    for t, g in enumerate(grads, 1):
        for i in range(len(ref)):
            gi = g[i] + wd * ref[i]
            m[i] = b1 * m[i] + (1 - b1) * gi
            v[i] = b2 * v[i] + (1 - b2) * gi * gi
            mhat, vhat = m[i] / (1 - b1 ** t), v[i] / (1 - b2 ** t)
            ref[i] = ref[i] - lr * mhat / (vhat.sqrt() + eps)
    for a, b in zip(ours_after, ref):
        assert torch.allclose(a, b, atol=1e-6)

    torch_params = [p.clone().requires_grad_() for p in init]
    torch_opt = torch.optim.Adam(torch_params, lr=lr, weight_decay=wd)
    assert all(torch.equal(a, b) for a, b in zip(ours_after, _steps(torch_opt.step, torch_params, grads)))

    # fairseq's own adam decays decoupled: a different result with the same settings
    from fairseq.optim.adam import FairseqAdamConfig

    fs_params = [p.clone().requires_grad_() for p in init]
    fs = OPTIMIZER_REGISTRY["adam"](model_cfg(FairseqAdamConfig, lr=[lr], weight_decay=wd, tpu=False), fs_params)
    fs_after = _steps(fs.step, fs_params, grads)
    assert max((a - b).abs().max().item() for a, b in zip(ours_after, fs_after)) > 1e-4


def test_adam_l2_rejects_bad_betas():
    p = torch.zeros(2, requires_grad=True)
    with pytest.raises(AwdUserError, match="--adam-l2-betas"):
        AdamL2(model_cfg(AdamL2Config, lr=[1e-3], adam_l2_betas="0.9"), [p])


def test_when_rule():
    assert parse_when("25,35") == [25, 35] and parse_when("35 25") == [25, 35] and parse_when("") == []
    lrs = [when_lr(e, 1e-3, [25, 35], 10) for e in range(1, 51)]
    assert lrs[:25] == [1e-3] * 25  # epochs 1..25
    assert lrs[25:35] == pytest.approx([1e-4] * 10)  # after epoch 25
    assert lrs[35:] == pytest.approx([1e-5] * 15)  # after epoch 35
    with pytest.raises(AwdUserError, match="--when"):
        parse_when("twenty")


TRAIN = [
    "--task", "awd_language_modeling", "--arch", "awd_lstm", "--emsize", "16", "--nhid", "24", "--nlayers", "2",
    "--criterion", "split_cross_entropy", "--alpha", "0", "--beta", "0", "--optimizer", "adam_l2",
    "--weight-decay", "1.2e-6", "--lr", "0.002", "--lr-scheduler", "awd_when", "--when", "1,2", "--clip-norm", "0.25",
    "--batch-size", "8", "--bptt", "30", "--seed", "1", "--cpu", "--log-format", "simple", "--log-interval", "1000",
    "--num-workers", "0", "--no-epoch-checkpoints", "--user-dir", PLUGIN,
]


def _epoch_lr(log):
    return {int(e): float(lr) for e, lr in re.findall(r"\| train \| epoch (\d+) \|.*?\| lr ([\d.e-]+) \|", log)}


def test_when_schedule_through_fairseq_train_and_resume(small_bin, tmp_path):
    first = run(cli("fairseq-train") + [small_bin, *TRAIN, "--max-epoch", "1", "--save-dir", str(tmp_path)]).stdout
    resumed = run(cli("fairseq-train") + [small_bin, *TRAIN, "--max-epoch", "3", "--save-dir", str(tmp_path)]).stdout
    lrs = {**_epoch_lr(first), **_epoch_lr(resumed)}
    assert lrs.keys() == {1, 2, 3}, first[-2000:] + resumed[-2000:]
    assert lrs[1] == pytest.approx(2e-3) and lrs[2] == pytest.approx(2e-4) and lrs[3] == pytest.approx(2e-5)
