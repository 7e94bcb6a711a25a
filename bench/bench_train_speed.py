#!/usr/bin/env python3
"""Training speed of AWD-LSTM at the PTB configuration through fairseq-train (CPU).

    python bench/bench_train_speed.py [--data data-bin/ptb] [--updates 40] [--with-lstm-lm]

Runs `fairseq-train --arch awd_lstm_ptb` (emsize 400, nhid 1150, 3 layers, batch 20,
bptt 70, weight drop, split CE with AR/TAR, NT-ASGD) for a few updates and prints the
words/s fairseq logs after a warm-up; with --with-lstm-lm also fairseq's built-in
`lstm_lm` (a per-timestep LSTMCell decoder) at the same sizes on the stock task.
For scale: the reference awd-lstm-lm trainer does about 590 tokens/s here.
Without --data, PTB is prepared from ../shared/data/ptb into a temporary folder.
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)


def wps(cmd):
    out = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         env=dict(os.environ, PYTHONWARNINGS="ignore"))
    if out.returncode != 0:
        sys.exit(out.stdout[-3000:])
    values = [float(v) for v in re.findall(r"wps=([\d.]+)", out.stdout)]
    return values[-1] if values else float("nan")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="PTB data-bin (default: prepared from ../shared/data/ptb)")
    parser.add_argument("--updates", type=int, default=40)
    parser.add_argument("--with-lstm-lm", action="store_true")
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="bench-train-")
    data = args.data
    if data is None:
        data = os.path.join(tmp, "ptb")
        subprocess.run([sys.executable, os.path.join(REPO, "preprocess", "prepare_ptb.py"), "--from",
                        os.path.join(os.path.dirname(REPO), "shared", "data", "ptb"), "--out", data], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    interval = max(1, args.updates // 2)
    common = ["--cpu", "--max-update", str(args.updates), "--log-format", "simple", "--log-interval", str(interval),
              "--disable-validation", "--no-save", "--num-workers", "0", "--batch-size", "20", "--seed", "141"]
    rows = []
    ours = wps([os.path.join(BIN, "fairseq-train"), data, "--user-dir", os.path.join(REPO, "awd_plugins"),
                "--task", "awd_language_modeling", "--arch", "awd_lstm_ptb", "--criterion", "split_cross_entropy",
                "--optimizer", "nt_asgd", "--lr-scheduler", "nt_asgd", "--lr", "30", "--clip-norm", "0.25",
                "--bptt", "70"] + common)
    rows.append(("awd-plugins awd_lstm_ptb (fairseq-train)", ours))
    if args.with_lstm_lm:
        stock = wps([os.path.join(BIN, "fairseq-train"), data, "--task", "language_modeling", "--arch", "lstm_lm",
                     "--decoder-embed-dim", "400", "--decoder-hidden-size", "1150", "--decoder-layers", "3",
                     "--decoder-out-embed-dim", "400", "--share-decoder-input-output-embed",
                     "--tokens-per-sample", "70", "--sample-break-mode", "none", "--criterion", "cross_entropy",
                     "--optimizer", "sgd", "--lr", "30", "--clip-norm", "0.25"] + common)
        rows.append(("fairseq lstm_lm, same sizes (stock task)", stock))
    print(f"\n{'configuration':<45} {'train words/s':>14}")
    for name, value in rows:
        print(f"{name:<45} {value:>14.0f}")
    print(f"{'reference awd-lstm-lm main.py (issue figure)':<45} {590:>14}")


if __name__ == "__main__":
    main()
