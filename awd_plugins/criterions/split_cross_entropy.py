"""Criterion ``split_cross_entropy``: AWD-LSTM's loss (REFERENCE §2.6, §4).

Cross-entropy through the model's split softmax (a plain softmax when the
vocabulary is not split) plus

    AR  = α · mean(d²)                  d: last layer's output after its dropout
    TAR = β · mean((r[t+1] − r[t])²)    r: the same output before dropout, within the window

(Merity et al. 2017b, "Revisiting Activation Regularization for Language RNNs"),
only while training. fairseq divides gradients by ``sample_size`` (the number of
target tokens), so the returned loss is Σ CE + ntokens · (AR + TAR), the
reference's mean CE + AR + TAR. The logged ``loss`` is the pure cross-entropy,
which validation, checkpoint selection and the NT-ASGD trigger see; ``total_loss``,
``ar`` and ``tar`` are logged beside it.
"""

import math
from dataclasses import dataclass, field

import torch
from fairseq import metrics, utils
from fairseq.criterions import FairseqCriterion, register_criterion
from fairseq.dataclass import FairseqDataclass


@dataclass
class SplitCrossEntropyConfig(FairseqDataclass):
    alpha: float = field(default=2.0, metadata={"help": "activation regularization (AR) coefficient α (AWD-LSTM: 2)"})
    beta: float = field(default=1.0, metadata={"help": "temporal activation regularization (TAR) coefficient β (AWD-LSTM: 1)"})


def activation_regularization(dropped: torch.Tensor, alpha: float) -> torch.Tensor:
    return alpha * dropped.float().pow(2).mean()


def temporal_activation_regularization(raw: torch.Tensor, beta: float) -> torch.Tensor:
    """β · mean of squared differences between consecutive steps (time is dim 1, batch-first)."""
    if raw.size(1) < 2:
        return raw.new_zeros((), dtype=torch.float)
    return beta * (raw[:, 1:] - raw[:, :-1]).float().pow(2).mean()


@register_criterion("split_cross_entropy", dataclass=SplitCrossEntropyConfig)
class SplitCrossEntropyCriterion(FairseqCriterion):
    def __init__(self, task, alpha: float, beta: float):
        super().__init__(task)
        self.alpha = alpha
        self.beta = beta

    def forward(self, model, sample, reduce=True):
        features, extra = model(**sample["net_input"], features_only=True)
        decoder = getattr(model, "decoder", None)
        if not hasattr(decoder, "nll"):
            raise TypeError("split_cross_entropy needs an awd-plugins model (a RecurrentDecoder with nll())")
        nll = decoder.nll(features, sample["target"])
        ce = nll.sum()
        ntokens = sample["ntokens"]
        ar = tar = ce.new_zeros(())
        if self.training and self.alpha:
            ar = activation_regularization(extra["dropped_out"], self.alpha)
        if self.training and self.beta:
            tar = temporal_activation_regularization(extra["raw_out"], self.beta)
        loss = ce + ntokens * (ar + tar)
        logging_output = {
            "loss": ce.data,
            "total_loss": loss.data,
            "ar": ar.data * ntokens,
            "tar": tar.data * ntokens,
            "ntokens": ntokens,
            "nsentences": sample["nsentences"],
            "sample_size": ntokens,
        }
        return loss, ntokens, logging_output

    @staticmethod
    def reduce_metrics(logging_outputs) -> None:
        def total(key):
            return sum(log.get(key, 0) for log in logging_outputs)

        sample_size = total("sample_size")
        ln2 = math.log(2)
        # 5 decimals: NT-ASGD's trigger compares these values (fairseq passes the rounded metric)
        metrics.log_scalar("loss", total("loss") / sample_size / ln2, sample_size, round=5)
        metrics.log_scalar("total_loss", total("total_loss") / sample_size / ln2, sample_size, round=5)
        metrics.log_scalar("ar", total("ar") / sample_size, sample_size, round=5)
        metrics.log_scalar("tar", total("tar") / sample_size, sample_size, round=5)
        metrics.log_derived("ppl", lambda meters: utils.get_perplexity(meters["loss"].avg))

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return True
