"""The one decoder interface every awd-plugins architecture implements.

A recurrent LM here is a :class:`RecurrentDecoder` subclass that implements two
methods,

* ``init_state(bsz, like)``: the zero state for ``bsz`` streams, a nested tuple/list
  of tensors whose **batch dimension is dim 1** (LSTM ``(1, B, H)`` pairs, QRNN
  cells and previous inputs, attention memories ``(M, B, E)``, ...);
* ``run(tokens, state)``: time-major ``tokens`` (T×B) → ``(raw_out, dropped_out,
  new_state)`` where ``raw_out`` is the last layer's output before the final
  dropout and ``dropped_out`` after it (both T×B×H, REFERENCE §2.1),

and owns ``embed_tokens`` / ``output_projection`` (tied or not) and a
:class:`~awd_plugins.modules.SplitSoftmax`. Everything else is shared here, so the
task, the criterions, the cache pointer, ``fairseq-eval-lm`` and sampling work the
same way for every architecture:

* **carried state** (REFERENCE §10.1): consecutive windows of the same streams
  continue each other's state. The task names a stream set with ``carry_key`` and
  gives the window's first column ``carry_pos``; the state is kept detached on the
  decoder (not a buffer: not saved, not cast) and used only if the window really
  continues the previous one. Re-running the same window (fairseq's overflow
  retry) reuses the same input state; anything else starts from zeros.
* **incremental decoding** for fairseq's ``SequenceGenerator`` (sampling).
* **cache pointer** mixed into ``get_normalized_probs`` during evaluation.
"""

from typing import Any, Callable, Dict, Optional

import torch
from fairseq.models import FairseqIncrementalDecoder, FairseqLanguageModel
from torch import nn

from awd_plugins.autocast import bf16_autocast
from awd_plugins.errors import AwdUserError
from awd_plugins.modules.cache_pointer import ContinuousCachePointer
from awd_plugins.modules.split_softmax import SplitSoftmax


def map_state(fn: Callable[[torch.Tensor], torch.Tensor], state: Any) -> Any:
    """Apply ``fn`` to every tensor of a nested tuple/list/dict state."""
    if torch.is_tensor(state):
        return fn(state)
    if isinstance(state, (list, tuple)):
        return type(state)(map_state(fn, s) for s in state)
    if isinstance(state, dict):
        return {k: map_state(fn, v) for k, v in state.items()}
    return state


class _Carry:
    __slots__ = ("pos", "length", "bsz", "state_in", "state_out")

    def __init__(self, pos, length, bsz, state_in, state_out):
        self.pos, self.length, self.bsz, self.state_in, self.state_out = pos, length, bsz, state_in, state_out


class RecurrentDecoder(FairseqIncrementalDecoder):
    """Base decoder: subclasses implement :meth:`init_state` and :meth:`run`."""

    embed_tokens: nn.Embedding
    output_projection: nn.Linear
    split_softmax: SplitSoftmax

    def __init__(self, dictionary):
        super().__init__(dictionary)
        self._carried: Dict[str, _Carry] = {}
        # --cpu-bf16 / --gpu-bf16 (awd_plugins/autocast.py): "cpu" / "cuda" runs the matmuls in bf16 there
        self.bf16_autocast: Optional[str] = None

    # -- to implement -------------------------------------------------------------
    def init_state(self, bsz: int, like: torch.Tensor) -> Any:
        raise NotImplementedError

    def run(self, tokens: torch.Tensor, state: Any):
        raise NotImplementedError

    # -- fixed-shape state (export) -----------------------------------------------------
    #: the memory cap once :meth:`use_fixed_memory` switched the state to its fixed-shape form
    fixed_memory_len: Optional[int] = None

    def use_fixed_memory(self, memory_len: Optional[int] = None) -> Optional[int]:
        """Switch ``init_state``/``run`` to a state whose shapes never change (issue #16,
        :mod:`awd_plugins.modules.fixed_memory`): ``(state, valid)`` with every attention memory
        padded to its evaluation cap and ``valid`` (int64, 1×B) the count of real rows.
        Returns the cap, or None for decoders without an attention memory, whose state keeps
        its shape anyway (they override nothing). ``memory_len`` overrides the cap; called on
        export's copy of the decoder only (training and evaluation never switch)."""
        if memory_len is not None:
            raise AwdUserError(
                f"--memory-len applies to models with an attention memory (SHA-RNN with attention, SRU++); "
                f"this {type(self).__name__} has none"
            )
        return None

    # -- carried state --------------------------------------------------------------
    def reset_carried_state(self, key: Optional[str] = None, keep: Optional[str] = None):
        """Forget the carried state of ``key``, or of every stream set but ``keep``."""
        for k in [key] if key is not None else list(self._carried):
            if k != keep:
                self._carried.pop(k, None)

    def export_carried_state(self, key: str) -> Optional[Dict[str, Any]]:
        """The state carried out of the last window of ``key`` (for checkpoints), or None."""
        carry = self._carried.get(key)
        if carry is None:
            return None
        return {"pos": carry.pos, "length": carry.length, "bsz": carry.bsz, "state": carry.state_out}

    def import_carried_state(self, key: str, saved: Dict[str, Any]):
        """Carry ``saved`` (from :meth:`export_carried_state`) into the window that continues it."""
        like = self.embed_tokens.weight
        state = map_state(lambda t: t.to(device=like.device, dtype=t.dtype), saved["state"])
        self._carried[key] = _Carry(int(saved["pos"]), int(saved["length"]), int(saved["bsz"]), None, state)

    def _carried_state(self, key: str, pos: int, bsz: int, length: int):
        prev = self._carried.get(key)
        if prev is None or prev.bsz != bsz:
            return None
        if pos == prev.pos + prev.length:
            return prev.state_out
        if pos == prev.pos and length == prev.length:
            return prev.state_in
        return None

    # -- forward ----------------------------------------------------------------------
    def forward(
        self,
        prev_output_tokens: torch.Tensor,
        incremental_state: Optional[Dict[str, Dict[str, Optional[torch.Tensor]]]] = None,
        features_only: bool = False,
        carry_key: Optional[str] = None,
        carry_pos: Optional[int] = None,
        **unused,
    ):
        tokens = prev_output_tokens
        state = None
        if incremental_state is not None:
            state = self._get_cached(incremental_state)
            if state is not None:
                tokens = tokens[:, -1:]
        elif carry_key is not None:
            state = self._carried_state(carry_key, int(carry_pos), tokens.size(0), tokens.size(1))
        if state is None:
            state = self.init_state(tokens.size(0), self.embed_tokens.weight)

        with bf16_autocast(self.bf16_autocast):
            raw, dropped, new_state = self.run(tokens.t(), state)
        if self.bf16_autocast:  # AR/TAR and the cache pointer see fp32 outputs
            raw, dropped = raw.float(), dropped.float()

        if incremental_state is not None:
            self._set_cached(incremental_state, new_state)
        elif carry_key is not None:
            detach = lambda t: t.detach()  # noqa: E731
            self._carried[carry_key] = _Carry(
                int(carry_pos), tokens.size(1), tokens.size(0), map_state(detach, state), map_state(detach, new_state)
            )
        features = dropped.transpose(0, 1)
        # "attn" is read by fairseq's SequenceGenerator; recurrent decoders have none
        extra = {"raw_out": raw.transpose(0, 1), "dropped_out": features, "attn": None}
        if features_only:
            return features, extra
        return self.output_layer(features), extra

    def output_layer(self, features: torch.Tensor) -> torch.Tensor:
        """Logits; with a split softmax these are already log-probabilities."""
        with bf16_autocast(self.bf16_autocast):
            if self.split_softmax.nclusters == 1:
                return self.output_projection(features)
            return self.split_softmax.log_prob(features, self.output_projection.weight, self.output_projection.bias)

    def nll(self, features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """−log p(target) per position, through the split softmax (fp32)."""
        flat = features.reshape(-1, features.size(-1))
        with bf16_autocast(self.bf16_autocast):
            return self.split_softmax.nll(flat, targets.reshape(-1), self.output_projection.weight, self.output_projection.bias)

    # -- incremental decoding -----------------------------------------------------------
    def _get_cached(self, incremental_state):
        cached = self.get_incremental_state(incremental_state, "recurrent_state")
        return None if cached is None else cached["state"]

    def _set_cached(self, incremental_state, state):
        self.set_incremental_state(incremental_state, "recurrent_state", {"state": state})

    def reorder_incremental_state(self, incremental_state, new_order: torch.Tensor):
        state = self._get_cached(incremental_state)
        if state is not None:
            self._set_cached(incremental_state, map_state(lambda t: t.index_select(1, new_order), state))

    def max_positions(self):
        return int(1e6)


class RecurrentLanguageModel(FairseqLanguageModel):
    """fairseq LM around a :class:`RecurrentDecoder`, with the optional cache pointer."""

    def __init__(self, decoder: RecurrentDecoder):
        super().__init__(decoder)
        self.pointer: Optional[ContinuousCachePointer] = None
        self._pointer_key = None

    def set_pointer(self, window: int, theta: float, lambdasm: float):
        """Mix a continuous cache pointer into evaluation (REFERENCE §5); ``window`` 0 turns it off."""
        self.pointer = ContinuousCachePointer(window, theta, lambdasm) if window > 0 else None
        self._pointer_key = None

    def reset_carried_state(self, key: Optional[str] = None, keep: Optional[str] = None):
        self.decoder.reset_carried_state(key, keep)
        if self.pointer is not None:
            self.pointer.reset()
            self._pointer_key = None

    def load_state_dict(self, state_dict, strict=True, model_cfg=None, args=None):
        if getattr(self, "remap_embeddings", None) is not None:  # set by the task (--remap-embeddings)
            state_dict = self.remap_embeddings(self, state_dict)
        key = "decoder.embed_tokens.weight"
        if key in state_dict and state_dict[key].size(0) != self.decoder.embed_tokens.weight.size(0):
            raise AwdUserError(
                f"the checkpoint was trained with a dictionary of {state_dict[key].size(0)} symbols but this "
                f"data-bin's dict.txt has {self.decoder.embed_tokens.weight.size(0)}: use the data-bin the model was trained on"
            )
        try:
            return super().load_state_dict(state_dict, strict=strict, model_cfg=model_cfg, args=args)
        except RuntimeError as e:  # other sizes or layers: torch's multi-line report, in one line
            details = "; ".join(line.strip() for line in str(e).splitlines()[1:3] if line.strip())
            raise AwdUserError(
                f"the checkpoint's weights do not fit this {type(self).__name__} ({details[:300]}): "
                "give the architecture and model options it was trained with"
            ) from e

    def get_normalized_probs(self, net_output, log_probs: bool, sample: Optional[Dict[str, Any]] = None):
        if sample is None and not self.training and log_probs:
            # Generation: fairseq divides the logits by the temperature before this call, so at
            # low temperature a prompt token forced by the generator can get probability
            # exp(-5000) = 0 in fp32 and torch.multinomial rejects the all-zero row. A floor of
            # e^-80 per token (under 1e-30 of mass over any vocabulary) keeps every row valid.
            return super().get_normalized_probs(net_output, True, sample).clamp(min=-80.0)
        knn = getattr(self, "knn", None)  # a kNN-LM datastore (awd_plugins.knn), set by the task
        if knn is not None and self.pointer is None and not self.training and sample is not None:
            mixed = knn(super().get_normalized_probs(net_output, True, sample), net_output[1]["raw_out"])
            return mixed if log_probs else mixed.exp()
        if self.pointer is None or self.training or sample is None or "carry_key" not in sample.get("net_input", {}):
            return super().get_normalized_probs(net_output, log_probs, sample)
        net_input = sample["net_input"]
        key = (net_input["carry_key"], int(net_input["carry_pos"]))
        if self._pointer_key is None or key[0] != self._pointer_key[0] or key[1] != self._pointer_key[1]:
            self.pointer.reset()
        self._pointer_key = (key[0], key[1] + sample["target"].size(1))
        if net_output[0].shape[:2] != sample["target"].shape:
            raise AwdUserError("the cache pointer needs whole windows: leave fairseq-eval-lm's --softmax-batch at its default")
        lprobs = super().get_normalized_probs(net_output, True, sample)
        mixed = self.pointer(lprobs, net_output[1]["raw_out"], sample["target"])
        if knn is not None:
            mixed = knn(mixed, net_output[1]["raw_out"])  # p_kNN mixed over the pointer's mixture
        return mixed if log_probs else mixed.exp()
