#!/usr/bin/env python3
"""Batch-1 token-by-token generation speed: PyTorch eager vs TorchScript vs onnxruntime (CPU).

    python bench/bench_export.py [--tokens 300] [--threads 1]

Models (random weights: speed does not depend on them), each exported with
``awd_plugins.inference`` exactly as ``awd-export --window 1 --batch-size 1`` does:

* ``awd_lstm_ptb``: the PTB AWD-LSTM (400/1150/3 layers, vocabulary 10,000);
* the CPU-sized SHA-RNN of examples/sha_rnn_ptb_char_cpu.sh (emsize 128, nhid 512,
  2 blocks, 50 symbols), and the same model with ``--attention-blocks none``. The
  exported attention memory is a fixed buffer of ``--memory-len`` rows (5000) that
  every call attends over (masked while it fills), whereas eager attends only to
  the tokens so far: over a short run the comparison favours eager.

``--no-onednn`` turns torch's oneDNN off (eager and TorchScript): its LSTM kernel
re-lays out the weights on every call, which dominates token-by-token generation.

Eager = fairseq's incremental decoding path (decoder forward with incremental state,
then the normalised log-probs), greedy; the exported forms run the same greedy loop
with the flattened state. Prints tokens/s; not a test (figures are noisy on a shared machine).
"""

import argparse
import os
import sys
import tempfile
import time
from types import SimpleNamespace

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def dictionary(size):
    from fairseq.data import Dictionary

    d = Dictionary()
    for i in range(size - len(d)):
        d.add_symbol(f"w{i}")
    return d


def build(model_cls, cfg_cls, vocab, **kw):
    import torch
    from omegaconf import OmegaConf

    cfg = OmegaConf.structured(cfg_cls)
    for k, v in kw.items():
        setattr(cfg, k, v)
    torch.manual_seed(0)
    return model_cls.build_model(cfg, SimpleNamespace(target_dictionary=dictionary(vocab))).eval()


def eager_speed(model, n):
    import torch

    with torch.no_grad():
        incremental, tokens = {}, torch.tensor([[2]])
        t0 = time.perf_counter()
        for _ in range(n):
            net = model.decoder(tokens, incremental_state=incremental)
            lp = model.decoder.get_normalized_probs(net, log_probs=True, sample=None)
            tokens = torch.cat([tokens, lp[:, -1].argmax(-1, keepdim=True)], 1)
        return n / (time.perf_counter() - t0)


def exported_speed(step_fn, state, n):
    import torch

    with torch.no_grad():
        token = torch.tensor([[2]])
        for _ in range(3):  # warm-up (TorchScript profiles its first calls)
            step_fn(token, *state)
        t0 = time.perf_counter()
        for _ in range(n):
            lp, *state = step_fn(token, *state)
            token = lp[:, -1].argmax(-1, keepdim=True)
        return n / (time.perf_counter() - t0)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=300)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-onednn", action="store_true",
                        help="turn torch's oneDNN (mkldnn) off: its LSTM re-lays out the weights on every call, "
                        "which dominates batch-1 token-by-token generation")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    if args.no_onednn:
        torch.backends.mkldnn.enabled = False
    import awd_plugins  # noqa: F401
    from awd_plugins import inference
    from awd_plugins.errors import AwdUserError
    from awd_plugins.models.awd_lstm import AwdLstmConfig, AwdLstmModel
    from awd_plugins.models.sha_rnn import ShaRnnConfig, ShaRnnModel

    models = [
        ("awd_lstm_ptb (400/1150/3, V=10k)", build(AwdLstmModel, AwdLstmConfig, 10000, emsize=400, nhid=1150, nlayers=3)),
        ("sha_rnn CPU-sized (attention)", build(ShaRnnModel, ShaRnnConfig, 56, emsize=128, nhid=512, nlayers=2)),
        ("sha_rnn CPU-sized, no attention", build(ShaRnnModel, ShaRnnConfig, 56, emsize=128, nhid=512, nlayers=2,
                                                  attention_blocks="none")),
    ]
    try:
        import onnxruntime

        onnxruntime.set_default_logger_severity(3)
    except ImportError:
        onnxruntime = None
    tmp = tempfile.mkdtemp(prefix="bench-export-")
    rows = []
    for name, model in models:
        vocab = model.decoder.embed_tokens.weight.size(0)
        row = [name, eager_speed(model, args.tokens), float("nan"), float("nan")]
        step = inference.InferenceStep(model, 1)
        try:
            inference.check_fixed_state_shapes(step, 1)
        except AwdUserError:
            rows.append(row + ["growing state: refused"])
            continue
        ts = inference.export_torchscript(step, 1, vocab, os.path.join(tmp, "m.pt"))
        row[2] = exported_speed(ts, step.initial_state(), args.tokens)
        if onnxruntime is not None:
            inference.export_onnx(step, 1, vocab, os.path.join(tmp, "m.onnx"))
            ort = inference.OnnxStep(os.path.join(tmp, "m.onnx"), ["tokens", *step.state_names], args.threads)
            row[3] = exported_speed(ort, step.initial_state(), args.tokens)
        rows.append(row + [""])
    onednn = "off" if args.no_onednn else "on"
    print(f"\nbatch-1 greedy generation, {args.tokens} tokens, {args.threads} thread(s), torch oneDNN {onednn}; tokens/s")
    print(f"{'model':<36} {'eager':>8} {'TorchScript':>12} {'onnxruntime':>12}  note")
    for name, e, t, o, note in rows:
        print(f"{name:<36} {e:>8.1f} {t:>12.1f} {o:>12.1f}  {note}")


if __name__ == "__main__":
    main()
