#!/usr/bin/env python3
"""Evaluation speed: dynamic evaluation (sgd and rms) against plain evaluation.

    python bench/bench_dynamic_eval.py [--tokens 1000] [--bptt 70] [--segment 5] [--threads 2]

AWD-LSTM at the PTB configuration (emsize 400, nhid 1150, 3 layers, V = 10,000,
untrained weights: speed does not depend on them), batch 1, state carried, on this
machine's CPU (or CUDA with --cuda). Rows: plain evaluation in windows of --bptt
(what fairseq-eval-lm runs); dynamic evaluation with one update per --segment tokens
(the paper's 5, and 20 as the authors' faster QRNN setting) through the same
SequenceScorer path as ``fairseq-eval-lm --dynamic-eval``. The rms rule's one-off
gradient statistics are timed separately, per training batch of 100×segment tokens.
"""

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))

from awd_plugins.cli.score import positional_scores  # noqa: E402
from awd_plugins.data.stream_dataset import StreamDataset, evaluation_windows  # noqa: E402
from awd_plugins.dynamic_eval import DynamicEvaluator  # noqa: E402
from awd_plugins.models.awd_lstm import AwdLstmConfig, AwdLstmDecoder, AwdLstmModel  # noqa: E402


def build(vocab, device):
    from _helpers import dictionary_of_size, model_cfg

    dictionary = dictionary_of_size(vocab)
    return AwdLstmModel(AwdLstmDecoder(model_cfg(AwdLstmConfig), dictionary)).eval().to(device), dictionary


def run(model, dictionary, stream, bptt, evaluator=None, segment=None):
    streams = StreamDataset(stream.view(1, -1), carry_key="bench")
    batches = [streams.collater(list(c)) for c in evaluation_windows(streams.length, bptt)]
    if evaluator is not None:
        batches = evaluator.wrap(model, batches, segment, bptt)
    model.reset_carried_state()
    start = time.time()
    n = sum(w.numel() for w in positional_scores(model, batches, dictionary))
    if stream.is_cuda:
        torch.cuda.synchronize()
    return n / (time.time() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=1000)
    parser.add_argument("--bptt", type=int, default=70)
    parser.add_argument("--segment", type=int, default=5)
    parser.add_argument("--stats-batches", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cuda", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = "cuda" if args.cuda else "cpu"
    torch.manual_seed(0)
    model, dictionary = build(10000, device)
    stream = torch.randint(4, 10000, (args.tokens + 1,))
    train = torch.randint(4, 10000, (100 * args.segment * args.stats_batches + 101,))

    rows = [("plain evaluation", f"windows of {args.bptt}", run(model, dictionary, stream, args.bptt))]
    for rule in ("sgd", "rms"):
        for segment in (args.segment, 20):
            evaluator = DynamicEvaluator(model, rule, 1e-5 if rule == "sgd" else 5e-5, 0.002)
            if rule == "rms":
                t0 = time.time()
                evaluator.collect_statistics(model.decoder, train, 100, segment, args.stats_batches, log_every=0)
                stats = (time.time() - t0) / args.stats_batches
            tps = run(model, dictionary, stream, args.bptt, evaluator, segment)
            evaluator.reset()
            note = f"segments of {segment}" + (f"; statistics {stats:.2f}s per batch" if rule == "rms" else "")
            rows.append((f"dynamic eval, {rule}", note, tps))
    base = rows[0][2]
    print(f"\nAWD-LSTM PTB configuration, batch 1, {args.tokens} tokens, {device}, {args.threads} thread(s)")
    print(f"{'':<22} {'':<42} {'tokens/s':>10} {'× plain':>8}")
    for name, note, tps in rows:
        print(f"{name:<22} {note:<42} {tps:>10.0f} {tps / base:>8.2f}")


if __name__ == "__main__":
    main()
