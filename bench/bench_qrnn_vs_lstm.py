#!/usr/bin/env python3
"""Training tokens/s of AWD-QRNN vs AWD-LSTM at equal parameters (PTB, fairseq's Trainer, CPU).

    python bench/bench_qrnn_vs_lstm.py --data /tmp/ptb-bin [--updates 10] [--rounds 2] [--threads 1]

``awd_qrnn_ptb`` (emsize 400, nhid 1550 × 4 layers, 24.0M parameters) against
``awd_lstm_ptb`` (400, 1150 × 3, 24.2M), each in fp32 and with ``--cpu-bf16``, whole
training updates (embedding, dropouts, recurrent stack, split softmax, AR/TAR, backward,
clipping, NT-ASGD step: ``Trainer.train_step``, what ``fairseq-train`` runs per update) at
batch 20, bptt 70, seed 141. Each configuration runs in its own process, one after the
other, in rounds (so a change of machine load hits every configuration); per run the rate
over the updates after 2 warm-up ones, in wall-clock and per CPU-second of the process
(the steadier figure on a shared machine). Prints a table, then the ratios QRNN / LSTM
(medians over rounds).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "bench"))

CONFIGS = {
    "lstm fp32": ("awd_lstm_ptb", []),
    "lstm bf16": ("awd_lstm_ptb", ["--cpu-bf16"]),
    "qrnn fp32": ("awd_qrnn_ptb", ["--clip-norm", "0.2"]),
    "qrnn bf16": ("awd_qrnn_ptb", ["--clip-norm", "0.2", "--cpu-bf16"]),
}


def child(args):
    import torch
    from _trainer import build_trainer, time_updates

    torch.set_num_threads(args.threads)
    arch, extra = CONFIGS[args.child]
    trainer, itr, nparams = build_trainer(args.data, arch, extra)
    print("RESULT " + json.dumps(dict(time_updates(trainer, itr, args.updates), params=nparams)), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="PTB data-bin (preprocess/prepare_ptb.py)")
    parser.add_argument("--updates", type=int, default=10, help="updates per run (2 are warm-up)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--configs", default=",".join(CONFIGS), help="subset of: " + ", ".join(CONFIGS))
    parser.add_argument("--child", choices=list(CONFIGS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    names = [c.strip() for c in args.configs.split(",")]
    for n in names:
        if n not in CONFIGS:
            parser.error(f"unknown configuration {n!r}")
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), OMP_WAIT_POLICY="PASSIVE", PYTHONWARNINGS="ignore",
               PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    results = {n: [] for n in names}
    print(f"{'round':>5} {'configuration':<10} {'params':>11} {'tok/s':>7} {'cpu-tok/s':>9} {'RSS MiB':>8} {'load':>5}")
    for r in range(args.rounds):
        for n in names if r % 2 == 0 else names[::-1]:
            out = subprocess.run([sys.executable, os.path.abspath(__file__), "--data", args.data, "--updates",
                                  str(args.updates), "--threads", str(args.threads), "--child", n],
                                 env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
            if out.returncode != 0 or not lines:
                sys.exit(f"{n} failed:\n{out.stdout[-3000:]}")
            res = json.loads(lines[-1][7:])
            results[n].append(res)
            print(f"{r + 1:>5} {n:<10} {res['params']:>11,} {res['tok_s']:>7.0f} {res['cpu_tok_s']:>9.0f} "
                  f"{res['rss_mib']:>8.0f} {os.getloadavg()[0]:>5.2f}", flush=True)

    def med(n, key):
        return statistics.median(x[key] for x in results[n])

    print("\nratio QRNN / LSTM (median over rounds)      wall   cpu")
    for q in ("qrnn fp32", "qrnn bf16"):
        for lstm in ("lstm fp32", "lstm bf16"):
            if q in results and lstm in results:
                print(f"  {q} / {lstm:<28} {med(q, 'tok_s') / med(lstm, 'tok_s'):>5.2f} "
                      f"{med(q, 'cpu_tok_s') / med(lstm, 'cpu_tok_s'):>5.2f}")


if __name__ == "__main__":
    sys.exit(main())
