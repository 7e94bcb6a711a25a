"""SRU and SRU++ language models (Lei 2021, "When Attention Meets Fast Recurrence:
Training Language Models with Reduced Compute", arXiv:2102.12459; asappresearch/sru
3.0.0-dev ``experiments/srupp_experiments``), REFERENCE §8.

    ids → embedding (width n_d) → Dropout → [SRU++ layer] × depth → Dropout → softmax

``--arch srupp`` stacks SRU++ layers (:class:`~awd_plugins.modules.srupp.SRUpp`),
``--arch sru`` plain SRU layers (:class:`~awd_plugins.modules.sru.SRU`, no
attention) in the same wrapper: the 3.0 cell, not the v1 cell of the 2018 SRU
language model, so it reproduces no published SRU LM figure.

Output layer, as the paper's scripts:

* byte level (enwik8, no ``--adaptive-softmax-cutoff``): embedding ``V × n_d`` and
  an untied ``Linear(n_d, V)``, both U(±√(3/n_d)), bias 0 (``train_enwik8.py``);
* word level (WT103, Billion Word): fairseq's ``AdaptiveInput`` and
  ``AdaptiveSoftmax`` with the published cutoffs, embeddings tied; WT103 also ties
  the projections (``--untie-adaptive-proj`` for Billion Word, which the paper left
  untied). Differences from the reference's Transformer-XL modules, kept because
  they are fairseq's: no output biases; the cluster logits come from a separate
  ``n_d → clusters`` matrix on the hidden state instead of extra rows of the
  head's embedding applied after its projection; fairseq's dictionary puts 4
  special symbols first, so each band holds 2 (WT103) or 1 (Billion Word) fewer
  real words than the reference's band of the same size. Made to match the
  reference: the head projection is tied too when the projections are (fairseq
  ties only the tails), and ``--emb-dropout`` sits where the reference puts it (on
  each band's small embedding before its projection, and after each cluster's
  projection in the softmax, the head included) instead of on the hidden state.
  ``adaptive_loss``, ``split_cross_entropy`` (``--alpha 0 --beta 0``),
  ``fairseq-eval-lm`` and sampling all work (``output_layer``/``nll`` are
  overridden; ``get_normalized_probs`` is fairseq's adaptive one).

State (batch on dim 1, carried across windows by the task): ``(c, memories)`` with
``c`` the stacked cell states (depth, B, n_d) and one memory per layer (M, B, n_d):
the layer's inputs of the previous window (REFERENCE §8.3), empty on the first
window and for layers without attention. ``--memory-len N`` keeps the last N
layer inputs instead (rolling, across windows); 0 = the previous window, the
reference. Training attends to the whole memory; evaluation (``model.eval()``:
validation, ``fairseq-eval-lm``) uses the reference's same-length mask, each
query seeing its W previous positions and itself, with W =
``--eval-memory-len`` (or ``--memory-len``) when set, else the evaluation window
(``--bptt``), as the reference's ``--eval_unroll_size``.

For export (``awd-export``, :mod:`awd_plugins.modules.fixed_memory`) the memories take
a fixed shape: ``((c, memories), valid)`` with every attending layer's memory padded to
``--eval-memory-len`` rows and ``valid`` the count of real (trailing) rows; see
:meth:`SruDecoder.use_fixed_memory`.
"""

from dataclasses import dataclass, field
from typing import List, Optional

import torch
import torch.nn.functional as F
from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from fairseq.models import register_model, register_model_architecture
from fairseq.modules import AdaptiveInput, AdaptiveSoftmax
from fairseq.modules.adaptive_softmax import TiedLinear
from torch import nn

from awd_plugins.errors import AwdUserError, check_range
from awd_plugins.kernels import RECURRENCE_IMPL_HELP, RECURRENCE_IMPLS, check_impl
from awd_plugins.models.recurrent_lm import RecurrentDecoder, RecurrentLanguageModel
from awd_plugins.modules import SplitSoftmax
from awd_plugins.modules.fixed_memory import advance_valid, check_memory_len, init_valid, mask_empty_rows
from awd_plugins.modules.sru import SRU
from awd_plugins.modules.srupp import SRUpp, attention_mask


@dataclass
class SruppConfig(FairseqDataclass):
    n_d: int = field(default=3072, metadata={"help": "hidden size d of every layer (and the embedding width)"})
    n_proj: int = field(default=768, metadata={"help": "attention / projection width p of the SRU++ transform"})
    depth: int = field(default=10, metadata={"help": "number of layers"})
    dropout: float = field(
        default=0.22,
        metadata={"help": "dropout on the embedding and final outputs, in each transform and on the recurrence"},
    )
    rnn_dropout: Optional[float] = field(
        default=None, metadata={"help": "recurrence/transform dropout if it should differ from --dropout"}
    )
    attn_dropout: float = field(default=0.22, metadata={"help": "dropout on the attention weights"})
    emb_dropout: float = field(default=0.0, metadata={"help": "dropout inside the adaptive input/softmax"})
    attn_heads: int = field(default=1, metadata={"help": "attention heads"})
    attn_every: int = field(default=1, metadata={"help": "attention in every k-th layer (layers k-1, 2k-1, ...)"})
    highway_bias: float = field(default=-2.0, metadata={"help": "initial reset-gate (highway) bias b_r"})
    weight_c_init: float = field(default=1.0, metadata={"help": "v_f, v_r ~ U(-w, w)"})
    adaptive_softmax_cutoff: Optional[str] = field(
        default=None,
        metadata={"help": "comma-separated band ends of the adaptive input/softmax (WT103 19997,39997,199997; "
                  "Billion Word 59998,159998); unset = full softmax"},
    )
    n_e: int = field(default=1024, metadata={"help": "embedding width of the first adaptive band"})
    div_val: float = field(default=4.0, metadata={"help": "band i has width n_e / div_val^i"})
    untie_adaptive_proj: bool = field(
        default=False, metadata={"help": "separate input and output projections of the adaptive bands (Billion Word)"}
    )
    tie_weights: bool = field(default=False, metadata={"help": "tie embedding and output matrix (full softmax only)"})
    memory_len: int = field(
        default=0, metadata={"help": "attention memory: 0 = the previous window's layer inputs (reference), N = the last N"}
    )
    eval_memory_len: int = field(
        default=0,
        metadata={"help": "evaluation memory and same-length attention window (0 = --memory-len, or the window --bptt)"},
    )
    recurrence_impl: ChoiceEnum(RECURRENCE_IMPLS) = field(default="auto", metadata={"help": RECURRENCE_IMPL_HELP})


@dataclass
class SruConfig(SruppConfig):
    """Plain SRU LM: SRU++'s wrapper with the 3.0 SRU cell (trained ``v`` terms, dropout mask on c).

    Not the SRU language model of Lei et al. 2018 (asappresearch/sru ``language_model/train_lm.py``):
    that one uses the v1 cell without ``v`` terms and variational dropout on each layer's input, so
    its published PTB perplexity does not apply here. The defaults only borrow its sizes (6 × 910).
    """

    n_d: int = field(default=910, metadata={"help": "hidden size d of every layer (and the embedding width)"})
    n_proj: int = field(default=0, metadata={"help": "factorise the SRU transform through this width (0 = no)"})
    depth: int = field(default=6, metadata={"help": "number of layers"})
    dropout: float = field(default=0.7, metadata={"help": "dropout on the embedding and final outputs"})
    rnn_dropout: Optional[float] = field(default=0.2, metadata={"help": "recurrence dropout (mask on c)"})
    highway_bias: float = field(default=-3.0, metadata={"help": "initial reset-gate (highway) bias b_r"})


def parse_cutoffs(spec: Optional[str], vocab: int) -> List[int]:
    if not spec:
        return []
    try:
        cutoffs = [int(s) for s in str(spec).split(",")]
    except ValueError:
        raise AwdUserError(f"--adaptive-softmax-cutoff must be comma-separated integers, got {spec!r}")
    if any(b <= a for a, b in zip([0] + cutoffs, cutoffs + [vocab])):
        raise AwdUserError(
            f"--adaptive-softmax-cutoff {spec} must be strictly increasing and below the vocabulary size {vocab}"
        )
    return cutoffs


class SruAdaptiveInput(AdaptiveInput):
    """fairseq's ``AdaptiveInput`` with the reference's dropout between each band's small
    embedding and its projection (``AdaptiveEmbedding`` of Transformer-XL / SRU++)."""

    def __init__(self, vocab, padding_idx, n_e, div_val, n_d, cutoffs, dropout):
        super().__init__(vocab, padding_idx, n_e, div_val, n_d, list(cutoffs))
        self.dropout_module = nn.Dropout(dropout)

    @property
    def weight(self):
        # the recurrent base class reads embed_tokens.weight for the state's dtype and device
        return self.embeddings[0][0].weight

    def forward(self, tokens):
        if torch.jit.is_tracing():
            return self._forward_dense(tokens)
        out = self.weight.new_empty(tokens.shape + (self.embedding_dim,))
        lower = 0
        for band, upper in zip(self.embeddings, self.cutoff):
            mask = (tokens >= lower) & (tokens < upper)
            if mask.any():
                out[mask] = band[1](self.dropout_module(band[0](tokens[mask] - lower)))
            lower = upper
        return out

    def _forward_dense(self, tokens):
        """The export form (awd_plugins.inference traces it): every band embeds every token and
        ``where`` keeps the right one. The gather above has data-dependent shapes and skips empty
        bands, which tracing would bake into the graph from the example input."""
        out = self.weight.new_zeros(tokens.shape + (self.embedding_dim,))
        lower = 0
        for band, upper in zip(self.embeddings, self.cutoff):
            inside = ((tokens >= lower) & (tokens < upper)).unsqueeze(-1)
            local = (tokens - lower).clamp(0, upper - lower - 1)  # any row for tokens of other bands
            out = torch.where(inside, band[1](self.dropout_module(band[0](local))), out)
            lower = upper
        return out


class SruAdaptiveSoftmax(AdaptiveSoftmax):
    """fairseq's ``AdaptiveSoftmax`` tied to :class:`SruAdaptiveInput`, with the dropout moved
    to where the reference has it (after each cluster's projection, not on the hidden
    state) and, with ``tie_proj``, the head's projection tied as well."""

    def __init__(self, vocab, n_d, cutoffs, dropout, adaptive_inputs, tie_proj):
        super().__init__(vocab, n_d, list(cutoffs), dropout, adaptive_inputs=adaptive_inputs, tie_proj=tie_proj)
        self.dropout_module.p = 0.0  # the tails keep their nn.Dropout(dropout) after the projection
        head = self.head
        if isinstance(head.word_proj, nn.Sequential):
            proj = head.word_proj[0]
            if tie_proj:
                proj = TiedLinear(adaptive_inputs.weights_for_band(0)[1], transpose=True)
            head.word_proj = nn.Sequential(proj, nn.Dropout(dropout), head.word_proj[1])


class SruDecoder(RecurrentDecoder):
    def __init__(self, cfg: SruppConfig, dictionary, attention: bool):
        super().__init__(dictionary)
        for name in ("n_d", "depth", "attn_heads", "attn_every"):
            if getattr(cfg, name) < 1:
                raise AwdUserError(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(cfg, name)}")
        rnn_dropout = cfg.dropout if cfg.rnn_dropout is None else cfg.rnn_dropout
        for name, value in (("dropout", cfg.dropout), ("rnn_dropout", rnn_dropout),
                            ("attn_dropout", cfg.attn_dropout), ("emb_dropout", cfg.emb_dropout)):
            check_range(name, value, 0.0, 1.0)
        if cfg.memory_len < 0 or cfg.eval_memory_len < 0:
            raise AwdUserError("--memory-len and --eval-memory-len must be ≥ 0")
        d = cfg.n_d
        impl = check_impl(getattr(cfg, "recurrence_impl", "auto"))
        self.attention = attention
        self.memory_len = cfg.memory_len
        self.eval_memory_len = cfg.eval_memory_len or cfg.memory_len
        if attention:
            if cfg.n_proj < 1 or cfg.n_proj % cfg.attn_heads:
                raise AwdUserError(f"--n-proj ({cfg.n_proj}) must be positive and divisible by --attn-heads")
            self.rnn = SRUpp(d, d, cfg.n_proj, cfg.depth, dropout=rnn_dropout, attn_dropout=cfg.attn_dropout,
                             num_heads=cfg.attn_heads, highway_bias=cfg.highway_bias,
                             attention_every_n_layers=cfg.attn_every, weight_c_init=cfg.weight_c_init,
                             recurrence_impl=impl)
            self.attends = list(self.rnn.attends)
        else:
            self.rnn = SRU(d, d, cfg.depth, dropout=rnn_dropout, highway_bias=cfg.highway_bias,
                           projection_size=max(cfg.n_proj, 0), weight_c_init=cfg.weight_c_init,
                           recurrence_impl=impl)
            self.attends = [False] * cfg.depth
        self.drop = nn.Dropout(cfg.dropout)
        self._build_output(cfg, dictionary)

    def _build_output(self, cfg, dictionary):
        vocab, d = len(dictionary), cfg.n_d
        init_range = (3.0 / d) ** 0.5
        cutoffs = parse_cutoffs(cfg.adaptive_softmax_cutoff, vocab)
        if cutoffs:
            self.embed_tokens = SruAdaptiveInput(vocab, dictionary.pad(), cfg.n_e, cfg.div_val, d, cutoffs,
                                                 cfg.emb_dropout)
            self.adaptive_softmax = SruAdaptiveSoftmax(vocab, d, cutoffs, cfg.emb_dropout, self.embed_tokens,
                                                       tie_proj=not cfg.untie_adaptive_proj)
            # reference init: (tied) band embeddings U(±√(3/n_d)), projections Xavier (fairseq's)
            with torch.no_grad():
                for band in self.embed_tokens.embeddings:
                    band[0].weight.uniform_(-init_range, init_range)
                self.embed_tokens.embeddings[0][0].weight[dictionary.pad()].zero_()
            self.output_projection = None
            self.split_softmax = None
            return
        self.embed_tokens = nn.Embedding(vocab, d)
        self.output_projection = nn.Linear(d, vocab)
        nn.init.uniform_(self.embed_tokens.weight, -init_range, init_range)
        nn.init.zeros_(self.output_projection.bias)
        if cfg.tie_weights:
            self.output_projection.weight = self.embed_tokens.weight
        else:
            nn.init.uniform_(self.output_projection.weight, -init_range, init_range)
        self.split_softmax = SplitSoftmax(d, [])

    # -- state and recurrence -----------------------------------------------------------
    def use_fixed_memory(self, memory_len=None):
        """Export's fixed-shape form (issue #16): each attending layer's memory becomes a buffer
        of ``--eval-memory-len`` rows (the evaluation memory and attention window), or of
        ``memory_len`` rows when given (which then replaces ``--eval-memory-len``)."""
        if not self.attention:
            return super().use_fixed_memory(memory_len)
        if check_memory_len(memory_len) is not None:
            self.eval_memory_len = memory_len
        if self.eval_memory_len < 1:
            raise AwdUserError(
                "this SRU++ model attends to the previous evaluation window (--eval-memory-len and --memory-len 0), "
                "whose length the export cannot know: pass awd-export --memory-len N, N = the window it is "
                "evaluated with (fairseq-eval-lm --bptt, e.g. 3072 for enwik8)"
            )
        self.fixed_memory_len = self.eval_memory_len
        return self.fixed_memory_len

    def init_state(self, bsz, like):
        d = self.rnn.hidden_size
        cap = self.fixed_memory_len
        if cap is None:
            return (like.new_zeros(len(self.attends), bsz, d), [like.new_zeros(0, bsz, d) for _ in self.attends])
        memories = [like.new_zeros(cap if attends else 0, bsz, d) for attends in self.attends]
        return (like.new_zeros(len(self.attends), bsz, d), memories), init_valid(bsz, like)

    def _next_memory(self, old, new, cap):
        if cap <= 0:
            return new
        both = torch.cat([old, new]) if old.size(0) else new
        return both[-cap:]

    def run(self, tokens, state):
        valid = None
        if self.fixed_memory_len is not None:  # export: ((c, padded memories), count of real rows)
            if self.training:
                raise AwdUserError("the fixed-shape attention memory is an evaluation form (export): call eval()")
            state, valid = state
        c0, memories = state
        x = self.drop(self.embed_tokens(tokens))
        if not self.attention:
            h, c = self.rnn(x, c0)
            return h, self.drop(h), (c, memories)
        length = tokens.size(0)
        mem_len = max(m.size(0) for m in memories)
        window = None
        if not self.training:
            window = self.eval_memory_len if self.eval_memory_len > 0 else max(mem_len, length)
        mask = attention_mask(mem_len, length, window, like=x)
        if valid is not None:  # one mask per stream: B × 1 (heads) × T × S
            mask = mask_empty_rows(mask, valid, mem_len).unsqueeze(1)
        h, c, inputs = self.rnn(x, c0, memory=list(memories), attn_mask=mask)
        cap = self.memory_len if self.training else self.eval_memory_len
        new_memories = [self._next_memory(old, new, cap) if attends else old
                        for old, new, attends in zip(memories, inputs, self.attends)]
        if valid is not None:
            return h, self.drop(h), ((c, new_memories), advance_valid(valid, length, cap))
        return h, self.drop(h), (c, new_memories)

    # -- output -------------------------------------------------------------------------
    def output_layer(self, features):
        if self.adaptive_softmax is not None:
            return features  # fairseq's adaptive convention: the softmax reads the features
        return super().output_layer(features)

    def nll(self, features, targets):
        if self.adaptive_softmax is None:
            return super().nll(features, targets)
        targets = targets.reshape(-1)
        logits, new_targets = self.adaptive_softmax(features, targets)
        _, rows = self.adaptive_softmax.adapt_target(targets)
        nll = F.cross_entropy(logits[0].float(), new_targets[0], reduction="none")
        for lg, tg, idx in zip(logits[1:], new_targets[1:], rows):
            if idx is not None:
                nll = nll.index_add(0, idx, F.cross_entropy(lg.float(), tg, reduction="none"))
        return nll


@register_model("srupp", dataclass=SruppConfig)
class SruppModel(RecurrentLanguageModel):
    @classmethod
    def build_model(cls, cfg, task):
        return cls(SruDecoder(cfg, task.target_dictionary, attention=True))


@register_model("sru", dataclass=SruConfig)
class SruModel(RecurrentLanguageModel):
    @classmethod
    def build_model(cls, cfg, task):
        return cls(SruDecoder(cfg, task.target_dictionary, attention=False))


# Published configurations (REFERENCE §8.6, asappresearch/sru experiments/srupp_experiments).
def _defaults(cfg, **values):
    for name, value in values.items():
        setattr(cfg, name, getattr(cfg, name, value))


@register_model_architecture("srupp", "srupp_enwik8_base")
def srupp_enwik8_base(cfg):
    # train_enwik8.py defaults (107.6M parameters); eval --eval_unroll_size 3072
    _defaults(cfg, n_d=3072, n_proj=768, depth=10, dropout=0.22, attn_dropout=0.22, attn_heads=1, attn_every=1,
              highway_bias=-2.0)


@register_model_architecture("srupp", "srupp_enwik8_large")
def srupp_enwik8_large(cfg):
    # --n_d 4096 --n_proj 1024 --dropout 0.32 --attn_dropout 0.32 (190.6M): the README's command line; its
    # table's 0.953 bpc belongs to the ratio-8 checkpoint (srupp_enwik8_large_ratio8), not to this config
    _defaults(cfg, n_d=4096, n_proj=1024, dropout=0.32, attn_dropout=0.32)
    srupp_enwik8_base(cfg)


@register_model_architecture("srupp", "srupp_enwik8_large_ratio8")
def srupp_enwik8_large_ratio8(cfg):
    # the released "Enwik8 large" checkpoint (README table: 195M, n_d 6016 / n_proj 752, ratio 8), whose test
    # 0.953 bpc the README lists; no command line is published for it, so the rest is the large run's
    _defaults(cfg, n_d=6016, n_proj=752)
    srupp_enwik8_large(cfg)


@register_model_architecture("srupp", "srupp_wt103_base")
def srupp_wt103_base(cfg):
    # train_wt103.py defaults (147.7M); eval --eval_unroll_size 2560
    _defaults(cfg, n_d=3072, n_proj=768, depth=10, dropout=0.15, attn_dropout=0.15, emb_dropout=0.15,
              attn_heads=1, attn_every=1, highway_bias=-2.0, adaptive_softmax_cutoff="19997,39997,199997",
              n_e=1024, div_val=4.0, untie_adaptive_proj=False)


@register_model_architecture("srupp", "srupp_wt103_large")
def srupp_wt103_large(cfg):
    # --n_d 4096 --n_proj 1024 --dropout 0.2 --attn_dropout 0.2 --emb_dropout 0.2 --unroll_size 1024 (231.7M):
    # the README's command line; its table's 17.1 belongs to the ratio-8 checkpoint (srupp_wt103_large_ratio8)
    _defaults(cfg, n_d=4096, n_proj=1024, dropout=0.2, attn_dropout=0.2, emb_dropout=0.2)
    srupp_wt103_base(cfg)


@register_model_architecture("srupp", "srupp_wt103_large_ratio8")
def srupp_wt103_large_ratio8(cfg):
    # the released "Wiki-103 large" checkpoint (README table: 234M with tied duplicates, n_d 5952 / n_proj 744,
    # ratio 8), whose test 17.1 the README lists; no command line is published, the rest is the large run's
    _defaults(cfg, n_d=5952, n_proj=744)
    srupp_wt103_large(cfg)


@register_model_architecture("srupp", "srupp_wt103_large_k5")
def srupp_wt103_large_k5(cfg):
    # README table: 225M, (n_d, n_proj) = (5952, 744), 2 attention layers (k = 5); the README gives no
    # command line for it, so the dropouts are the large run's
    _defaults(cfg, n_d=5952, n_proj=744, attn_every=5)
    srupp_wt103_large(cfg)


@register_model_architecture("srupp", "srupp_lm1b_base")
def srupp_lm1b_base(cfg):
    # train_lm1b.py defaults (328M); projections not shared; eval --eval_unroll_size 96
    _defaults(cfg, n_d=4096, n_proj=1024, depth=10, dropout=0.05, attn_dropout=0.0, emb_dropout=0.0,
              attn_heads=1, attn_every=1, highway_bias=-2.0, adaptive_softmax_cutoff="59998,159998",
              n_e=1024, div_val=4.0, untie_adaptive_proj=True)


@register_model_architecture("srupp", "srupp_lm1b_large_k5")
def srupp_lm1b_large_k5(cfg):
    # --n_d 7616 --dropout 0.1 --attn_every_n_layers 5 --batch_size 192 (465M)
    _defaults(cfg, n_d=7616, dropout=0.1, attn_every=5)
    srupp_lm1b_base(cfg)


@register_model_architecture("sru", "sru_6x910")
def sru_6x910(cfg):
    # 6 tied layers of 910 with dropout 0.7 / 0.2 and highway bias −3: the sizes of train_lm.py's PTB model,
    # but with the 3.0 cell (see SruConfig), hence no published figure and no PTB name (formerly sru_ptb)
    _defaults(cfg, n_d=910, depth=6, dropout=0.7, rnn_dropout=0.2, highway_bias=-3.0, tie_weights=True)
