#!/usr/bin/env python3
"""Where the time of one training update goes (torch profiler, CPU).

    OMP_NUM_THREADS=1 python bench/profile_update.py --data /tmp/ptb-bin --arch awd_lstm_ptb [--cpu-bf16]
    OMP_NUM_THREADS=1 python bench/profile_update.py --data /tmp/ptb-bin --arch awd_qrnn_ptb --clip-norm 0.2

Builds fairseq's own Trainer exactly as ``fairseq-train`` does (task
``awd_language_modeling``, criterion ``split_cross_entropy``, NT-ASGD, batch 20,
bptt 70), runs ``--warmup`` updates, then profiles ``--updates`` updates and prints

1. the wall time of each update;
2. a table by *stage*: the forward of every module type (embedding, LSTM/QRNN layers,
   dropouts, decoder + split softmax, criterion), backward, optimizer step + clipping,
   and what is left (fairseq's per-update bookkeeping: logging, metrics, lr, sample
   preparation);
3. torch's top operators by self CPU time.

Extra fairseq options after ``--`` are passed through (e.g. ``-- --nhid 800``).
"""

import argparse
import sys
import time
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from _trainer import build_trainer


def stage_hooks(model):
    """Wrap each leaf-ish module's forward in a record_function named after its type."""
    handles = []
    watched = ("LSTM", "QRNNLayer", "WeightDrop", "EmbeddingDropout", "LockedDropout", "SRU", "Linear")
    for name, module in model.named_modules():
        kind = type(module).__name__
        if kind in watched:
            ctx = {}

            def pre(mod, inp, kind=kind, ctx=ctx, name=name):
                ctx[name] = record_function(f"fwd::{kind}")
                ctx[name].__enter__()

            def post(mod, inp, out, ctx=ctx, name=name):
                ctx.pop(name).__exit__(None, None, None)

            handles.append(module.register_forward_pre_hook(pre))
            handles.append(module.register_forward_hook(post))
    return handles


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="PTB data-bin (preprocess/prepare_ptb.py)")
    parser.add_argument("--arch", default="awd_lstm_ptb")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--updates", type=int, default=3)
    parser.add_argument("--top", type=int, default=20)
    args, extra = parser.parse_known_args()
    extra = [a for a in extra if a != "--"]
    trainer, itr, nparams = build_trainer(args.data, args.arch, extra)
    print(f"{args.arch}: {nparams:,} parameters, torch threads {torch.get_num_threads()}")
    for _ in range(args.warmup):
        trainer.train_step([next(itr)])
    model = trainer.model
    handles = stage_hooks(model)
    crit = trainer.criterion
    orig_nll = model.decoder.nll

    def nll(*a, **k):
        with record_function("fwd::decoder+split_softmax"):
            return orig_nll(*a, **k)

    model.decoder.nll = nll
    walls, tokens = [], 0
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.updates):
            sample = next(itr)
            tokens += sample["ntokens"]
            t0 = time.perf_counter()
            with record_function("update"):
                trainer.train_step([sample])
            walls.append(time.perf_counter() - t0)
    for h in handles:
        h.remove()
    model.decoder.nll = orig_nll
    print("update wall times (s): " + ", ".join(f"{w:.2f}" for w in walls)
          + f"  -> {tokens / sum(walls):.0f} tokens/s (with profiler overhead)")

    events = prof.key_averages()
    total = sum(e.cpu_time_total for e in events if e.key == "update")
    by_stage = defaultdict(float)
    for e in events:
        if e.key.startswith("fwd::") or e.key.startswith("Optimizer.step") or e.key in ("aten::clamp_", ):
            by_stage[e.key] += e.cpu_time_total
    backward = sum(e.self_cpu_time_total for e in events if "Backward" in e.key or e.key.startswith("autograd::"))
    print(f"\n{'stage (inclusive CPU time)':<45} {'ms/update':>10} {'share':>7}")
    # WeightDrop contains its LSTM/QRNN; Linear inside QRNN; report them as given (nested)
    for key, us in sorted(by_stage.items(), key=lambda kv: -kv[1]):
        print(f"{key:<45} {us / 1e3 / args.updates:>10.1f} {us / total:>7.1%}")
    print(f"{'backward (self time of *Backward* nodes)':<45} {backward / 1e3 / args.updates:>10.1f} {backward / total:>7.1%}")
    print(f"{'whole update':<45} {total / 1e3 / args.updates:>10.1f} {1:>7.1%}")
    print()
    print(events.table(sort_by="self_cpu_time_total", row_limit=args.top, max_name_column_width=40))


if __name__ == "__main__":
    sys.exit(main())
