#!/usr/bin/env python3
"""Mogrifier LSTM vs AWD-LSTM training and evaluation throughput on the CPU.

    OMP_NUM_THREADS=2 python bench/bench_mogrifier.py                # a few minutes on 2 cores
    python bench/bench_mogrifier.py --batch 20 --bptt 70 --iters 3 --threads 4

Forward + backward (training mode, the published dropouts) and forward-only (eval)
tokens/s of the whole decoders on PTB's vocabulary (10,000 words, softmax and loss
included), at (nearly) equal parameter counts:

* AWD-LSTM PTB (``awd_lstm_ptb``, 24.2M): nn.LSTM layers, fused kernels;
* Mogrifier LSTM PTB (``mogrifier_lstm_ptb``, 24.0M): 2 × 912, 5 rounds of rank 84;
* the same Mogrifier stack with ``--mogrifier-rounds 0`` (a plain LSTM run by our per-step
  loop): separates the cost of the Python time loop from the cost of the rounds.

The minimum over ``--iters`` runs is reported (the cores are shared with other work).
"""

import argparse
from types import SimpleNamespace

import torch
from fairseq.data import Dictionary
from omegaconf import OmegaConf

from awd_plugins.models import awd_lstm, mogrifier_lstm
from awd_plugins.models.awd_lstm import AwdLstmConfig, AwdLstmModel
from awd_plugins.models.mogrifier_lstm import MogrifierLstmConfig, MogrifierLstmModel
from _timing import best_time


def dictionary(n):
    d = Dictionary()
    for i in range(n - len(d)):
        d.add_symbol(f"w{i}")
    return d


def build(model_cls, cfg_cls, arch, vocab, **overrides):
    ns = argparse.Namespace(**overrides)
    arch(ns)  # as fairseq applies a named architecture
    cfg = OmegaConf.structured(cfg_cls)
    for k, v in vars(ns).items():
        setattr(cfg, k, v)
    return model_cls.build_model(cfg, SimpleNamespace(target_dictionary=dictionary(vocab)))


def throughput(model, batch, bptt, vocab, iters):
    tokens = torch.randint(4, vocab, (batch, bptt))
    targets = torch.randint(4, vocab, (batch, bptt))

    def train_step():
        model.train()
        model.zero_grad(set_to_none=True)
        features, _ = model(tokens, features_only=True)
        model.decoder.nll(features, targets).mean().backward()

    @torch.no_grad()
    def eval_step():
        model.eval()
        features, _ = model(tokens, features_only=True)
        model.decoder.nll(features, targets)

    n = batch * bptt
    return n / best_time(train_step, iters), n / best_time(eval_step, iters)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=20, help="streams per batch (AWD-LSTM's PTB batch: 20)")
    p.add_argument("--bptt", type=int, default=35, help="window length")
    p.add_argument("--iters", type=int, default=2, help="timed runs per row (the minimum is reported)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    p.add_argument("--vocab", type=int, default=10000, help="vocabulary size (PTB: 10,000)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows = [
        ("AWD-LSTM PTB (nn.LSTM)", build(AwdLstmModel, AwdLstmConfig, awd_lstm.awd_lstm_ptb, args.vocab)),
        ("Mogrifier PTB (5 rounds, rank 84)",
         build(MogrifierLstmModel, MogrifierLstmConfig, mogrifier_lstm.mogrifier_lstm_ptb, args.vocab)),
        ("Mogrifier PTB stack, 0 rounds",
         build(MogrifierLstmModel, MogrifierLstmConfig, mogrifier_lstm.mogrifier_lstm_ptb, args.vocab,
               mogrifier_rounds=0)),
    ]
    print(f"batch {args.batch} × bptt {args.bptt}, vocabulary {args.vocab}, {torch.get_num_threads()} threads "
          f"(minimum of {args.iters} runs; shared cores make these figures noisy)")
    print(f"{'model':38s} {'params':>8s} {'train tok/s':>12s} {'eval tok/s':>11s}")
    for name, model in rows:
        params = sum(p.numel() for p in model.parameters())
        train, evaluate = throughput(model, args.batch, args.bptt, args.vocab, args.iters)
        print(f"{name:38s} {params / 1e6:7.2f}M {train:12.0f} {evaluate:11.0f}")


if __name__ == "__main__":
    main()
