"""AWD-LSTM (Merity, Keskar & Socher 2017, "Regularizing and Optimizing LSTM
Language Models", arXiv:1708.02182), REFERENCE §2.

    ids → embedding dropout (dropoute) → embedding → locked dropout (dropouti)
        → [weight-dropped LSTM_l → locked dropout (dropouth between layers)] × L
        → locked dropout (dropout) → tied decoder / split softmax

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


class AwdDecoder(RecurrentDecoder):
    """The AWD stack shared by AWD-LSTM and AWD-QRNN (REFERENCE §2.1, §6.2).

    Subclasses say how to build layer ``index`` (:meth:`make_layer`), run it over a
    window from its state (:meth:`run_layer`) and make its zero state (:meth:`init_state`).
    """

    def __init__(self, cfg: AwdLstmConfig, dictionary):
        super().__init__(dictionary)
        check_sizes(cfg, ["emsize", "nhid", "nlayers"])
        check_dropouts(cfg, ["dropout", "dropouth", "dropouti", "dropoute", "wdrop"])
        self.sizes = [cfg.nhid] * (cfg.nlayers - 1) + [cfg.nhid if cfg.untie_weights else cfg.emsize]
        inputs = [cfg.emsize] + self.sizes[:-1]
        self.rnns = nn.ModuleList(
            self.make_layer(index, i, h, cfg) for index, (i, h) in enumerate(zip(inputs, self.sizes))
        )
        build_embedding_and_output(self, dictionary, cfg, self.sizes[-1])
        self.embedding_dropout = EmbeddingDropout(cfg.dropoute)
        self.input_dropout = LockedDropout(cfg.dropouti)
        self.hidden_dropout = LockedDropout(cfg.dropouth)
        self.output_dropout = LockedDropout(cfg.dropout)

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
