"""The inference step of any awd-plugins language model, as a self-contained module to export.

Built only on the decoder interface of :mod:`awd_plugins.models.recurrent_lm`
(``init_state`` / ``run`` / ``output_layer`` / ``get_normalized_probs``), so every
architecture exports the same way (issue #16):

    inputs   tokens (int64, B×T, batch-first as in fairseq), then the state tensors
    outputs  log_probs (float, B×T×V), then the new state tensors in the same order

* no dropout (the model is put in ``eval()``) and weight drop resolved: every
  :class:`~awd_plugins.modules.weight_drop.WeightDrop` is replaced by the module it
  wraps, which holds the raw weights (REFERENCE §2.4: evaluation uses them unscaled);
* the state is the decoder's nested tuple/list state flattened in a fixed order
  (depth-first, as ``init_state`` lists it) and named after its path, ``state_0_1``
  = element 1 of element 0;
* the split softmax / fairseq's adaptive softmax are flattened to one log-probability
  vector through the decoder's own ``get_normalized_probs`` (no sampling clamp).

Shapes are fixed at export time (batch B and window T, ``--batch-size``/``--window``),
because recurrences written as Python loops over time (QRNN, SRU) are unrolled by
tracing.

Attention memories (SHA-RNN blocks with attention, SRU++) grow from call to call up to
their cap in PyTorch; the export uses the decoders' fixed-shape form instead
(:meth:`~awd_plugins.models.recurrent_lm.RecurrentDecoder.use_fixed_memory`,
:mod:`awd_plugins.modules.fixed_memory`), still through ``init_state``/``run``:

* every attention memory is a state tensor of exactly ``memory_len × B × d``
  (``memory_len`` = the cap the model uses in evaluation: SHA-RNN ``--memory-len``,
  SRU++ ``--eval-memory-len``; ``awd-export --memory-len`` overrides it, and SRU++ with
  0, i.e. "the previous evaluation window", needs it);
* one more state tensor, ``memory_valid`` (int64, ``1 × B``, last in the inputs and
  outputs), counts the real trailing rows of the memories, per stream: 0 initially,
  ``min(memory_len, memory_valid + T)`` after each call; the other rows get exactly zero
  attention weight, so the outputs equal the growing memory's.
"""

import copy
import json
import warnings
from typing import Any, List, Optional, Tuple

import torch
from torch import nn

from awd_plugins.atomic import atomic_file, atomic_path
from awd_plugins.errors import AwdUserError
from awd_plugins.modules.weight_drop import WeightDrop


# -- nested state <-> flat list ---------------------------------------------------------
def flatten_state(state: Any, prefix: str = "state") -> Tuple[List[torch.Tensor], List[str], Any]:
    """Tensors of a nested tuple/list state in depth-first order, their names, and the structure."""
    tensors, names = [], []

    def walk(node, path):
        if torch.is_tensor(node):
            tensors.append(node)
            names.append(path)
            return len(tensors) - 1
        if isinstance(node, (list, tuple)):
            return (type(node), [walk(child, f"{path}_{i}") for i, child in enumerate(node)])
        raise AwdUserError(f"cannot export a state element of type {type(node).__name__} (tensors, tuples, lists only)")

    structure = walk(state, prefix)
    return tensors, names, structure


def unflatten_state(tensors, structure) -> Any:
    """Inverse of :func:`flatten_state`."""
    if isinstance(structure, int):
        return tensors[structure]
    kind, children = structure
    return kind(unflatten_state(tensors, child) for child in children)


def resolve_weight_drop(module: nn.Module) -> nn.Module:
    """Replace every WeightDrop wrapper by the module it wraps (the raw weights), in place."""
    for name, child in list(module.named_children()):
        if isinstance(child, WeightDrop):
            setattr(module, name, resolve_weight_drop(child.module))
        else:
            resolve_weight_drop(child)
    return module


class InferenceStep(nn.Module):
    """``(tokens B×T, *state) → (log_probs B×T×V, *new_state)`` for a :class:`RecurrentLanguageModel`."""

    def __init__(self, model: nn.Module, batch_size: int = 1, memory_len: Optional[int] = None):
        super().__init__()
        decoder = resolve_weight_drop(copy.deepcopy(model.decoder)).eval()
        # the fixed-shape attention memory (None: no attention memory, the state keeps its shape anyway)
        self.memory_len = decoder.use_fixed_memory(memory_len)
        self.decoder = decoder
        self.batch_size = batch_size
        like = next(decoder.parameters())
        flat, self.state_names, self.structure = self._flatten(decoder.init_state(batch_size, like))
        self.output_state_names = ["new_" + n for n in self.state_names]
        # the attention memories: padded here, empty (0 rows) in the model's own initial state
        ordinary = flatten_state(model.decoder.init_state(batch_size, like))[0]
        self.memory_names = [n for n, t, o in zip(self.state_names, flat, ordinary) if t.shape != o.shape]
        self.eval()

    def _flatten(self, state):
        """Flat tensors, names, structure; the fixed form ``(state, valid)`` flattens to the
        ordinary state's names and ``memory_valid`` last."""
        if self.memory_len is None:
            return flatten_state(state)
        inner, valid = state
        flat, names, structure = flatten_state(inner)
        return flat + [valid], names + ["memory_valid"], structure

    def train(self, mode: bool = True):
        # always the inference step: exporters that restore the caller's mode must not turn dropout on
        return super().train(False)

    def initial_state(self) -> List[torch.Tensor]:
        like = next(self.decoder.parameters())
        return self._flatten(self.decoder.init_state(self.batch_size, like))[0]

    def forward(self, tokens: torch.Tensor, *state: torch.Tensor):
        if self.memory_len is None:
            nested = unflatten_state(list(state), self.structure)
        else:
            nested = (unflatten_state(list(state[:-1]), self.structure), state[-1])
        _, dropped, new_state = self.decoder.run(tokens.t(), nested)  # T×B×H
        features = dropped.transpose(0, 1)  # B×T×H
        logits = self.decoder.output_layer(features)
        log_probs = self.decoder.get_normalized_probs((logits, {"attn": None}), log_probs=True, sample=None)
        new_flat, _, structure = self._flatten(new_state)
        if structure != self.structure:
            raise AwdUserError("the decoder's new state is not laid out as its initial state; cannot export it")
        return (log_probs.float(), *new_flat)


def check_fixed_state_shapes(step: InferenceStep, window: int):
    """Refuse models whose state changes shape between calls: a guard, since attention memories
    take a fixed shape in :class:`InferenceStep`; a new decoder with a growing state would fail here."""
    state = step.initial_state()
    tokens = torch.zeros(step.batch_size, window, dtype=torch.long)
    with torch.no_grad():
        for _ in range(2):
            new = step(tokens, *state)[1:]
            for name, old, nxt in zip(step.state_names, state, new):
                if old.shape != nxt.shape:
                    raise AwdUserError(
                        f"not implemented: the state {name} changes shape from {list(old.shape)} to {list(nxt.shape)} "
                        f"between calls; export needs a state that keeps its shape (a decoder with a growing "
                        f"attention memory must implement use_fixed_memory)"
                    )
            state = list(new)


def describe(step: InferenceStep, window: int, vocab: int, fmt: str, arch: str, symbols: List[str], eos: int) -> dict:
    """The calling convention written beside the exported model (model.json)."""
    state = step.initial_state()
    entry = lambda name, t: {"name": name, "shape": list(t.shape), "dtype": str(t.dtype).replace("torch.", "")}  # noqa: E731
    inputs = [{"name": "tokens", "shape": [step.batch_size, window], "dtype": "int64"}]
    inputs += [entry(n, t) for n, t in zip(step.state_names, state)]
    outputs = [{"name": "log_probs", "shape": [step.batch_size, window, vocab], "dtype": "float32"}]
    outputs += [entry(n, t) for n, t in zip(step.output_state_names, state)]
    description = {
        "format": fmt,
        "architecture": arch,
        "batch_size": step.batch_size,
        "window": window,
        "vocab_size": vocab,
        "eos": eos,
        "initial_state": "zeros of every state input's shape",
        "inputs": inputs,
        "outputs": outputs,
    }
    if step.memory_len is not None:
        description["initial_state"] += " (memory_valid 0: the attention memories start empty)"
        description["memory_len"] = step.memory_len
        description["attention_memories"] = step.memory_names
        description["memory_valid"] = (
            f"int64 [1, {step.batch_size}], the last state input: per stream, how many of the last rows of every "
            f"attention memory ({', '.join(step.memory_names)}: [memory_len, B, d]) are real; the rows before them "
            f"get zero attention weight. Starts at 0; each call returns min(memory_len, memory_valid + T) "
            f"(T = window). To restart stream b alone, zero index b of dim 1 of every state input."
        )
    description["symbols"] = symbols
    return description


def example_inputs(step: InferenceStep, window: int, vocab: int):
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, vocab, (step.batch_size, window), generator=gen)
    return (tokens, *step.initial_state())


def export_torchscript(step: InferenceStep, window: int, vocab: int, out: str) -> torch.jit.ScriptModule:
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings: shapes are fixed at export on purpose
        traced = torch.jit.trace(step, example_inputs(step, window, vocab), check_trace=False)
    with atomic_path(out) as tmp:
        traced.save(tmp)
    return traced


def export_onnx(step: InferenceStep, window: int, vocab: int, out: str, opset: int = 17):
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise AwdUserError("--format onnx needs the packages onnx and onnxruntime (pip install 'awd-plugins[export]')")
    args = example_inputs(step, window, vocab)
    names_in = ["tokens", *step.state_names]
    names_out = ["log_probs", *step.output_state_names]

    with atomic_path(out) as tmp, torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(step, args, tmp, input_names=names_in, output_names=names_out,
                          opset_version=opset, dynamo=False, do_constant_folding=True)


def onnx_session(path: str, threads: int = 0):
    try:
        import onnxruntime
    except ImportError:
        raise AwdUserError("checking an ONNX export needs onnxruntime (pip install 'awd-plugins[export]')")
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads  # 0: onnxruntime's default (all cores)
    return onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])


class OnnxStep:
    """Calls an exported ONNX model with the same convention as :class:`InferenceStep` (torch in/out).

    ``input_names``: every input of the convention in order (model.json's); inputs the
    exporter found unused (empty states) are not fed.
    """

    def __init__(self, path: str, input_names: List[str], threads: int = 0):
        self.session = onnx_session(path, threads)
        self.input_names = input_names
        self.graph_inputs = {i.name for i in self.session.get_inputs()}

    def __call__(self, tokens, *state):
        feed = {n: t.numpy() for n, t in zip(self.input_names, (tokens, *state)) if n in self.graph_inputs}
        return tuple(torch.from_numpy(o) for o in self.session.run(None, feed))


def verify(step: InferenceStep, exported, window: int, vocab: int, atol: float = 1e-4) -> float:
    """Largest difference between the exported model and the PyTorch step over two carried windows."""
    tokens, *state = example_inputs(step, window, vocab)
    ref_state, exp_state, worst = list(state), list(state), 0.0
    with torch.no_grad():
        for _ in range(2):
            ref = step(tokens, *ref_state)
            got = exported(tokens, *exp_state)
            worst = max(worst, *[(a - b).abs().max().item() for a, b in zip(ref, got) if a.numel()])
            ref_state, exp_state = list(ref[1:]), list(got[1:])
    if worst > atol:
        raise AwdUserError(f"the exported model differs from the PyTorch model by {worst:.2e} (> {atol})")
    return worst


def write_json(path: str, description: dict):
    with atomic_file(path) as f:
        json.dump(description, f, indent=1)
        f.write("\n")
