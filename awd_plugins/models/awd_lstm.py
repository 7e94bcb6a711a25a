"""AWD-LSTM (Merity, Keskar & Socher 2017, "Regularizing and Optimizing LSTM
Language Models", arXiv:1708.02182), REFERENCE §2.

    ids → embedding dropout (dropoute) → embedding → locked dropout (dropouti)
        → [weight-dropped LSTM_l → locked dropout (dropouth between layers)] × L
        → locked dropout (dropout) → tied decoder / split softmax
                                     or mixture of softmaxes (--n-experts K, Yang et al. 2018)

Every layer is its own single-layer LSTM whose recurrent weight is DropConnect-ed
(wdrop); the last layer's width equals the embedding size so the decoder can be
tied to the embedding.
"""

from dataclasses import dataclass, field

import torch
from fairseq.dataclass import FairseqDataclass
from fairseq.models import register_model, register_model_architecture
from torch import nn

from awd_plugins.errors import AwdUserError, check_range
from awd_plugins.models.recurrent_lm import RecurrentDecoder, RecurrentLanguageModel
from awd_plugins.modules import EmbeddingDropout, LockedDropout, SplitSoftmax, WeightDrop
from awd_plugins.modules.lstm import AutocastLSTM
from awd_plugins.modules.mixture_of_softmaxes import MixtureOfSoftmaxes
from awd_plugins.modules.split_softmax import parse_splits


@dataclass
class AwdLstmConfig(FairseqDataclass):
    emsize: int = field(default=400, metadata={"help": "embedding size (= last layer's size when tied)"})
    nhid: int = field(default=1150, metadata={"help": "hidden size of every LSTM layer but the last"})
    nlayers: int = field(default=3, metadata={"help": "number of LSTM layers"})
    dropout: float = field(default=0.4, metadata={"help": "locked dropout on the last layer's output"})
    dropouth: float = field(default=0.3, metadata={"help": "locked dropout between LSTM layers"})
    dropouti: float = field(default=0.65, metadata={"help": "locked dropout on the embedding output"})
    dropoute: float = field(default=0.1, metadata={"help": "embedding dropout: drop whole words (vocabulary rows)"})
    wdrop: float = field(default=0.5, metadata={"help": "weight drop (DropConnect) on the hidden-to-hidden weights"})
    untie_weights: bool = field(
        default=False, metadata={"help": "give the decoder its own weight (the reference always ties)"}
    )
    splits: str = field(
        default="auto",
        metadata={
            "help": "split-softmax boundaries: 'auto' (the reference's rule by vocabulary size: none "
            "below 75k words), 'none', or comma-separated token ids"
        },
    )
    # Mixture of Softmaxes head (modules/mixture_of_softmaxes.py); off with the default 0.
    n_experts: int = field(
        default=0, metadata={"help": "mixture of softmaxes with this many experts (Yang et al. 2018); 0: one softmax"}
    )
    nhidlast: int = field(
        default=0, metadata={"help": "size of the last LSTM layer with --n-experts (0: --emsize, as the MoS code)"}
    )
    dropoutl: float = field(
        default=-1.0,
        metadata={"help": "locked dropout on the MoS experts' latent vectors (negative: --dropouth, as the MoS code)"},
    )


def check_dropouts(cfg, names):
    for name in names:
        check_range(name, getattr(cfg, name), 0.0, 1.0)


def check_sizes(cfg, names):
    for name in names:
        if getattr(cfg, name) < 1:
            raise AwdUserError(f"--{name} must be a positive integer, got {getattr(cfg, name)}")


def build_embedding_and_output(decoder: RecurrentDecoder, dictionary, cfg, out_dim: int):
    """Embedding U(−0.1, 0.1), decoder bias 0, tied unless ``untie_weights``; the split softmax."""
    vocab = len(dictionary)
    try:
        splits = parse_splits(cfg.splits, vocab)
    except ValueError as e:
        raise AwdUserError(str(e))
    decoder.embed_tokens = nn.Embedding(vocab, cfg.emsize)
    decoder.output_projection = nn.Linear(out_dim, vocab)
    nn.init.uniform_(decoder.embed_tokens.weight, -0.1, 0.1)
    nn.init.zeros_(decoder.output_projection.bias)
    if cfg.untie_weights:
        nn.init.uniform_(decoder.output_projection.weight, -0.1, 0.1)
    else:
        decoder.output_projection.weight = decoder.embed_tokens.weight
    decoder.split_softmax = SplitSoftmax(out_dim, splits)


def build_mixture_of_softmaxes(decoder: RecurrentDecoder, cfg, last_size: int):
    """``decoder.mixture_of_softmaxes`` when ``--n-experts`` > 0 (else None); the split softmax must be off."""
    decoder.mixture_of_softmaxes = None
    if getattr(cfg, "n_experts", 0) <= 0:
        if getattr(cfg, "nhidlast", 0) > 0:
            raise AwdUserError("--nhidlast sizes the last layer of a mixture of softmaxes: add --n-experts K")
        return
    if decoder.split_softmax.nclusters > 1:
        raise AwdUserError(
            f"the split softmax (--splits {cfg.splits}: {decoder.split_softmax.splits}) and the mixture of softmaxes "
            "(--n-experts) cannot be combined: pass --splits none"
        )
    dropoutl = cfg.dropouth if cfg.dropoutl < 0 else cfg.dropoutl
    check_range("dropoutl", dropoutl, 0.0, 1.0)
    decoder.mixture_of_softmaxes = MixtureOfSoftmaxes(last_size, cfg.emsize, cfg.n_experts, dropoutl)


def last_layer_size(cfg) -> int:
    """The last layer's width: nhidlast (MoS), else nhid when untied, else emsize (tied)."""
    if getattr(cfg, "n_experts", 0) > 0:
        return cfg.nhidlast if cfg.nhidlast > 0 else cfg.emsize
    return cfg.nhid if cfg.untie_weights else cfg.emsize


class AwdDecoder(RecurrentDecoder):
    """The AWD stack shared by AWD-LSTM and AWD-QRNN (REFERENCE §2.1, §6.2).

    Subclasses say how to build layer ``index`` (:meth:`make_layer`), run it over a
    window from its state (:meth:`run_layer`) and make its zero state (:meth:`init_state`).
    With ``--n-experts`` the output goes through a mixture of softmaxes instead of the
    (split) softmax: :meth:`output_layer` and :meth:`nll` are the decoder interface's
    hooks that the criterion, ``get_normalized_probs`` (eval-lm, pointer, sampling) use.
    """

    def __init__(self, cfg: AwdLstmConfig, dictionary):
        super().__init__(dictionary)
        check_sizes(cfg, ["emsize", "nhid", "nlayers"])
        check_dropouts(cfg, ["dropout", "dropouth", "dropouti", "dropoute", "wdrop"])
        self.sizes = [cfg.nhid] * (cfg.nlayers - 1) + [last_layer_size(cfg)]
        inputs = [cfg.emsize] + self.sizes[:-1]
        self.rnns = nn.ModuleList(
            self.make_layer(index, i, h, cfg) for index, (i, h) in enumerate(zip(inputs, self.sizes))
        )
        uses_mos = getattr(cfg, "n_experts", 0) > 0
        build_embedding_and_output(self, dictionary, cfg, cfg.emsize if uses_mos else self.sizes[-1])
        build_mixture_of_softmaxes(self, cfg, self.sizes[-1])
        self.embedding_dropout = EmbeddingDropout(cfg.dropoute)
        self.input_dropout = LockedDropout(cfg.dropouti)
        self.hidden_dropout = LockedDropout(cfg.dropouth)
        self.output_dropout = LockedDropout(cfg.dropout)

    def output_layer(self, features):
        if self.mixture_of_softmaxes is None:
            return super().output_layer(features)
        # log-probabilities: fairseq's log_softmax over them (get_normalized_probs) changes nothing
        return self.mixture_of_softmaxes.log_prob(features, self.output_projection.weight, self.output_projection.bias)

    def nll(self, features, targets):
        if self.mixture_of_softmaxes is None:
            return super().nll(features, targets)
        return self.mixture_of_softmaxes.nll(features, targets, self.output_projection.weight, self.output_projection.bias)

    def make_layer(self, index: int, input_size: int, hidden_size: int, cfg) -> nn.Module:
        raise NotImplementedError

    def run_layer(self, rnn: nn.Module, x: torch.Tensor, state):
        raise NotImplementedError

    def run(self, tokens, state):
        x = self.input_dropout(self.embedding_dropout(self.embed_tokens, tokens))
        new_state = []
        for layer, (rnn, layer_state) in enumerate(zip(self.rnns, state)):
            x, layer_state = self.run_layer(rnn, x, layer_state)
            new_state.append(layer_state)
            raw = x
            if layer < len(self.rnns) - 1:
                x = self.hidden_dropout(x)
        return raw, self.output_dropout(raw), new_state


class AwdLstmDecoder(AwdDecoder):
    def make_layer(self, index, input_size, hidden_size, cfg):
        # nn.LSTM itself, plus a bf16 path for --cpu-bf16 (modules/lstm.py)
        return WeightDrop(AutocastLSTM(input_size, hidden_size), ["weight_hh_l0"], cfg.wdrop)

    def run_layer(self, rnn, x, state):
        return rnn(x, tuple(state))

    def init_state(self, bsz, like):
        return [(like.new_zeros(1, bsz, h), like.new_zeros(1, bsz, h)) for h in self.sizes]


@register_model("awd_lstm", dataclass=AwdLstmConfig)
class AwdLstmModel(RecurrentLanguageModel):
    @classmethod
    def build_model(cls, cfg, task):
        return cls(AwdLstmDecoder(cfg, task.target_dictionary))


# Named architectures with the published settings (REFERENCE §2.5, §3.7).
@register_model_architecture("awd_lstm", "awd_lstm_ptb")
def awd_lstm_ptb(cfg):
    # README: --batch_size 20 --dropouti 0.4 --dropouth 0.25 --seed 141 --epoch 500
    cfg.dropouti = getattr(cfg, "dropouti", 0.4)
    cfg.dropouth = getattr(cfg, "dropouth", 0.25)


@register_model_architecture("awd_lstm", "awd_lstm_wt2")
def awd_lstm_wt2(cfg):
    # README: --epochs 750 --dropouth 0.2 --seed 1882
    cfg.dropouth = getattr(cfg, "dropouth", 0.2)


@register_model_architecture("awd_lstm", "awd_lstm_ptb_char")
def awd_lstm_ptb_char(cfg):
    # Multi-scale paper (arXiv:1803.08240), PTB-char: 3 layers, 1000 hidden, 200 embedding.
    cfg.emsize = getattr(cfg, "emsize", 200)
    cfg.nhid = getattr(cfg, "nhid", 1000)
    cfg.nlayers = getattr(cfg, "nlayers", 3)
    cfg.dropoute = getattr(cfg, "dropoute", 0.0)
    cfg.dropouth = getattr(cfg, "dropouth", 0.25)
    cfg.dropouti = getattr(cfg, "dropouti", 0.1)
    cfg.dropout = getattr(cfg, "dropout", 0.1)
    cfg.wdrop = getattr(cfg, "wdrop", 0.5)


@register_model_architecture("awd_lstm", "awd_lstm_enwik8")
def awd_lstm_enwik8(cfg):
    # Multi-scale paper, enwik8: 3 layers, 1840 hidden, 400 embedding.
    cfg.emsize = getattr(cfg, "emsize", 400)
    cfg.nhid = getattr(cfg, "nhid", 1840)
    cfg.nlayers = getattr(cfg, "nlayers", 3)
    cfg.dropoute = getattr(cfg, "dropoute", 0.0)
    cfg.dropouth = getattr(cfg, "dropouth", 0.1)
    cfg.dropouti = getattr(cfg, "dropouti", 0.1)
    cfg.dropout = getattr(cfg, "dropout", 0.4)
    cfg.wdrop = getattr(cfg, "wdrop", 0.2)


# Mixture of Softmaxes (Yang et al. 2018): the published commands of zihangdai/mos's README
# (the other options keep the AWD-LSTM defaults, as main.py's do).
@register_model_architecture("awd_lstm", "awd_lstm_mos_ptb")
def awd_lstm_mos_ptb(cfg):
    # --dropouti 0.4 --dropoutl 0.29 --dropouth 0.225 --nhid 960 --nhidlast 620 --emsize 280 --n_experts 15
    # (training: --seed 28 --batch_size 12 --lr 20.0 --epoch 1000; examples/awd_lstm_mos.sh)
    cfg.emsize = getattr(cfg, "emsize", 280)
    cfg.nhid = getattr(cfg, "nhid", 960)
    cfg.nhidlast = getattr(cfg, "nhidlast", 620)
    cfg.n_experts = getattr(cfg, "n_experts", 15)
    cfg.dropouti = getattr(cfg, "dropouti", 0.4)
    cfg.dropouth = getattr(cfg, "dropouth", 0.225)
    cfg.dropoutl = getattr(cfg, "dropoutl", 0.29)


@register_model_architecture("awd_lstm", "awd_lstm_mos_wt2")
def awd_lstm_mos_wt2(cfg):
    # --dropouth 0.2 --n_experts 15 --nhid 1150 --nhidlast 650 --emsize 300 --dropoutl 0.29 --dropouti 0.55
    # (training: --seed 1882 --batch_size 15 --lr 15.0 --max_seq_len_delta 20 --epochs 1000)
    cfg.emsize = getattr(cfg, "emsize", 300)
    cfg.nhid = getattr(cfg, "nhid", 1150)
    cfg.nhidlast = getattr(cfg, "nhidlast", 650)
    cfg.n_experts = getattr(cfg, "n_experts", 15)
    cfg.dropouti = getattr(cfg, "dropouti", 0.55)
    cfg.dropouth = getattr(cfg, "dropouth", 0.2)
    cfg.dropoutl = getattr(cfg, "dropoutl", 0.29)
