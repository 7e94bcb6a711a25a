#!/usr/bin/env python3
"""Quality of ``--cpu-bf16``: the same AWD-LSTM training in fp32 and in bf16, same seed.

    python bench/bench_bf16_quality.py --data /tmp/ptb-bin              # both runs at once, 1 thread each
    python bench/bench_bf16_quality.py --data /tmp/ptb-bin --sequential --threads 2
    python bench/bench_bf16_quality.py --data /tmp/ptb-bin --variants fp32,fp32-rand-masks,cpu-bf16

Trains a small AWD-LSTM (default emsize 128, nhid 256, 3 layers; every other setting as
``awd_lstm_ptb``: batch 20, bptt 70, dropouts, weight drop, AR/TAR, NT-ASGD at lr 30,
seed 141) for ``--epochs`` epochs on PTB with ``fairseq-train``, once in fp32 and once
with ``--cpu-bf16``, and prints the validation perplexity of each (10 streams, fairseq's
end-of-epoch validation), their relative difference (target: within 1 %) and the
training words/s fairseq logs. ``--cpu-bf16`` draws its weight-drop masks with
``torch.rand`` (cheaper than ``F.dropout``'s ``bernoulli_``), so its dropout noise differs
from fp32's; the ``fp32-rand-masks`` run is fp32 with exactly those masks (same seed,
same draws), so ``cpu-bf16`` vs ``fp32-rand-masks`` is the effect of precision alone and
``fp32-rand-masks`` vs ``fp32`` the spread that dropout noise alone causes. Without ``--data``, PTB is prepared from
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


# The runs: fp32; fp32 with --cpu-bf16's weight-drop masks (torch.rand instead of F.dropout's bernoulli_,
# the same Bernoulli rate and scale), which isolates precision from the random stream; and --cpu-bf16.
VARIANTS = ("fp32", "fp32-rand-masks", "cpu-bf16")


def train_with_rand_masks(argv):
    """Child process: fairseq-train whose WeightDrop draws its masks as under --cpu-bf16, in fp32."""
    sys.path.insert(0, REPO)
    import awd_plugins.modules.weight_drop as weight_drop
    from fairseq_cli.train import cli_main

    weight_drop.cpu_bf16_autocast_active = lambda weight: True  # only WeightDrop._drop reads it
    sys.argv = ["fairseq-train"] + argv
    cli_main()


def command(args, variant):
    bf16 = variant == "cpu-bf16"
    if variant == "fp32-rand-masks":
        cmd = [sys.executable, os.path.abspath(__file__), "--train-rand-masks", args.data]
    else:
        cmd = [os.path.join(BIN, "fairseq-train"), args.data]
    cmd += ["--user-dir", os.path.join(REPO, "awd_plugins"), "--task", "awd_language_modeling",
           "--arch", "awd_lstm_ptb", "--emsize", str(args.emsize), "--nhid", str(args.nhid),
           "--nlayers", str(args.nlayers), "--criterion", "split_cross_entropy",
           "--optimizer", "nt_asgd", "--lr-scheduler", "nt_asgd", "--lr", "30", "--weight-decay", "1.2e-6",
           "--clip-norm", "0.25", "--batch-size", "20", "--bptt", "70", "--seed", str(args.seed),
           "--max-epoch", str(args.epochs), "--cpu", "--num-workers", "0", "--no-save", "--log-format", "simple",
           "--log-interval", "100"]
    if args.max_update:
        cmd += ["--max-update", str(args.max_update)]
    return cmd + (["--cpu-bf16"] if bf16 else [])


def parse(text):
    valid = re.findall(r"valid on 'valid' subset \|.*?\| ppl ([\d.]+)", text)
    # "| train | epoch ..." from fairseq-train; "INFO:train:epoch ..." from the rand-masks child's logging setup
    wps = re.findall(r"(?:\| train \||:train:) ?epoch.*?\| wps ([\d.]+)", text)
    return (float(valid[-1]) if valid else float("nan")), (float(wps[-1]) if wps else float("nan"))


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--train-rand-masks":
        return train_with_rand_masks(sys.argv[2:])
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
    parser.add_argument("--logs", help="folder to keep the training logs in")
    parser.add_argument("--variants", default="fp32,cpu-bf16",
                        help="comma-separated runs among " + ", ".join(VARIANTS) + " (fp32-rand-masks: fp32 with "
                        "--cpu-bf16's weight-drop masks, the yardstick that separates precision from dropout noise)")
    args = parser.parse_args()
    variants = [v.strip() for v in args.variants.split(",")]
    if any(v not in VARIANTS for v in variants) or "fp32" not in variants or len(variants) < 2:
        parser.error(f"--variants: fp32 and at least one of {VARIANTS[1:]}, got {args.variants!r}")
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
    for name in variants:
        path = os.path.join(logs, f"train-{name}.log")
        log = open(path, "w")
        runs[name] = (subprocess.Popen(command(args, name), stdout=log, stderr=subprocess.STDOUT, env=env), path, log)
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
    print(f"{'run':<16} {'valid ppl':>10} {'train wps':>10} {'vs fp32':>9}")
    ref = results["fp32"][0]
    for name, (ppl, wps) in results.items():
        print(f"{name:<16} {ppl:>10.2f} {wps:>10.0f} {100 * (ppl - ref) / ref:>+8.2f}%")
    if "cpu-bf16" in results and "fp32-rand-masks" in results:
        same = results["fp32-rand-masks"][0]
        print(f"cpu-bf16 vs fp32-rand-masks (same masks, precision alone): "
              f"{100 * (results['cpu-bf16'][0] - same) / same:+.2f} % (target: within ±1 %)")


if __name__ == "__main__":
    main()
