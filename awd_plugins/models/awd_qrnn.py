"""AWD-QRNN (Merity, Keskar & Socher 2017, arXiv:1708.02182 and the awd-lstm-lm
README; QRNN of Bradbury et al. 2016, arXiv:1611.01576), REFERENCE §6.2.

AWD-LSTM (REFERENCE §2) with every LSTM replaced by a QRNN layer:

    ids → embedding dropout (dropoute) → embedding → locked dropout (dropouti)
        → [QRNN_l (weight-dropped gate projection) → locked dropout (dropouth between layers)] × L
        → locked dropout (dropout) → tied decoder / split softmax

Layer 0 has window 2 (it sees the previous token's embedding too), the others
window 1; output gate on, zoneout 0; the last layer's width equals the embedding
size so the decoder can be tied. Each layer's state is ``(c, prev_x)``: the last
cell state ``1×B×H`` and the last input of the previous window (``1×B×D`` for the
window-2 layer, ``1×B×0`` otherwise), carried and reset by the shared base exactly
like the LSTM's ``(h, c)``; so AR/TAR, NT-ASGD, stateful evaluation and the cache
pointer work unchanged.
"""

from dataclasses import dataclass, field

from fairseq.dataclass import ChoiceEnum
from fairseq.models import register_model, register_model_architecture

from awd_plugins.kernels import RECURRENCE_IMPL_HELP, RECURRENCE_IMPLS, check_impl

from awd_plugins.models.awd_lstm import AwdDecoder, AwdLstmConfig
from awd_plugins.models.recurrent_lm import RecurrentLanguageModel
from awd_plugins.modules import QRNNLayer


@dataclass
class AwdQrnnConfig(AwdLstmConfig):
    # Defaults: the README's PTB QRNN command (REFERENCE §3.7); the other options as AWD-LSTM.
    nhid: int = field(default=1550, metadata={"help": "hidden size of every QRNN layer but the last"})
    nlayers: int = field(default=4, metadata={"help": "number of QRNN layers (layer 0 has window 2, the others 1)"})
    dropouth: float = field(default=0.3, metadata={"help": "locked dropout between QRNN layers"})
    dropouti: float = field(default=0.4, metadata={"help": "locked dropout on the embedding output"})
    wdrop: float = field(
        default=0.1, metadata={"help": "weight drop (DropConnect) on each QRNN layer's input-to-gates weight"}
    )
    recurrence_impl: ChoiceEnum(RECURRENCE_IMPLS) = field(default="auto", metadata={"help": RECURRENCE_IMPL_HELP})


class AwdQrnnDecoder(AwdDecoder):
    def make_layer(self, index, input_size, hidden_size, cfg):
        return QRNNLayer(input_size, hidden_size, window=2 if index == 0 else 1, output_gate=True, zoneout=0.0,
                         weight_drop=cfg.wdrop, recurrence_impl=check_impl(getattr(cfg, "recurrence_impl", "auto")))

    def run_layer(self, rnn, x, state):
        c, prev_x = state
        # prev_x is the layer's (dropped) input, as in the reference.
        out, c = rnn(x, c, prev_x)
        return out, (c, rnn.next_prev_x(x))

    def init_state(self, bsz, like):
        return [(like.new_zeros(1, bsz, rnn.hidden_size), rnn.init_prev_x(bsz, like)) for rnn in self.rnns]


@register_model("awd_qrnn", dataclass=AwdQrnnConfig)
class AwdQrnnModel(RecurrentLanguageModel):
    @classmethod
    def build_model(cls, cfg, task):
        return cls(AwdQrnnDecoder(cfg, task.target_dictionary))


# Named architectures with the published settings (REFERENCE §3.7, §6.2). Training
# flags of the same commands (clip, batch size, seed, epochs) are in examples/.
@register_model_architecture("awd_qrnn", "awd_qrnn_ptb")
def awd_qrnn_ptb(cfg):
    # README: --model QRNN --batch_size 20 --clip 0.2 --wdrop 0.1 --nhid 1550 --nlayers 4 --emsize 400
    #         --dropouth 0.3 --seed 9001 --dropouti 0.4 --epochs 550
    cfg.emsize = getattr(cfg, "emsize", 400)
    cfg.nhid = getattr(cfg, "nhid", 1550)
    cfg.nlayers = getattr(cfg, "nlayers", 4)
    cfg.wdrop = getattr(cfg, "wdrop", 0.1)
    cfg.dropouth = getattr(cfg, "dropouth", 0.3)
    cfg.dropouti = getattr(cfg, "dropouti", 0.4)


@register_model_architecture("awd_qrnn", "awd_qrnn_wt2")
def awd_qrnn_wt2(cfg):
    # README: --epochs 500 --clip 0.25 --dropouti 0.4 --dropouth 0.2 --nhid 1550 --nlayers 4 --seed 4002
    #         --model QRNN --wdrop 0.1 --batch_size 40
    cfg.dropouth = getattr(cfg, "dropouth", 0.2)
    awd_qrnn_ptb(cfg)


@register_model_architecture("awd_qrnn", "awd_qrnn_wt103")
def awd_qrnn_wt103(cfg):
    # Multi-scale paper (arXiv:1803.08240), README WT103 command: --nlayers 4 --emsize 400 --nhid 2500
    # --dropoute 0 --dropouth 0.1 --dropouti 0.1 --dropout 0.1 --wdrop 0 (with --alpha 0 --beta 0, Adam).
    cfg.emsize = getattr(cfg, "emsize", 400)
    cfg.nhid = getattr(cfg, "nhid", 2500)
    cfg.nlayers = getattr(cfg, "nlayers", 4)
    cfg.dropout = getattr(cfg, "dropout", 0.1)
    cfg.dropouth = getattr(cfg, "dropouth", 0.1)
    cfg.dropouti = getattr(cfg, "dropouti", 0.1)
    cfg.dropoute = getattr(cfg, "dropoute", 0.0)
    cfg.wdrop = getattr(cfg, "wdrop", 0.0)
