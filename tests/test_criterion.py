"""split_cross_entropy: CE through the split softmax, AR on the dropped and TAR on the raw output (REFERENCE §2.6)."""

import math

import torch
import torch.nn.functional as F

from awd_plugins.criterions.split_cross_entropy import (
    SplitCrossEntropyCriterion,
    activation_regularization,
    temporal_activation_regularization,
)
from awd_plugins.models.awd_lstm import AwdLstmConfig, AwdLstmDecoder, AwdLstmModel
from _helpers import dictionary_of_size, model_cfg


def test_ar_tar_hand_computed():
    dropped = torch.tensor([[[1.0, 0.0], [2.0, 0.0]]])  # B=1, T=2, H=2
    raw = torch.tensor([[[1.0, 1.0], [3.0, -1.0], [3.0, -1.0]]])  # B=1, T=3
    assert activation_regularization(dropped, 2.0).item() == 2.0 * (1 + 4) / 4
    # differences (2,-2) and (0,0): mean of squares over (T-1)·B·H = 4 elements
    assert temporal_activation_regularization(raw, 1.0).item() == (4 + 4 + 0 + 0) / 4
    assert temporal_activation_regularization(torch.ones(2, 5, 3), 1.0).item() == 0.0


class _Task:
    pass


def _setup(alpha, beta):
    torch.manual_seed(0)
    model = AwdLstmModel(AwdLstmDecoder(model_cfg(AwdLstmConfig, emsize=6, nhid=8, nlayers=2), dictionary_of_size(20)))
    crit = SplitCrossEntropyCriterion(_Task(), alpha, beta)
    tokens = torch.randint(4, 20, (3, 7))
    sample = {"net_input": {"src_tokens": tokens}, "target": torch.roll(tokens, -1, 1), "ntokens": 21, "nsentences": 3}
    return model, crit, sample


def test_without_regularizers_loss_is_summed_cross_entropy():
    model, crit, sample = _setup(0.0, 0.0)
    model.eval()
    crit.eval()
    loss, size, log = crit(model, sample)
    logits, _ = model(**sample["net_input"])
    ref = F.cross_entropy(logits.reshape(-1, 20), sample["target"].reshape(-1), reduction="sum")
    assert size == 21 and torch.allclose(loss, ref, atol=1e-5) and torch.allclose(log["loss"], ref, atol=1e-5)


def test_training_adds_ar_tar_scaled_by_tokens_and_logs_pure_ce():
    model, crit, sample = _setup(2.0, 1.0)
    model.train()
    crit.train()
    torch.manual_seed(7)
    loss, _, log = crit(model, sample)
    torch.manual_seed(7)
    features, extra = model(**sample["net_input"], features_only=True)
    ce = model.decoder.nll(features, sample["target"]).sum()
    ar = 2.0 * extra["dropped_out"].pow(2).mean()
    tar = 1.0 * (extra["raw_out"][:, 1:] - extra["raw_out"][:, :-1]).pow(2).mean()
    assert torch.allclose(log["loss"], ce, atol=1e-5)
    assert torch.allclose(loss, ce + 21 * (ar + tar), atol=1e-4)
    assert log["ar"] > 0 and log["tar"] > 0
    # validation: penalties off
    crit.eval()
    model.eval()
    loss, _, log = crit(model, sample)
    assert log["ar"] == 0 and log["tar"] == 0 and torch.equal(loss, log["loss"])


def test_reduce_metrics_reports_base2_ce():
    from fairseq import metrics

    with metrics.aggregate() as agg:
        SplitCrossEntropyCriterion.reduce_metrics(
            [{"loss": torch.tensor(10.0), "total_loss": torch.tensor(12.0), "ar": torch.tensor(1.0),
              "tar": torch.tensor(1.0), "sample_size": 5, "ntokens": 5}]
        )
        values = agg.get_smoothed_values()
    assert abs(values["loss"] - round(2.0 / math.log(2), 5)) < 1e-9
    assert abs(values["ppl"] - 2 ** values["loss"]) < 1e-2
