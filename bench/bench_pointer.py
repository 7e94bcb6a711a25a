#!/usr/bin/env python3
"""Evaluation speed with and without the cache pointer, and the naive per-token pointer loop.

    python bench/bench_pointer.py [--tokens 4000] [--window 500] [--bptt 70]

AWD-LSTM at the PTB configuration (emsize 400, nhid 1150, 3 layers, V = 10,000,
untrained weights: speed does not depend on them), batch 1, state carried, CPU.
Rows: plain evaluation; evaluation with the vectorized pointer (window 500);
the pointer part alone written as pointer.py's per-token loop over the same states.
"""

import argparse
import time

import torch

from awd_plugins.models.awd_lstm import AwdLstmConfig, AwdLstmDecoder, AwdLstmModel
from awd_plugins.modules import ContinuousCachePointer


def build(vocab):
    import sys, os

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
    from _helpers import dictionary_of_size, model_cfg

    return AwdLstmModel(AwdLstmDecoder(model_cfg(AwdLstmConfig), dictionary_of_size(vocab))).eval()


@torch.no_grad()
def evaluate(model, stream, bptt, pointer=None):
    state = model.decoder.init_state(1, model.decoder.embed_tokens.weight)
    hidden, total = [], 0.0
    for i in range(0, stream.numel() - 1, bptt):
        x = stream[i : i + bptt][: stream.numel() - 1 - i].view(1, -1)
        y = stream[i + 1 : i + 1 + x.size(1)].view(1, -1)
        raw, dropped, state = model.decoder.run(x.t(), state)
        lp = torch.log_softmax(model.decoder.output_layer(dropped.transpose(0, 1)).float(), -1)
        if pointer is not None:
            lp = pointer(lp, raw.transpose(0, 1), y)
        total -= lp.gather(2, y.unsqueeze(2)).sum().item()
        hidden.append(raw[:, 0])
    return total, torch.cat(hidden)


def naive_pointer_loop(hidden, probs, targets, window, theta, lam):
    """pointer.py's inner loop: one softmax over the window per token."""
    total = 0.0
    for t in range(len(targets)):
        p = probs[t]
        if t > window:
            a = torch.softmax(theta * hidden[t - window : t] @ hidden[t], 0)
            ptr = torch.zeros_like(p).index_add_(0, targets[t - window : t], a)
            p = lam * ptr + (1 - lam) * p
        total -= torch.log(p[targets[t]]).item()
    return total


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=4000)
    parser.add_argument("--window", type=int, default=500)
    parser.add_argument("--bptt", type=int, default=70)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build(10000)
    stream = torch.randint(4, 10000, (args.tokens + 1,))

    t0 = time.perf_counter()
    _, hidden = evaluate(model, stream, args.bptt)
    plain = time.perf_counter() - t0
    t0 = time.perf_counter()
    evaluate(model, stream, args.bptt, ContinuousCachePointer(args.window, 1.0, 0.1))
    with_ptr = time.perf_counter() - t0

    n_naive = min(args.tokens, 1500)
    probs = torch.softmax(torch.randn(n_naive, 10000), -1)
    t0 = time.perf_counter()
    naive_pointer_loop(hidden[:n_naive], probs, stream[1 : n_naive + 1], args.window, 1.0, 0.1)
    naive = (time.perf_counter() - t0) / n_naive
    ptr_only = max(with_ptr - plain, 1e-9) / args.tokens

    n = args.tokens
    print(f"\nAWD-LSTM PTB config, batch 1, bptt {args.bptt}, {n} tokens, {args.threads} threads")
    print(f"{'configuration':<44} {'tokens/s':>10}")
    print(f"{'evaluation, no pointer':<44} {n / plain:>10.0f}")
    print(f"{'evaluation + pointer (window %d)' % args.window:<44} {n / with_ptr:>10.0f}")
    print(f"{'pointer alone, vectorized (ours)':<44} {1 / ptr_only:>10.0f}")
    print(f"{'pointer alone, per-token loop (pointer.py)':<44} {1 / naive:>10.0f}")
    print(f"\npointer overhead on evaluation time: {100 * (with_ptr - plain) / plain:.1f}%  "
          f"(target < 30%); vectorized vs per-token loop: {naive / ptr_only:.0f}x (target >= 50x)")


if __name__ == "__main__":
    main()
