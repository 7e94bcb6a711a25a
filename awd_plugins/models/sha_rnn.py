"""SHA-RNN / SHA-LSTM (Merity 2019, "Single Headed Attention RNN: Stop Thinking
With Your Head", arXiv:1911.11423), REFERENCE §7.

    ids → embedding (tied with the decoder) → Dropout(dropouti)
        → ShaBlock_0 → … → ShaBlock_{L−1}        (LSTM, optional attention, Boom)
        → Dropout(dropout) → tied decoder, full softmax

All dropouts are plain (element-wise) dropouts, not locked ones; ``dropouth`` is
used inside the blocks. The published model has attention only in block L−2
(``sha_rnn_enwik8``); the paper's better variant attends in every block
(``sha_rnn_enwik8_full``).

State carried between windows, per block: the LSTM ``(h, c)`` (1×B×d each) and the
attention memory (M×B×d, the last ≤ ``--memory-len`` LN_mem-normalised states);
blocks without attention carry an empty (0×B×d) memory. For export
(:meth:`ShaRnnDecoder.use_fixed_memory`, :mod:`awd_plugins.modules.fixed_memory`) the
state is ``(blocks' state, valid)`` with each attention memory padded to
``--memory-len`` rows and ``valid`` the count of real (trailing) rows. The task's carried-state
machinery detaches it between windows and starts it empty at every epoch and
evaluation (REFERENCE §7.2).

Initialisation (REFERENCE §7.5): Linear and Embedding weights N(0, (0.1/√d)²),
Linear biases 0, LayerNorms 1/0 (the reference's apex LayerNorms escape its init
hook), attention gates 0, LSTMs torch's default U(±1/√d).
"""

import math
from dataclasses import dataclass, field
from typing import Dict, List

import torch
from fairseq.dataclass import FairseqDataclass
from fairseq.models import register_model, register_model_architecture
from torch import nn

from awd_plugins.errors import AwdUserError
from awd_plugins.models.awd_lstm import check_dropouts, check_sizes
from awd_plugins.models.recurrent_lm import RecurrentDecoder, RecurrentLanguageModel
from awd_plugins.modules.fixed_memory import advance_valid, check_memory_len, init_valid
from awd_plugins.modules.sha_block import ShaBlock
from awd_plugins.modules.split_softmax import SplitSoftmax, parse_splits


@dataclass
class ShaRnnConfig(FairseqDataclass):
    emsize: int = field(default=1024, metadata={"help": "model width d: embedding, LSTM and attention size"})
    nhid: int = field(default=4096, metadata={"help": "Boom feed-forward width (summed back to d in chunks of d)"})
    nlayers: int = field(default=4, metadata={"help": "number of SHA blocks"})
    dropout: float = field(default=0.1, metadata={"help": "dropout on the last block's output"})
    dropouth: float = field(default=0.1, metadata={"help": "dropout inside the blocks (LSTM output, attention, Boom)"})
    dropouti: float = field(default=0.1, metadata={"help": "dropout on the embedding output"})
    wdrop: float = field(
        default=0.0, metadata={"help": "weight drop (DropConnect) on each block's LSTM W_hh (reference default 0: off)"}
    )
    attention_blocks: str = field(
        default="auto",
        metadata={
            "help": "blocks with attention: 'auto' (the reference: block nlayers-2 only), 'all', 'none', "
            "or comma-separated 0-based block indices (negative counts from the end)"
        },
    )
    memory_len: int = field(
        default=5000,
        metadata={"help": "attention span cap in keys, memory plus window (reference num_max_positions 5000)"},
    )
    splits: str = field(
        default="auto",
        metadata={"help": "split-softmax boundaries: 'auto' (the reference's rule: none below 75k symbols), 'none', or ids"},
    )


def parse_attention_blocks(spec: str, nlayers: int) -> List[int]:
    """Block indices that attend, from ``--attention-blocks``."""
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        return [max(nlayers - 2, 0)]
    if spec == "all":
        return list(range(nlayers))
    if spec in ("none", ""):
        return []
    try:
        indices = [int(s) for s in spec.split(",")]
    except ValueError:
        raise AwdUserError(f"--attention-blocks must be 'auto', 'all', 'none' or comma-separated integers, got {spec!r}")
    blocks = []
    for i in indices:
        if not -nlayers <= i < nlayers:
            raise AwdUserError(f"--attention-blocks: block {i} does not exist with --nlayers {nlayers}")
        blocks.append(i % nlayers)
    return sorted(set(blocks))


class ShaRnnDecoder(RecurrentDecoder):
    def __init__(self, cfg: ShaRnnConfig, dictionary):
        super().__init__(dictionary)
        check_sizes(cfg, ["emsize", "nhid", "nlayers"])
        if cfg.memory_len < 1:
            raise AwdUserError(f"--memory-len must be a positive integer, got {cfg.memory_len}")
        check_dropouts(cfg, ["dropout", "dropouth", "dropouti", "wdrop"])
        if cfg.nhid < cfg.emsize:
            raise AwdUserError(
                f"--nhid ({cfg.nhid}) must be at least --emsize ({cfg.emsize}): Boom sums chunks of width emsize"
            )
        self.dim = cfg.emsize
        self.attention_blocks = parse_attention_blocks(cfg.attention_blocks, cfg.nlayers)
        self.blocks = nn.ModuleList(
            ShaBlock(cfg.emsize, cfg.nhid, cfg.dropouth, i in self.attention_blocks, cfg.memory_len, cfg.wdrop)
            for i in range(cfg.nlayers)
        )
        vocab = len(dictionary)
        try:
            splits = parse_splits(cfg.splits, vocab)
        except ValueError as e:
            raise AwdUserError(str(e))
        self.embed_tokens = nn.Embedding(vocab, cfg.emsize)
        self.output_projection = nn.Linear(cfg.emsize, vocab)
        self.output_projection.weight = self.embed_tokens.weight  # main.py forces tied weights
        self.split_softmax = SplitSoftmax(cfg.emsize, splits)
        self.input_dropout = nn.Dropout(cfg.dropouti)
        self.output_dropout = nn.Dropout(cfg.dropout)
        self.reset_parameters()

    def reset_parameters(self):
        """REFERENCE §7.5. LayerNorms and LSTMs keep their construction-time init."""
        std = 0.1 / math.sqrt(self.dim)
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=std)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        for block in self.blocks:
            if block.attn is not None:
                block.attn.reset_gates()

    def use_fixed_memory(self, memory_len=None):
        """Export's fixed-shape form (issue #16): each attention memory becomes a buffer of
        ``--memory-len`` rows (the cap used in training and evaluation alike), or of
        ``memory_len`` rows when given (which then replaces the model's cap)."""
        if not self.attention_blocks:
            return super().use_fixed_memory(memory_len)
        if check_memory_len(memory_len) is not None:
            for block in self.blocks:
                block.memory_len = memory_len
        self.fixed_memory_len = self.blocks[0].memory_len
        return self.fixed_memory_len

    def init_state(self, bsz, like):
        zeros = lambda n: like.new_zeros(n, bsz, self.dim)  # noqa: E731
        cap = self.fixed_memory_len
        if cap is None:
            return [(zeros(1), zeros(1), zeros(0)) for _ in self.blocks]
        blocks = [(zeros(1), zeros(1), zeros(cap if block.has_attention else 0)) for block in self.blocks]
        return blocks, init_valid(bsz, like)

    def run(self, tokens, state):
        valid = None
        if self.fixed_memory_len is not None:  # export: (blocks' state with padded memories, count of real rows)
            state, valid = state
        x = self.input_dropout(self.embed_tokens(tokens))
        new_state = []
        for block, (h, c, memory) in zip(self.blocks, state):
            x, (h, c), memory = block(x, (h, c), memory, valid)
            new_state.append((h, c, memory))
        if valid is not None:
            new_state = (new_state, advance_valid(valid, tokens.size(0), self.fixed_memory_len))
        return x, self.output_dropout(x), new_state


@register_model("sha_rnn", dataclass=ShaRnnConfig)
class ShaRnnModel(RecurrentLanguageModel):
    @classmethod
    def build_model(cls, cfg, task):
        return cls(ShaRnnDecoder(cfg, task.target_dictionary))


def map_reference_state_dict(reference: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Key names of a ``Smerity/sha-rnn`` ``SHARNN.state_dict()`` (wdrop 0) → this model's.

    Block keys are identical under ``decoder.``; the tied ``encoder``/``decoder``
    become ``embed_tokens``/``output_projection``.
    """
    renamed = {"encoder.weight": "decoder.embed_tokens.weight", "decoder.weight": "decoder.output_projection.weight",
               "decoder.bias": "decoder.output_projection.bias"}
    out = {}
    for key, value in reference.items():
        if key in renamed:
            out[renamed[key]] = value
        elif key.startswith("blocks."):
            out["decoder." + key] = value
        else:
            raise KeyError(f"unexpected SHA-RNN state-dict key {key!r}")
    return out


# Named architectures with the published settings (REFERENCE §7.1, §7.6).
@register_model_architecture("sha_rnn", "sha_rnn_enwik8")
def sha_rnn_enwik8(cfg):
    # sha-rnn README: --emsize 1024 --nhid 4096 --nlayers 4 --dropouth 0.1 --dropouti 0.1 --dropout 0.1
    cfg.emsize = getattr(cfg, "emsize", 1024)
    cfg.nhid = getattr(cfg, "nhid", 4096)
    cfg.nlayers = getattr(cfg, "nlayers", 4)
    cfg.dropout = getattr(cfg, "dropout", 0.1)
    cfg.dropouth = getattr(cfg, "dropouth", 0.1)
    cfg.dropouti = getattr(cfg, "dropouti", 0.1)
    cfg.attention_blocks = getattr(cfg, "attention_blocks", "auto")


@register_model_architecture("sha_rnn", "sha_rnn_enwik8_full")
def sha_rnn_enwik8_full(cfg):
    # The paper's better variant: attention in every block (README: use_attn for all layers, batch 8).
    cfg.attention_blocks = getattr(cfg, "attention_blocks", "all")
    sha_rnn_enwik8(cfg)
