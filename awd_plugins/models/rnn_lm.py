"""The classic word-level RNN language models of pytorch/examples
``word_language_model`` (REFERENCE §9): Elman (tanh or ReLU), GRU or LSTM.

    ids → embedding → dropout → nn.{RNN,GRU,LSTM}(emsize, nhid, nlayers, dropout)
        → dropout → Linear(nhid, V)            (optionally tied to the embedding)

Dropout is ordinary (a fresh mask at every position, not locked) on the embedding
and on the last layer's output; between layers it is the framework's own
``dropout=`` argument of the multi-layer module. Initialisation follows the
example: embedding and decoder weight U(−0.1, 0.1), decoder bias 0, the recurrent
module keeps torch's default. The modules are created and initialised in the
example's order, so the same seed gives the same initial weights for the same
vocabulary size (tested against the golden ``rnn_model.pt``).

Tying the decoder to the embedding (Press & Wolf 2016, arXiv:1608.05859; Inan et
al. 2016, arXiv:1611.01462) needs ``nhid == emsize``.

Mixed precision (REFERENCE §9.4, the NVIDIA apex fork of the example): Tensor
Cores are used only when every GEMM dimension is a multiple of 8. The vocabulary
already is: ``fairseq-preprocess`` pads the dictionary with ``madeupwordNNNN``
symbols to a multiple of ``--padding-factor`` (default 8, fairseq/options.py and
``Dictionary.finalize``), as the apex example pads its corpus dictionary. When cast to half precision (fairseq's
trainer, ``fairseq-eval-lm`` and ``fairseq-interactive`` call ``model.half()`` for
``--fp16``) this model warns if ``--emsize``, ``--nhid`` or the vocabulary are not
multiples of 8 (the batch size, the apex example's fourth dimension, is the
task's business: choose a multiple of 8 there too).
"""

import logging
from dataclasses import dataclass, field

from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from fairseq.models import register_model, register_model_architecture
from torch import nn

from awd_plugins.autocast import fused_rnn_outside_bf16
from awd_plugins.errors import AwdUserError
from awd_plugins.models.awd_lstm import check_dropouts, check_sizes
from awd_plugins.models.recurrent_lm import RecurrentDecoder, RecurrentLanguageModel
from awd_plugins.modules import SplitSoftmax

logger = logging.getLogger(__name__)

RNN_TYPES = ["RNN_TANH", "RNN_RELU", "LSTM", "GRU"]
TENSOR_CORE_MULTIPLE = 8


@dataclass
class RnnLmConfig(FairseqDataclass):
    rnn_type: ChoiceEnum(RNN_TYPES) = field(
        default="LSTM",
        metadata={"help": "recurrent cell: Elman with tanh or ReLU, LSTM or GRU (the example's --model)"},
    )
    emsize: int = field(default=200, metadata={"help": "size of the word embeddings"})
    nhid: int = field(default=200, metadata={"help": "number of hidden units per layer"})
    nlayers: int = field(default=2, metadata={"help": "number of recurrent layers"})
    dropout: float = field(
        default=0.2,
        metadata={"help": "dropout on the embedding, between the recurrent layers and on the output (0 = none)"},
    )
    tied: bool = field(
        default=False, metadata={"help": "tie the decoder weight to the embedding (needs nhid == emsize)"}
    )


def warn_if_not_tensor_core_sized(sizes: dict) -> list:
    """Log one warning naming every GEMM dimension that is not a multiple of 8; return those names."""
    bad = [f"{name} = {value}" for name, value in sizes.items() if value % TENSOR_CORE_MULTIPLE]
    if bad:
        logger.warning(
            f"--fp16: {', '.join(bad)}: not a multiple of {TENSOR_CORE_MULTIPLE}, so these GEMMs will not use "
            "Tensor Cores (fairseq-preprocess pads the vocabulary with its default --padding-factor 8)"
        )
    return bad


class RnnLmDecoder(RecurrentDecoder):
    """Embedding → dropout → multi-layer RNN/GRU/LSTM → dropout (REFERENCE §9.1); state (nlayers, B, nhid)."""

    def __init__(self, cfg: RnnLmConfig, dictionary):
        super().__init__(dictionary)
        check_sizes(cfg, ["emsize", "nhid", "nlayers"])
        check_dropouts(cfg, ["dropout"])
        if cfg.rnn_type not in RNN_TYPES:
            raise AwdUserError(f"--rnn-type must be one of {', '.join(RNN_TYPES)}, got {cfg.rnn_type!r}")
        if cfg.tied and cfg.nhid != cfg.emsize:
            raise AwdUserError(f"--tied needs --nhid equal to --emsize, got nhid {cfg.nhid} and emsize {cfg.emsize}")
        self.rnn_type = str(cfg.rnn_type)
        self.emsize = cfg.emsize
        self.nhid = cfg.nhid
        self.nlayers = cfg.nlayers
        vocab = len(dictionary)

        # Created in the example's order (embedding, recurrent module, decoder) and
        # then initialised, so that a given seed draws the example's initial weights.
        self.embed_tokens = nn.Embedding(vocab, cfg.emsize)
        # nn.RNN warns about dropout with a single layer; there it has no effect anyway
        between = cfg.dropout if cfg.nlayers > 1 else 0.0
        if self.rnn_type in ("LSTM", "GRU"):
            self.rnn = getattr(nn, self.rnn_type)(cfg.emsize, cfg.nhid, cfg.nlayers, dropout=between)
        else:
            nonlinearity = "tanh" if self.rnn_type == "RNN_TANH" else "relu"
            self.rnn = nn.RNN(cfg.emsize, cfg.nhid, cfg.nlayers, nonlinearity=nonlinearity, dropout=between)
        self.output_projection = nn.Linear(cfg.nhid, vocab)
        if cfg.tied:
            self.output_projection.weight = self.embed_tokens.weight
        nn.init.uniform_(self.embed_tokens.weight, -0.1, 0.1)
        nn.init.zeros_(self.output_projection.bias)
        # tied: the example re-draws the shared tensor here; the second draw is what it keeps
        nn.init.uniform_(self.output_projection.weight, -0.1, 0.1)
        self.split_softmax = SplitSoftmax(cfg.nhid, [])
        self.drop = nn.Dropout(cfg.dropout)

    def gemm_sizes(self) -> dict:
        return {"--emsize": self.emsize, "--nhid": self.nhid, "the vocabulary size": len(self.dictionary)}

    def init_state(self, bsz, like):
        h = like.new_zeros(self.nlayers, bsz, self.nhid)
        if self.rnn_type == "LSTM":
            return (h, like.new_zeros(self.nlayers, bsz, self.nhid))
        return h

    def run(self, tokens, state):
        x = self.drop(self.embed_tokens(tokens))
        # under --cpu-bf16/--gpu-bf16 the library RNN runs in fp32 (awd_plugins/autocast.py says why)
        raw, new_state = fused_rnn_outside_bf16(self.rnn, x, tuple(state) if self.rnn_type == "LSTM" else state)
        return raw, self.drop(raw), new_state


@register_model("rnn_lm", dataclass=RnnLmConfig)
class RnnLmModel(RecurrentLanguageModel):
    """pytorch/examples word_language_model RNNModel (REFERENCE §9.1)."""

    @classmethod
    def build_model(cls, cfg, task):
        return cls(RnnLmDecoder(cfg, task.target_dictionary))

    def half(self):
        # the one place every --fp16 path goes through (trainer, fairseq-eval-lm, fairseq-interactive)
        warn_if_not_tensor_core_sized(self.decoder.gemm_sizes())
        return super().half()


# Named architectures: the example's default and the README's larger settings
# (REFERENCE §9.2, published perplexities §12), each untied and tied.
def _sized(cfg, size: int, dropout: float, tied: bool):
    cfg.rnn_type = getattr(cfg, "rnn_type", "LSTM")
    cfg.emsize = getattr(cfg, "emsize", size)
    cfg.nhid = getattr(cfg, "nhid", size)
    cfg.nlayers = getattr(cfg, "nlayers", 2)
    cfg.dropout = getattr(cfg, "dropout", dropout)
    cfg.tied = getattr(cfg, "tied", tied)


@register_model_architecture("rnn_lm", "rnn_lm_small")
def rnn_lm_small(cfg):
    # main.py defaults: 2-layer LSTM 200/200, dropout 0.2 (WT2: 117.61 after 6 epochs)
    _sized(cfg, 200, 0.2, False)


@register_model_architecture("rnn_lm", "rnn_lm_small_tied")
def rnn_lm_small_tied(cfg):
    # --tied (WT2: 110.44 after 6 epochs, 87.17 after 40)
    _sized(cfg, 200, 0.2, True)


@register_model_architecture("rnn_lm", "rnn_lm_medium")
def rnn_lm_medium(cfg):
    # --emsize 650 --nhid 650 --dropout 0.5 --epochs 40 (PTB: 80.97)
    _sized(cfg, 650, 0.5, False)


@register_model_architecture("rnn_lm", "rnn_lm_medium_tied")
def rnn_lm_medium_tied(cfg):
    # ... --tied (PTB: 75.96)
    _sized(cfg, 650, 0.5, True)


@register_model_architecture("rnn_lm", "rnn_lm_large")
def rnn_lm_large(cfg):
    # --emsize 1500 --nhid 1500 --dropout 0.65 --epochs 40 (PTB: 77.42)
    _sized(cfg, 1500, 0.65, False)


@register_model_architecture("rnn_lm", "rnn_lm_large_tied")
def rnn_lm_large_tied(cfg):
    # ... --tied (PTB: 72.30)
    _sized(cfg, 1500, 0.65, True)
