#!/usr/bin/env python3
"""Forward + backward throughput and peak memory of an SRU++ stack on the CPU
(REFERENCE §8; run by hand, prints a table).

    OMP_WAIT_POLICY=PASSIVE python bench/bench_srupp.py [--length 128] [--batch 2] [--iters 3] [--threads 2]

Each configuration runs a training-mode step on a window of ``length`` tokens with
a memory of the previous ``length`` layer inputs (the reference's training
setting): forward, ``h.sum().backward()``. Rows:

* ours: :class:`awd_plugins.modules.srupp.SRUpp` (recurrence = the autograd
  Function with TorchScript loops);
* ours, per-step loop: the same stack with the recurrence replaced by the plain
  per-step autograd loop (what the fast path replaces);
* sru 3.0.0.dev6: the reference package, only if importable (on CPU with
  gradients it runs its pure-Python loop).

Each row runs in its own process. Peak memory = growth of that process's peak RSS
(Linux ``VmHWM``) over its size before building the model, so it includes
weights, activations and gradients (``*``: the peak could not be reset).
"""

import argparse
import os
import subprocess
import sys
import time
import warnings

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from awd_plugins.modules import sru as sru_module  # noqa: E402
from awd_plugins.modules.srupp import SRUpp, attention_mask  # noqa: E402

CONFIGS = [(1024, 256, 3), (2048, 512, 4)]


def _status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def _reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def measure(make, d, length, batch, iters):
    import gc

    gc.collect()
    exact = _reset_peak()
    base = _status("VmRSS")
    torch.manual_seed(0)
    model = make().train()
    x = torch.randn(length, batch, d, requires_grad=True)
    memory = [torch.randn(length, batch, d) for _ in range(model.num_layers)]
    mask = attention_mask(length, length)

    def step():
        out = model(x, None, memory=memory, attn_mask=mask)
        out[0].sum().backward()

    step()  # warm-up (TorchScript compiles, allocator grows)
    start = time.perf_counter()
    for _ in range(iters):
        step()
    elapsed = (time.perf_counter() - start) / iters
    peak = _status("VmHWM") - base
    del model, x, memory
    return length * batch / elapsed, peak, exact


def run_row(args, name, d, p, layers):
    """One measurement in this (fresh) process; prints ``tokens/s peak_bytes exact``."""
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    if name == "sru":
        import sru as sru_pkg

        def make():
            return sru_pkg.SRUpp(d, d, p, num_layers=layers, dropout=0.1, attn_dropout=0.1)
    else:
        if name == "loop":
            sru_module.sru_recurrence = sru_module.sru_recurrence_reference

        def make():
            return SRUpp(d, d, p, num_layers=layers, dropout=0.1, attn_dropout=0.1)
    tps, peak, exact = measure(make, d, args.length, args.batch, args.iters)
    print(f"{tps} {peak} {int(exact)}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--length", type=int, default=128, help="tokens per window (and memory length)")
    parser.add_argument("--batch", type=int, default=2, help="streams")
    parser.add_argument("--iters", type=int, default=3, help="timed steps per configuration")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--skip-loop", action="store_true", help="leave out the per-step loop rows")
    parser.add_argument("--row", nargs=4, metavar=("IMPL", "D", "PROJ", "LAYERS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.row:
        run_row(args, args.row[0], *map(int, args.row[1:]))
        return
    try:
        import sru as sru_pkg

        has_sru = hasattr(sru_pkg, "SRUpp")
    except Exception:
        has_sru = False

    print(f"torch {torch.__version__}, {args.threads} thread(s), window {args.length} + memory {args.length}, "
          f"batch {args.batch}, {args.iters} timed step(s), one process per row")
    print(f"{'implementation':<28} {'d':>5} {'proj':>5} {'layers':>6} {'tokens/s':>10} {'peak MB':>9}")
    names = {"ours": "ours", "loop": "ours, per-step loop", "sru": "sru 3.0.0.dev6"}
    impls = ["ours"] + ([] if args.skip_loop else ["loop"]) + (["sru"] if has_sru else [])
    base = [sys.executable, os.path.abspath(__file__), "--length", str(args.length), "--batch", str(args.batch),
            "--iters", str(args.iters), "--threads", str(args.threads)]
    for d, p, layers in CONFIGS:
        for impl in impls:
            proc = subprocess.run(base + ["--row", impl, str(d), str(p), str(layers)], stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL, text=True)
            try:
                tps, peak, exact = proc.stdout.split()[-3:]
                line = f"{float(tps):>10.0f} {int(peak) / 2**20:>8.0f}{'' if exact == '1' else '*'}"
            except ValueError:
                line = f"{'failed':>10}"
            print(f"{names[impl]:<28} {d:>5} {p:>5} {layers:>6} {line}", flush=True)
    if not has_sru:
        print("(sru 3.0.0.dev6 not importable: pip install --pre sru==3.0.0.dev6 to compare)")


if __name__ == "__main__":
    main()
