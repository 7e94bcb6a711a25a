#!/usr/bin/env python3
"""Quality of ``--cpu-bf16``: the same AWD-LSTM training in fp32 and in bf16, same seed.

    python bench/bench_bf16_quality.py --data /tmp/ptb-bin              # both runs at once, 1 thread each
    python bench/bench_bf16_quality.py --data /tmp/ptb-bin --sequential --threads 2

Trains a small AWD-LSTM (default emsize 128, nhid 256, 3 layers; every other setting as
``awd_lstm_ptb``: batch 20, bptt 70, dropouts, weight drop, AR/TAR, NT-ASGD at lr 30,
seed 141) for ``--epochs`` epochs on PTB with ``fairseq-train``, once in fp32 and once
with ``--cpu-bf16``, and prints the validation perplexity of each (10 streams, fairseq's
end-of-epoch validation), their relative difference (target: within 1 %) and the
training words/s fairseq logs. Without ``--data``, PTB is prepared from
``../shared/data/ptb`` into a temporary folder. Nothing is saved (``--no-save``).
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)


def command(args, bf16):
    cmd = [os.path.join(BIN, "fairseq-train"), args.data, "--user-dir", os.path.join(REPO, "awd_plugins"),
           "--task", "awd_language_modeling", "--arch", "awd_lstm_ptb", "--emsize", str(args.emsize),
           "--nhid", str(args.nhid), "--nlayers", str(args.nlayers), "--criterion", "split_cross_entropy",
           "--optimizer", "nt_asgd", "--lr-scheduler", "nt_asgd", "--lr", "30", "--weight-decay", "1.2e-6",
           "--clip-norm", "0.25", "--batch-size", "20", "--bptt", "70", "--seed", str(args.seed),
           "--max-epoch", str(args.epochs), "--cpu", "--num-workers", "0", "--no-save", "--log-format", "simple",
           "--log-interval", "100"]
    if args.max_update:
        cmd += ["--max-update", str(args.max_update)]
    return cmd + (["--cpu-bf16"] if bf16 else [])


def parse(text):
    valid = re.findall(r"valid on 'valid' subset \|.*?\| ppl ([\d.]+)", text)
    wps = re.findall(r"\| train \|.*?\| wps ([\d.]+)", text)
    return (float(valid[-1]) if valid else float("nan")), (float(wps[-1]) if wps else float("nan"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="PTB data-bin (default: prepared from ../shared/data/ptb)")
    parser.add_argument("--emsize", type=int, default=128)
    parser.add_argument("--nhid", type=int, default=256)
    parser.add_argument("--nlayers", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--seed", type=int, default=141)
    parser.add_argument("--max-update", type=int, default=0, help="stop early (smoke test); 0 = whole epochs")
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of each run")
    parser.add_argument("--sequential", action="store_true", help="one run after the other instead of both at once")
    parser.add_argument("--logs", help="folder to keep both training logs in")
    args = parser.parse_args()
    if args.data is None:
        args.data = os.path.join(tempfile.mkdtemp(prefix="bench-bf16-"), "ptb")
        subprocess.run([sys.executable, os.path.join(REPO, "preprocess", "prepare_ptb.py"), "--from",
                        os.path.join(os.path.dirname(REPO), "shared", "data", "ptb"), "--out", args.data],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS=str(args.threads), OMP_WAIT_POLICY="PASSIVE")
    logs = args.logs or tempfile.mkdtemp(prefix="bench-bf16-logs-")
    os.makedirs(logs, exist_ok=True)
    runs = {}
    t0 = time.time()
    for name, bf16 in (("fp32", False), ("cpu-bf16", True)):
        path = os.path.join(logs, f"train-{name}.log")
        log = open(path, "w")
        runs[name] = (subprocess.Popen(command(args, bf16), stdout=log, stderr=subprocess.STDOUT, env=env), path, log)
        print(f"started {name}: log {path}", flush=True)
        if args.sequential:
            runs[name][0].wait()
    results = {}
    for name, (proc, path, log) in runs.items():
        proc.wait()
        log.close()
        text = open(path).read()
        if proc.returncode != 0:
            sys.exit(f"{name} failed (exit {proc.returncode}):\n{text[-3000:]}")
        results[name] = parse(text)
    print(f"\nAWD-LSTM emsize {args.emsize}, nhid {args.nhid}, {args.nlayers} layers, PTB, {args.epochs} epoch(s), "
          f"seed {args.seed}, {args.threads} thread(s) each, {'sequential' if args.sequential else 'simultaneous'}, "
          f"{time.time() - t0:.0f} s in all; load average now {os.getloadavg()[0]:.2f}")
    print(f"{'run':<10} {'valid ppl':>10} {'train wps':>10}")
    for name, (ppl, wps) in results.items():
        print(f"{name:<10} {ppl:>10.2f} {wps:>10.0f}")
    ref, got = results["fp32"][0], results["cpu-bf16"][0]
    print(f"bf16 vs fp32 validation perplexity: {100 * (got - ref) / ref:+.2f} % (target: within ±1 %)")


if __name__ == "__main__":
    main()
