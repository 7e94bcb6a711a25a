#!/usr/bin/env python3
"""SHA-RNN throughput and memory on the CPU, and the parameter counts of the published configs.

    python bench/bench_sha_rnn.py                              # CPU-sized defaults
    python bench/bench_sha_rnn.py --emsize 512 --nhid 2048 --bptt 256 --steps 3 --threads 2

For each attention placement it times forward + backward (+ a min_trust_lamb step)
of a training window (train mode, dropouts on, state carried as in training) and
reports tokens/s and the peak resident memory of a fresh process (``resource``
ru_maxrss: torch's allocator is invisible to tracemalloc). Each configuration runs
in its own process so the peaks do not mix. Not a test: run by hand, read the table.
"""

import argparse
import multiprocessing as mp
import os
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def dictionary(size):
    from fairseq.data import Dictionary

    d = Dictionary()
    for i in range(size - len(d)):
        d.add_symbol(str(i))
    return d


def build(args, attention, device=None):
    import torch

    from awd_plugins.models.sha_rnn import ShaRnnConfig, ShaRnnDecoder, ShaRnnModel, sha_rnn_enwik8

    cfg = ShaRnnConfig(attention_blocks=attention)
    if args is None:
        sha_rnn_enwik8(cfg)
    else:
        cfg.emsize, cfg.nhid, cfg.nlayers = args.emsize, args.nhid, args.nlayers
    with torch.device(device or "cpu"):
        return ShaRnnModel(ShaRnnDecoder(cfg, dictionary(args.vocab if args else 205)))


def maxrss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_one(args, attention, queue):
    import torch
    import torch.nn.functional as F

    import awd_plugins  # noqa: F401
    from awd_plugins.optim.min_trust_lamb import MinTrustLamb

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build(args, attention)
    model.train()
    dec = model.decoder
    opt = MinTrustLamb(model.parameters(), lr=2e-3, weight_decay=1.2e-6, min_trust=0.25)
    base = maxrss_mib()
    state = dec.init_state(args.batch, dec.embed_tokens.weight)
    tokens = torch.randint(4, args.vocab, (args.bptt + 1, args.batch))

    def step(state):
        raw, dropped, new_state = dec.run(tokens[:-1], state)
        loss = F.cross_entropy(dec.output_layer(dropped).reshape(-1, args.vocab), tokens[1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.25)
        opt.step()
        return [tuple(t.detach() for t in s) for s in new_state]

    state = step(state)  # warm-up (allocator, first-call costs)
    start = time.perf_counter()
    for _ in range(args.steps):
        state = step(state)
    elapsed = time.perf_counter() - start
    memory = state[dec.attention_blocks[0]][2].size(0) if dec.attention_blocks else 0
    queue.put({
        "attention": attention, "blocks": dec.attention_blocks, "params": sum(p.numel() for p in model.parameters()),
        "tok_s": args.steps * args.bptt * args.batch / elapsed, "ms_step": 1000 * elapsed / args.steps,
        "rss": maxrss_mib(), "extra": maxrss_mib() - base, "memory": memory,
    })


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--emsize", type=int, default=256)
    parser.add_argument("--nhid", type=int, default=1024)
    parser.add_argument("--nlayers", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=205)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--bptt", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: small LSTMs are latency-bound; 2 threads on a busy machine are far slower)")
    parser.add_argument("--attention", nargs="+", default=["auto", "all"], help="--attention-blocks values to compare")
    args = parser.parse_args()

    import torch

    print(f"torch {torch.__version__}, {args.threads} thread(s); emsize {args.emsize}, nhid {args.nhid}, "
          f"nlayers {args.nlayers}, V {args.vocab}, batch {args.batch} × bptt {args.bptt}, {args.steps} timed steps")
    print("forward + backward + clip + min_trust_lamb step, train mode, state and memory carried")
    print()
    print(f"| attention blocks | params | tokens/s | ms/step | peak RSS MiB | RSS growth while training MiB | memory rows |")
    print("|---|---|---|---|---|---|---|")
    ctx = mp.get_context("spawn")
    for attention in args.attention:
        queue = ctx.Queue()
        proc = ctx.Process(target=run_one, args=(args, attention, queue))
        proc.start()
        r = queue.get()
        proc.join()
        print(f"| {attention} {r['blocks']} | {r['params'] / 1e6:.2f}M | {r['tok_s']:,.0f} | {r['ms_step']:,.0f} | "
              f"{r['rss']:,.0f} | {r['extra']:,.0f} | {r['memory']} |")

    import awd_plugins  # noqa: F401

    print()
    print("Published configurations (emsize 1024, nhid 4096, 4 blocks, V 205; built on the meta device):")
    print()
    print("| architecture | attention blocks | params | REFERENCE §7.8 |")
    print("|---|---|---|---|")
    for name, attention, ref in (("sha_rnn_enwik8", "auto", "≈53.8M"), ("sha_rnn_enwik8_full", "all", "≈63.3M")):
        model = build(None, attention, device="meta")
        n = sum(p.numel() for p in model.parameters())
        print(f"| {name} | {model.decoder.attention_blocks} | {n:,} ({n / 1e6:.1f}M) | {ref} |")


if __name__ == "__main__":
    main()
