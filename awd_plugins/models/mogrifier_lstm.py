"""Mogrifier LSTM language model (Melis, Kočiský & Blunsom 2020, arXiv:1909.01792).

The AWD stack (models/awd_lstm.py: :class:`AwdDecoder`) with every layer a
:class:`~awd_plugins.modules.mogrifier.MogrifierLSTM`:

    ids → embedding dropout (dropoute) → embedding → locked dropout (dropouti)
        → [Mogrifier LSTM_l (state dropout on h_prev) → locked dropout (dropouth between layers)] × L
        → (sum of all layers' outputs unless --no-skip-connections) → locked dropout (dropout)
        → tied decoder, or a mixture of softmaxes (--n-experts, WikiText-2 config)

so the task, NT-ASGD, the criterions, carried state, the cache pointer, dynamic evaluation
and sampling work as for AWD-LSTM. The named configurations are the authors' tuned ones
(deepmind/lamb, ``experiment/mogrifier/config``: ``tune_ptb_24m_lstm_fm_d2_arms/trial_483``
and ``tune_wikitext-2_35m_lstm_mos2_fm_d2_arms/trial_747``): 2 layers, 5 rounds of rank 84
(PTB) / 6 rounds of rank 48 with a 2-expert MoS (WikiText-2), lamb's ``lstm_skip_connection``
(the output is the sum of the layers' outputs; --no-skip-connections turns it off), its
capped input gate (--uncapped-input-gate: the standard LSTM cell), its forget-gate bias
initialisation (+1) and its dropout rates, with the hidden size lamb's budget rule gives
(the largest size whose parameter count stays under 24M / 35M for the 10k / 33,278-word vocabularies: 912 and 1366).

Not reproduced: lamb draws its input/inter-layer/output dropout masks anew at every time
step; the AWD stack's locked masks are kept (one per stream and window). Embedding and
weight drop are off in the named configurations (lamb has neither) but available.
"""

from dataclasses import dataclass, field

from fairseq.models import register_model, register_model_architecture

from awd_plugins.errors import AwdUserError, check_range
from awd_plugins.models.awd_lstm import AwdDecoder, AwdLstmConfig
from awd_plugins.models.recurrent_lm import RecurrentLanguageModel
from awd_plugins.modules import WeightDrop
from awd_plugins.modules.mogrifier import MogrifierLSTM


@dataclass
class MogrifierLstmConfig(AwdLstmConfig):
    # Defaults: the authors' PTB configuration (24M parameters); see mogrifier_lstm_ptb.
    emsize: int = field(default=912, metadata={"help": "embedding size (= last layer's size when tied)"})
    nhid: int = field(default=912, metadata={"help": "hidden size of every Mogrifier LSTM layer but the last"})
    nlayers: int = field(default=2, metadata={"help": "number of Mogrifier LSTM layers"})
    dropout: float = field(default=0.7157, metadata={"help": "dropout on the last layer's output (lamb output_dropout)"})
    dropouth: float = field(default=0.291, metadata={"help": "dropout between layers (lamb inter_layer_dropout)"})
    dropouti: float = field(default=0.7291, metadata={"help": "dropout on the embedding output (lamb input_dropout)"})
    dropoute: float = field(default=0.0, metadata={"help": "embedding dropout: drop whole words (lamb: none)"})
    wdrop: float = field(default=0.0, metadata={"help": "weight drop on the hidden-to-hidden weights (lamb: none)"})
    mogrifier_rounds: int = field(
        default=5, metadata={"help": "rounds r of mutual gating of x and h_prev before each step (0: a plain LSTM)"}
    )
    mogrifier_rank: int = field(default=84, metadata={"help": "rank k of the Q^i, R^i matrices (0: full rank)"})
    state_dropout: float = field(
        default=0.3873, metadata={"help": "dropout on h_prev, one mask per stream and window (lamb state_dropout)"}
    )
    # fairseq turns a bool option into a flag that sets it to True: both are off by default
    uncapped_input_gate: bool = field(
        default=False,
        metadata={"help": "the standard LSTM's c = f*c + i*g instead of the authors' capped c = f*c + min(i, 1-f)*g"},
    )
    no_skip_connections: bool = field(
        default=False,
        metadata={"help": "feed only the last layer's output to the softmax (lamb: the sum of all layers' outputs)"},
    )


class MogrifierLstmDecoder(AwdDecoder):
    def __init__(self, cfg: MogrifierLstmConfig, dictionary):
        if cfg.mogrifier_rounds < 0 or cfg.mogrifier_rank < 0:
            raise AwdUserError(
                f"--mogrifier-rounds and --mogrifier-rank must be >= 0, got {cfg.mogrifier_rounds} and {cfg.mogrifier_rank}"
            )
        check_range("state_dropout", cfg.state_dropout, 0.0, 1.0)
        super().__init__(cfg, dictionary)
        self.skip_connections = not cfg.no_skip_connections
        if self.skip_connections and len(set(self.sizes)) > 1:
            raise AwdUserError(
                f"the skip connections sum the layers' outputs, which needs equal layer sizes (got {self.sizes}): "
                "set --nhid to the last layer's size (--emsize when tied, --nhidlast with --n-experts) "
                "or pass --no-skip-connections"
            )

    def make_layer(self, index, input_size, hidden_size, cfg):
        layer = MogrifierLSTM(input_size, hidden_size, cfg.mogrifier_rounds, cfg.mogrifier_rank,
                              not cfg.uncapped_input_gate, cfg.state_dropout, forget_bias=1.0)
        return WeightDrop(layer, ["weight_hh_l0"], cfg.wdrop) if cfg.wdrop > 0 else layer

    def run_layer(self, rnn, x, state):
        return rnn(x, tuple(state))

    def init_state(self, bsz, like):
        return [(like.new_zeros(1, bsz, h), like.new_zeros(1, bsz, h)) for h in self.sizes]

    def run(self, tokens, state):
        if not self.skip_connections:
            return super().run(tokens, state)
        x = self.input_dropout(self.embedding_dropout(self.embed_tokens, tokens))
        new_state, total = [], 0
        for layer, (rnn, layer_state) in enumerate(zip(self.rnns, state)):
            out, layer_state = self.run_layer(rnn, x, layer_state)
            new_state.append(layer_state)
            total = total + out  # lamb's SkipMultiRNNCell: Σ_l output_l (before any dropout)
            if layer < len(self.rnns) - 1:
                x = self.hidden_dropout(out)
        return total, self.output_dropout(total), new_state


@register_model("mogrifier_lstm", dataclass=MogrifierLstmConfig)
class MogrifierLstmModel(RecurrentLanguageModel):
    @classmethod
    def build_model(cls, cfg, task):
        return cls(MogrifierLstmDecoder(cfg, task.target_dictionary))


@register_model_architecture("mogrifier_lstm", "mogrifier_lstm_ptb")
def mogrifier_lstm_ptb(cfg):
    # lamb tune_ptb_24m_lstm_fm_d2_arms/trial_483: num_params 24M, input_embedding_ratio 1, tied,
    # feature_mask_rounds 5, feature_mask_rank 84, input_dropout 0.729, inter_layer_dropout 0.291,
    # state_dropout 0.387, output_dropout 0.716 (the dataclass defaults)
    cfg.emsize = getattr(cfg, "emsize", 912)
    cfg.nhid = getattr(cfg, "nhid", 912)
    cfg.nlayers = getattr(cfg, "nlayers", 2)
    cfg.mogrifier_rounds = getattr(cfg, "mogrifier_rounds", 5)
    cfg.mogrifier_rank = getattr(cfg, "mogrifier_rank", 84)


@register_model_architecture("mogrifier_lstm", "mogrifier_lstm_wt2")
def mogrifier_lstm_wt2(cfg):
    # lamb tune_wikitext-2_35m_lstm_mos2_fm_d2_arms/trial_747: num_params 35M,
    # input_embedding_ratio 0.1993 (272 of 1366), tied, mos_num_components 2, rounds 6, rank 48,
    # input_dropout 0.547, inter_layer_dropout 0.199, state_dropout 0.221, output_dropout 0.348
    cfg.emsize = getattr(cfg, "emsize", 272)
    cfg.nhid = getattr(cfg, "nhid", 1366)
    cfg.nhidlast = getattr(cfg, "nhidlast", 1366)
    cfg.n_experts = getattr(cfg, "n_experts", 2)
    cfg.dropoutl = getattr(cfg, "dropoutl", 0.0)  # lamb's downprojected_output_dropout: -1 (none)
    cfg.nlayers = getattr(cfg, "nlayers", 2)
    cfg.mogrifier_rounds = getattr(cfg, "mogrifier_rounds", 6)
    cfg.mogrifier_rank = getattr(cfg, "mogrifier_rank", 48)
    cfg.dropouti = getattr(cfg, "dropouti", 0.5469)
    cfg.dropouth = getattr(cfg, "dropouth", 0.1988)
    cfg.state_dropout = getattr(cfg, "state_dropout", 0.2214)
    cfg.dropout = getattr(cfg, "dropout", 0.3477)
