"""Dynamic evaluation (Krause, Kahembwe, Murray & Renals 2018, arXiv:1709.07432).

While evaluating, the model adapts to the text it has just scored: the evaluation
stream is cut into segments s_1, s_2, ...; segment s_i is scored with the current
weights θ_{i−1} (this is the reported loss), then one gradient step is taken on
that segment's mean cross-entropy L(s_i), and the next segment is scored with the
result. A decay pulls the weights back toward the trained ones θ_g:

* ``sgd`` (paper §5, "dynamic evaluation with a global prior"):

      θ_i = θ_{i−1} − η ∇L(s_i) + λ (θ_g − θ_{i−1})

* ``rms`` (paper §6, "RMSprop-like update with training-set statistics", the
  rule of the authors' dynamiceval.py): per parameter element,

      MS   = sqrt( mean over training batches of (∇L_k)² )          (once, before evaluating)
      r    = min( MS / mean_over_tensors(mean(MS)), 1/λ )           (decay rate, clipped)
      θ_i  = θ_{i−1} − η ∇L(s_i) / (MS + ε) + λ r ⊙ (θ_g − θ_{i−1})

  The statistics are gathered on the training split, in evaluation mode (no
  dropout), with the same segment length and carried state, on B_stats streams
  (the authors' default 100) for ``--dynamic-eval-stats-batches`` batches (0: all).

Everything goes through the one decoder interface (``init_state``/``run`` and the
split-softmax ``nll``), so every architecture of the package gets it, and since the
adapted model's outputs are what ``get_normalized_probs`` sees, the cache pointer
mixes on top of them. The hidden state carried to the next segment is the one the
scoring pass produced (computed with θ_{i−1}), detached, as in the authors' code.

With η = 0 every update is exactly zero (θ stays θ_g bit for bit), so the result
equals plain evaluation.

Hook into ``fairseq-eval-lm``: its ``SequenceScorer`` runs the model under
``torch.no_grad``. The task wraps the batch iterator it hands to eval-lm
(:meth:`DynamicEvaluator.adapt_while_scoring`); while a segment is being scored the
decoder's ``run`` is redirected to a version that keeps the autograd graph, and
when eval-lm asks for the next segment the wrapper takes the gradient step on the
segment just scored (one forward pass per segment, as in the paper).
"""

import logging
import math
import time
from contextlib import contextmanager
from typing import Any, Dict, Iterable, Iterator, List, Optional

import torch

from awd_plugins.errors import AwdUserError

logger = logging.getLogger(__name__)

RULES = ("sgd", "rms")
# dynamiceval.py's defaults (tuned for AWD-LSTM on PTB): η 5e-5, λ 0.002, ε 2e-5, segments
# of 5 tokens, gradient statistics on 100 training streams
DEFAULT_EPSILON = 2e-5
DEFAULT_STATS_STREAMS = 100


def check_options(rule: Optional[str], lr: float, decay: float, bptt: Optional[int], epsilon: float = DEFAULT_EPSILON):
    """Raise :class:`AwdUserError` for out-of-range dynamic-evaluation options."""
    if rule not in RULES:
        raise AwdUserError(f"--dynamic-eval must be one of {', '.join(RULES)}, got {rule!r}")
    if not (lr >= 0 and math.isfinite(lr)):
        raise AwdUserError(f"--dynamic-eval-lr must be a finite number >= 0, got {lr}")
    if not 0.0 <= decay <= 1.0:
        raise AwdUserError(f"--dynamic-eval-decay must be in [0, 1], got {decay}")
    if bptt is not None and bptt < 1:
        raise AwdUserError(f"--dynamic-eval-bptt must be positive, got {bptt}")
    if not epsilon > 0:
        raise AwdUserError(f"--dynamic-eval-epsilon must be positive, got {epsilon}")


def segment_loss(decoder, tokens: torch.Tensor, targets: torch.Tensor, state: Any):
    """Mean −log p(target) of a window (tokens/targets B×T) from ``state``, keeping the graph.

    Returns ``(loss, new_state)``; the loss is the mean over the B×T targets, as
    ``nn.CrossEntropyLoss`` in dynamiceval.py.
    """
    _, dropped, new_state = decoder.run(tokens.t(), state)  # T×B×H
    return decoder.nll(dropped.transpose(0, 1), targets).mean(), new_state


def _columns(sample: Dict[str, Any], a: int, b: int) -> Dict[str, Any]:
    """Columns [a, b) of an evaluation window, ``carry_pos`` advanced accordingly."""
    net = sample["net_input"]
    src = net["src_tokens"][:, a:b]
    return {
        **sample,
        "ntokens": src.numel(),
        "net_input": {**net, "src_tokens": src, "src_lengths": torch.full_like(net["src_lengths"], b - a),
                      "carry_pos": int(net["carry_pos"]) + a},
        "target": sample["target"][:, a:b],
    }


def _join(first: Dict[str, Any], second: Dict[str, Any]) -> Dict[str, Any]:
    """Two consecutive windows of the same streams as one."""
    net = first["net_input"]
    src = torch.cat([net["src_tokens"], second["net_input"]["src_tokens"]], dim=1)
    return {
        **first,
        "ntokens": src.numel(),
        "net_input": {**net, "src_tokens": src, "src_lengths": torch.full_like(net["src_lengths"], src.size(1))},
        "target": torch.cat([first["target"], second["target"]], dim=1),
    }


def resegment(batches: Iterable[Dict[str, Any]], seg_len: Optional[int]) -> Iterator[Dict[str, Any]]:
    """Consecutive evaluation windows re-cut into segments of exactly ``seg_len`` columns (the last
    may be shorter), whatever the window length: the authors' segmentation of the stream.

    ``carry_pos`` follows the columns, so the carried state and the cache pointer continue
    from one segment to the next exactly as across windows.
    """
    if not seg_len:
        yield from batches
        return
    pending = None
    for batch in batches:
        pending = batch if pending is None else _join(pending, batch)
        tlen, a = pending["target"].size(1), 0
        while tlen - a >= seg_len:
            yield _columns(pending, a, a + seg_len)
            a += seg_len
        pending = _columns(pending, a, tlen) if a < tlen else None
    if pending is not None:
        yield pending


class _AdaptingIterator:
    """What ``fairseq-eval-lm`` iterates: segments, each followed by the update on it."""

    def __init__(self, evaluator: "DynamicEvaluator", model, batches, seg_len: Optional[int], approx_len: int):
        self.evaluator, self.model, self.batches, self.seg_len = evaluator, model, batches, seg_len
        self._len = approx_len
        self.n = 0

    def __len__(self):
        return self._len

    def __iter__(self):
        return self.evaluator.adapt_while_scoring(self.model, self.batches, self.seg_len)


class DynamicEvaluator:
    """Holds θ_g, the update rule and (``rms``) the training-set statistics of one model."""

    def __init__(self, model, rule: str, lr: float, decay: float, epsilon: float = DEFAULT_EPSILON):
        check_options(rule, lr, decay, None, epsilon)
        self.rule, self.lr, self.decay, self.epsilon = rule, lr, decay, epsilon
        self.params: List[torch.nn.Parameter] = [
            p for p in model.parameters() if p.dtype.is_floating_point and p.requires_grad
        ]
        self.trained = [p.detach().clone() for p in self.params]  # θ_g
        self.ms: Optional[List[torch.Tensor]] = None  # sqrt(mean g²) per element (rms)
        self.decay_rate: Optional[List[torch.Tensor]] = None  # r = MS / mean(MS) (rms)
        self.updates = 0

    # -- the statistics of the rms rule ------------------------------------------------
    def collect_statistics(self, decoder, train_stream: torch.Tensor, bsz: int, seg_len: int, max_batches: int = 0,
                           log_every: int = 200) -> int:
        """MS = sqrt(mean of g²) over training batches of ``bsz`` streams × ``seg_len`` tokens.

        ``train_stream`` is the training split as one id stream. Runs in evaluation mode
        with carried (detached) state; returns the number of batches used.
        """
        from awd_plugins.data.stream_dataset import batchify

        bsz = max(1, min(bsz, train_stream.numel() // (seg_len + 1)))
        try:
            streams = batchify(train_stream, bsz).to(self.params[0].device)  # B × L
        except ValueError as e:
            raise AwdUserError(f"training split too short for the dynamic-evaluation statistics: {e}")
        total = (streams.size(1) - 1 + seg_len - 1) // seg_len
        nbatches = min(total, max_batches) if max_batches > 0 else total
        logger.info(f"dynamic evaluation: gradient statistics on {nbatches} training batches of {bsz}×{seg_len} tokens")
        squares = [torch.zeros_like(p, dtype=torch.float) for p in self.params]
        decoder.eval()  # dynamiceval.py: statistics without dropout
        state = decoder.init_state(bsz, decoder.embed_tokens.weight)
        start_time = time.time()
        with torch.enable_grad():
            for k in range(nbatches):
                i = k * seg_len
                j = min(i + seg_len, streams.size(1) - 1)
                loss, state = segment_loss(decoder, streams[:, i:j], streams[:, i + 1 : j + 1], state)
                state = _detach(state)
                for sq, g in zip(squares, self._gradients(loss)):
                    sq.add_(g.float() * g.float())
                if log_every and (k + 1) % log_every == 0:
                    logger.info(f"  statistics: {k + 1}/{nbatches} batches ({time.time() - start_time:.0f}s)")
        self.ms = [torch.sqrt(sq / nbatches) for sq in squares]
        # dynamiceval.py: the mean of each tensor's mean MS, then r = MS / that, clipped at 1/λ
        gsum = sum(ms.mean() for ms in self.ms) / len(self.ms)
        self.decay_rate = [ms / gsum if gsum > 0 else torch.zeros_like(ms) for ms in self.ms]
        self._rates_for = None
        return nbatches

    # -- one update --------------------------------------------------------------------
    def _gradients(self, loss: torch.Tensor) -> List[torch.Tensor]:
        grads = torch.autograd.grad(loss, self.params, allow_unused=True)
        return [torch.zeros_like(p) if g is None else g for p, g in zip(self.params, grads)]

    @torch.no_grad()
    def _apply(self, grads: List[torch.Tensor]):
        lam, eta = self.decay, self.lr
        if self.rule == "rms":
            if self.ms is None:
                raise AwdUserError("the rms rule needs gradient statistics: call collect_statistics first")
            for p, p0, g, ms, rate in zip(self.params, self.trained, grads, self.ms, self._clipped_rates(lam)):
                p.add_((lam * rate * (p0 - p) - eta * g / (ms + self.epsilon)).to(p.dtype))
        else:
            for p, p0, g in zip(self.params, self.trained, grads):
                p.add_((lam * (p0 - p) - eta * g).to(p.dtype))
        self.updates += 1

    def _clipped_rates(self, lam: float) -> List[torch.Tensor]:
        """min(r, 1/λ): dynamiceval.py clips the decay rates so that a decay step never overshoots θ_g."""
        if getattr(self, "_rates_for", None) != lam:
            self._rates = [r.clamp(max=1.0 / lam) if lam > 0 else r for r in self.decay_rate]
            self._rates_for = lam
        return self._rates

    def step(self, loss: torch.Tensor):
        """θ ← update(θ, ∇loss): one gradient step with the decay toward θ_g."""
        self._apply(self._gradients(loss))

    def reset(self):
        """Back to the trained weights θ_g (e.g. between grid points or splits)."""
        with torch.no_grad():
            for p, p0 in zip(self.params, self.trained):
                p.copy_(p0)
        self.updates = 0

    # -- inside fairseq-eval-lm (or any scorer that calls the model under no_grad) ------------
    @contextmanager
    def _keep_graph(self, decoder, outputs: List[torch.Tensor]):
        """Redirect ``decoder.run`` so that the scoring forward keeps its autograd graph."""
        run = type(decoder).run

        def run_with_graph(tokens, state):
            with torch.enable_grad():
                raw, dropped, new_state = run(decoder, tokens, state)
            outputs.append(dropped)
            return raw, dropped, new_state

        decoder.run = run_with_graph  # an instance attribute shadows the method
        try:
            yield
        finally:
            del decoder.run

    def adapt_while_scoring(self, model, batches: Iterable[Dict[str, Any]], seg_len: Optional[int] = None):
        """Yield the segments of ``batches``; after each has been scored, update on its loss.

        The consumer must run exactly one model forward per segment (fairseq's
        SequenceScorer does) before asking for the next one.
        """
        decoder = model.decoder
        outputs: List[torch.Tensor] = []
        with self._keep_graph(decoder, outputs):
            for segment in resegment(batches, seg_len):
                outputs.clear()
                yield segment
                if len(outputs) != 1:
                    raise RuntimeError(f"dynamic evaluation expected one forward per segment, saw {len(outputs)}")
                target = segment["target"].to(outputs[0].device)
                loss = decoder.nll(outputs[0].transpose(0, 1), target).mean()
                self.step(loss)
                outputs.clear()

    def wrap(self, model, batches, seg_len: Optional[int], window_len: int):
        """An iterable with a length (fairseq's progress bar asks for one) over the adapted segments."""
        approx = math.ceil(len(batches) * window_len / seg_len) if seg_len else len(batches)
        return _AdaptingIterator(self, model, batches, seg_len, approx)


def _detach(state):
    from awd_plugins.models.recurrent_lm import map_state

    return map_state(lambda t: t.detach(), state)


def from_task(task, model) -> DynamicEvaluator:
    """The evaluator ``task.cfg``'s ``--dynamic-eval*`` options describe, statistics collected."""
    cfg = task.cfg
    check_options(cfg.dynamic_eval, cfg.dynamic_eval_lr, cfg.dynamic_eval_decay, cfg.dynamic_eval_bptt,
                  cfg.dynamic_eval_epsilon)
    if model is None or model is False or not hasattr(getattr(model, "decoder", None), "run"):
        raise AwdUserError("--dynamic-eval needs an awd_plugins recurrent model (one checkpoint, no ensemble)")
    if any(p.dtype == torch.half for p in model.parameters()):
        raise AwdUserError("--dynamic-eval updates the weights in place: evaluate in fp32 (drop --fp16)")
    evaluator = DynamicEvaluator(model, str(cfg.dynamic_eval), cfg.dynamic_eval_lr, cfg.dynamic_eval_decay,
                                 cfg.dynamic_eval_epsilon)
    seg_len = cfg.dynamic_eval_bptt or cfg.bptt
    if evaluator.rule == "rms":
        split = cfg.train_subset
        if split not in task.datasets:
            task.load_dataset(split)
        evaluator.collect_statistics(model.decoder, task.dataset(split).stream, cfg.dynamic_eval_stats_bsz, seg_len,
                                     cfg.dynamic_eval_stats_batches)
    logger.info(f"dynamic evaluation: {evaluator.rule}, lr {evaluator.lr}, decay {evaluator.decay}, "
                f"segments of {seg_len} tokens")
    return evaluator
