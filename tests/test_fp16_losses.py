"""Losses sum in fp32 when the model runs in fp16 (``--fp16``): fairseq's ``adaptive_loss``
sums the per-token cross-entropies of a half-precision SRU++ in fp16 and overflows to
inf past ~65504 nats (a few thousand tokens), which is why the WT103 / Billion Word
recipes train with ``split_cross_entropy --alpha 0 --beta 0`` (the model's ``nll``
upcasts the logits and the sum is fp32); AR/TAR are fp32 too."""

import pytest
import torch
from fairseq.criterions.adaptive_loss import AdaptiveLoss

from _helpers import dictionary_of_size, model_cfg
from awd_plugins.criterions.split_cross_entropy import SplitCrossEntropyCriterion
from awd_plugins.models.srupp import SruDecoder, SruppConfig, SruppModel

VOCAB = 64


class _Task:
    target_dictionary = dictionary_of_size(VOCAB)


def _srupp():
    torch.manual_seed(0)
    cfg = model_cfg(SruppConfig, n_d=16, n_proj=8, depth=1, dropout=0.0, attn_dropout=0.0, emb_dropout=0.0,
                    adaptive_softmax_cutoff="20,40", n_e=16, div_val=2.0)
    return SruppModel(SruDecoder(cfg, _Task.target_dictionary, attention=True)).eval()


def _sample(B, T):
    g = torch.Generator().manual_seed(1)
    stream = torch.randint(4, VOCAB, (B, T + 1), generator=g)
    return {"net_input": {"src_tokens": stream[:, :-1].contiguous()}, "target": stream[:, 1:].contiguous(),
            "ntokens": B * T, "nsentences": B}


def test_half_model_adaptive_loss_overflows_split_cross_entropy_does_not():
    model32 = _srupp()
    model16 = _srupp().half()
    sample = _sample(32, 512)  # 16384 tokens × ~4.2 nats ≈ 69k > 65504, the fp16 maximum
    crit = SplitCrossEntropyCriterion(_Task(), 0.0, 0.0).eval()
    with torch.no_grad():
        loss32, n, _ = crit(model32, sample)
        loss16, _, log = crit(model16, sample)
        fairseq16, _, _ = AdaptiveLoss(_Task(), sentence_avg=False)(model16, sample)
    assert n == 32 * 512 and loss32.item() > 65504
    assert torch.isinf(fairseq16).all()  # fairseq's fp16 sum: the defect
    assert loss16.dtype == torch.float32 and torch.isfinite(loss16)
    assert loss16.item() == pytest.approx(loss32.item(), rel=1e-2)  # only the fp16 weights/activations differ
    assert log["loss"].dtype == torch.float32


def test_ar_tar_are_fp32_for_a_half_model():
    model = _srupp().half().train()
    crit = SplitCrossEntropyCriterion(_Task(), 2.0, 1.0).train()
    loss, _, log = crit(model, _sample(2, 9))
    assert loss.dtype == log["ar"].dtype == log["tar"].dtype == torch.float32
    assert log["ar"] > 0 and log["tar"] > 0
