"""One GPU check (issue #11), run by ``bench/gpu_check.sh``: prints one table.

(a) kernel parity on the GPU: the Triton forget-mult and SRU recurrence against their
    torch reference loops (awd_plugins.kernels), forward and gradients, fp32 and bf16;
(b) ~50 updates of each published architecture at its published batch size and bptt
    on synthetic data (fairseq-train, fp32 and --amp; --gpu-bf16 for awd_lstm_ptb,
    sha_rnn_enwik8 and srupp_enwik8_base): tokens/s (last log interval, after
    compilation), peak GPU memory, whether the loss went down;
(c) read from (b): AWD-QRNN vs the cuDNN AWD-LSTM (24.0M vs 24.2M parameters) and
    SRU++ with --recurrence-impl triton vs torch.

``--cpu``: the same code on tiny models, 3 updates, kernels under Triton's
interpreter: a cheap check that the script itself works on a machine without a GPU
(its figures mean nothing).

Synthetic data: tokens drawn from a Zipf law (word level, 10k types) or a skewed byte
distribution (byte level), so a model that learns the unigram distribution lowers its
loss within 50 updates. Warm-ups are shortened to 10 updates for the same reason (the
recipes' 800 / 16000 would keep the lr near 0); everything else is the recipe's.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PLUGIN = os.path.join(REPO, "awd_plugins")

# name: (corpus, published flags, tiny overrides for --cpu)
RUNS = {
    "awd_lstm_ptb": ("words", [
        "--arch", "awd_lstm_ptb", "--criterion", "split_cross_entropy", "--optimizer", "nt_asgd",
        "--lr-scheduler", "nt_asgd", "--lr", "30", "--weight-decay", "1.2e-6", "--clip-norm", "0.25",
        "--batch-size", "20", "--bptt", "70"], ["--emsize", "16", "--nhid", "24"]),
    "awd_qrnn_ptb": ("words", [
        "--arch", "awd_qrnn_ptb", "--criterion", "split_cross_entropy", "--optimizer", "nt_asgd",
        "--lr-scheduler", "nt_asgd", "--lr", "30", "--weight-decay", "1.2e-6", "--clip-norm", "0.2",
        "--batch-size", "20", "--bptt", "70"], ["--emsize", "16", "--nhid", "24"]),
    "sha_rnn_enwik8": ("bytes", [
        "--arch", "sha_rnn_enwik8", "--criterion", "split_cross_entropy", "--alpha", "0", "--beta", "0",
        "--optimizer", "min_trust_lamb", "--min-trust", "0.25", "--weight-decay", "1.2e-6", "--clip-norm", "0.25",
        "--lr", "2e-3", "--lr-scheduler", "fixed", "--warmup-updates", "10",
        "--batch-size", "16", "--bptt", "1024", "--bptt-cap", "1024", "--no-lr-rescale"],
        ["--emsize", "16", "--nhid", "32", "--bptt", "16", "--bptt-cap", "16"]),
    "srupp_enwik8_base": ("bytes", [
        "--arch", "srupp_enwik8_base", "--criterion", "cross_entropy", "--optimizer", "radam_decoupled",
        "--weight-decay", "0.1", "--lr", "3e-4", "--clip-norm", "1.0", "--lr-scheduler", "srupp_cosine",
        "--warmup-updates", "10", "--cosine-updates", "400000",
        "--batch-size", "4", "--bptt", "1024", "--fixed-bptt", "--no-lr-rescale"],
        ["--n-d", "16", "--n-proj", "8", "--depth", "2", "--bptt", "16"]),
    "rnn_lm_medium": ("words", [
        "--arch", "rnn_lm_medium", "--criterion", "split_cross_entropy", "--alpha", "0", "--beta", "0",
        "--optimizer", "sgd", "--lr", "20", "--clip-norm", "0.25",
        "--batch-size", "20", "--bptt", "35", "--fixed-bptt", "--no-lr-rescale"], ["--emsize", "16", "--nhid", "16"]),
}


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# -- (a) kernel parity -------------------------------------------------------------------
def kernel_parity(device, sizes):
    import torch

    from awd_plugins.kernels import (forget_mult_reference, forget_mult_triton, sru_recurrence_reference,
                                     sru_recurrence_triton)

    rows = []
    T, B, d = sizes
    for dtype, tol in ((torch.float32, 1e-5), (torch.bfloat16, 3e-2)):
        g = torch.Generator(device="cpu").manual_seed(0)

        def rand(*shape, f=torch.randn):
            return f(*shape, generator=g).to(device)

        # forget-mult: the reference loop runs in fp32 on the (rounded) low-precision inputs
        f, z, c0 = rand(T, B, d, f=torch.rand), rand(T, B, d).tanh(), rand(B, d)
        ins = [t.to(dtype).requires_grad_() for t in (f, z, c0)]
        ref_ins = [t.detach().float().requires_grad_() for t in ins]
        t0 = time.time()
        out = forget_mult_triton(*ins)
        if out is None:
            rows.append((f"forget-mult {dtype}", "FAIL: kernel unavailable", ""))
            continue
        ref = forget_mult_reference(*ref_ins)
        cot = torch.randn(ref.shape, generator=g).to(device)
        got = torch.autograd.grad(out, ins, cot.to(dtype))
        want = torch.autograd.grad(ref, ref_ins, cot)
        err = max([(out.float() - ref).abs().max().item()] + [(a.float() - b).abs().max().item() / max(1.0, b.abs().max().item())
                                                              for a, b in zip(got, want)])
        rows.append((f"forget-mult {str(dtype)[6:]} T{T} B{B} H{d}", "ok" if err <= tol else "FAIL",
                     f"max err {err:.1e} (tol {tol:g}), {time.time() - t0:.1f}s"))
        # SRU recurrence with dropout mask, c0 and padding
        U, x = rand(T, B, 3, d), rand(T, B, d)
        wc, bias = rand(2 * d), rand(2 * d)
        mask = (torch.rand(B, d, generator=g) > 0.2).float().div(0.8).to(device)
        pad = (torch.rand(T, B, generator=g) < 0.1).to(device)
        leaves = [t.to(dtype).requires_grad_() for t in (U, x, wc, bias, c0)]
        ref_leaves = [t.detach().float().requires_grad_() for t in leaves]

        def call(fn, lv, m):
            return fn(lv[0][..., 0, :], lv[0][..., 1, :], lv[0][..., 2, :], lv[1], lv[2], lv[3], lv[4], mask=m,
                      pad_mask=pad)

        t0 = time.time()
        h, c = call(sru_recurrence_triton, leaves, mask.to(dtype))
        h_ref, c_ref = call(sru_recurrence_reference, ref_leaves, mask)
        gh, gc = torch.randn(h_ref.shape, generator=g).to(device), torch.randn(c_ref.shape, generator=g).to(device)
        got = torch.autograd.grad((h, c), leaves, (gh.to(dtype), gc.to(dtype)))
        want = torch.autograd.grad((h_ref, c_ref), ref_leaves, (gh, gc))
        err = max([(h.float() - h_ref).abs().max().item(), (c.float() - c_ref).abs().max().item()]
                  + [(a.float() - b).abs().max().item() / max(1.0, b.abs().max().item()) for a, b in zip(got, want)])
        rows.append((f"SRU recurrence {str(dtype)[6:]} T{T} B{B} d{d}", "ok" if err <= tol else "FAIL",
                     f"max err {err:.1e} (tol {tol:g}; grads relative to their max), {time.time() - t0:.1f}s"))
    return rows


# -- (b) training runs -------------------------------------------------------------------
def synthetic_bins(root, ntokens):
    """Word-level (Zipf over 10k types) and byte-level (skewed over 200 symbols) data-bins."""
    import numpy as np

    rng = np.random.default_rng(0)
    bins = {}
    for kind, types, per_line in (("words", 10000, 20), ("bytes", 200, 100)):
        raw = os.path.join(root, kind)
        os.makedirs(raw, exist_ok=True)
        weights = 1.0 / np.arange(1, types + 1) ** (1.1 if kind == "words" else 0.8)
        weights /= weights.sum()
        for split, n in (("train", ntokens), ("valid", ntokens // 20)):
            ids = rng.choice(types, size=n, p=weights)
            lines = [" ".join(f"t{i}" for i in ids[s:s + per_line]) for s in range(0, n, per_line)]
            with open(os.path.join(raw, f"{split}.txt"), "w") as f:
                f.write("\n".join(lines) + "\n")
        dest = os.path.join(root, kind + "-bin")
        subprocess.run([sys.executable, "-m", "fairseq_cli.preprocess", "--only-source", "--trainpref",
                        os.path.join(raw, "train.txt"), "--validpref", os.path.join(raw, "valid.txt"),
                        "--destdir", dest, "--workers", "4", "--padding-factor", "1"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        bins[kind] = dest
    return bins


def train_one(argv):
    """Child process: fairseq-train with ``argv``, then the peak GPU memory on the last line."""
    import torch
    from fairseq_cli.train import cli_main

    sys.argv = ["fairseq-train"] + argv
    cli_main()
    peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else float("nan")
    print(f"PEAK_GPU_GB {peak:.2f}", flush=True)


# the runs that also get --gpu-bf16 (--cpu-bf16 in the dry run): the cuDNN-LSTM, attention and SRU++ paths
BF16_RUNS = ("awd_lstm_ptb", "sha_rnn_enwik8", "srupp_enwik8_base")
PRECISION_FLAGS = {"fp32": [], "amp": ["--amp"], "bf16": ["--gpu-bf16"]}


def run_training(name, data, flags, updates, precision, cpu, timeout, extra=()):
    argv = [data, "--user-dir", PLUGIN, "--task", "awd_language_modeling", *flags, *extra,
            "--max-update", str(updates), "--log-interval", str(max(1, min(10, updates // 3))), "--log-format", "json",
            "--disable-validation", "--no-save", "--num-workers", "0", "--seed", "1"]
    argv += ["--cpu-bf16"] if cpu and precision == "bf16" else PRECISION_FLAGS[precision]
    if cpu:
        argv.append("--cpu")
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    t0 = time.time()
    try:
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--train-one", *argv], text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, timeout=timeout)
        out, rc = proc.stdout, proc.returncode
    except subprocess.TimeoutExpired as e:
        out, rc = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or ""), "timeout"
    inner = []
    for line in out.splitlines():
        m = re.search(r"\| train_inner \| (\{.*\})", line)
        if m:
            inner.append(json.loads(m.group(1)))
    peak = re.search(r"PEAK_GPU_GB ([\d.na]+)", out)
    if rc != 0 or len(inner) < 2:
        tail = " / ".join(out.strip().splitlines()[-3:])[-300:]
        return (name, "FAIL", f"exit {rc}; {tail}", time.time() - t0)
    first, last = float(inner[0]["loss"]), float(inner[-1]["loss"])
    wps = float(inner[-1]["wps"])
    fallback = "Triton recurrence kernel unavailable" in out
    verdict = "ok" if last < first and not fallback else ("FALLBACK" if fallback else "NODROP")
    detail = (f"{wps:,.0f} tok/s, peak {peak.group(1) if peak else '?'} GB, loss {first:.3f} → {last:.3f} "
              f"({inner[-1].get('num_updates', '?')} updates)")
    return (name, verdict, detail, time.time() - t0)


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--train-one":
        return train_one(sys.argv[2:])
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cpu", action="store_true", help="tiny dry run on the CPU (kernels interpreted)")
    p.add_argument("--updates", type=int, default=50, help="updates per training run (default 50)")
    p.add_argument("--timeout", type=int, default=60, help="seconds per training run before it is cut (default 60)")
    p.add_argument("--budget", type=int, default=330,
                   help="seconds for the whole check; training runs that would start later are skipped (default 330)")
    p.add_argument("--only", default="", help="comma-separated subset of: " + ",".join(RUNS))
    p.add_argument("--no-amp", action="store_true", help="skip the --amp runs")
    p.add_argument("--no-bf16", action="store_true", help="skip the --gpu-bf16 runs")
    args = p.parse_args()
    if args.cpu:
        os.environ["TRITON_INTERPRET"] = "1"
    sys.path.insert(0, REPO)
    import torch

    if not args.cpu and not torch.cuda.is_available():
        sys.exit("gpu_check: error: no CUDA device (use --cpu for the dry run)")
    device = "cpu" if args.cpu else "cuda"
    updates = 3 if args.cpu else args.updates
    rows = []
    start = time.time()
    log("(a) kernel parity")
    try:
        rows += [("(a) " + r[0], r[1], r[2]) for r in kernel_parity(device, (9, 3, 40) if args.cpu else (256, 16, 1024))]
    except Exception as e:  # noqa: BLE001 - report it in the table
        rows.append(("(a) kernel parity", "FAIL", f"{type(e).__name__}: {e}"[:300]))
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as root:
        log("synthetic data")
        bins = synthetic_bins(root, 20_000 if args.cpu else 400_000)
        names = [n for n in RUNS if not args.only or n in args.only.split(",")]
        precisions = ["fp32"] + ([] if args.no_amp else ["amp"]) + ([] if args.no_bf16 else ["bf16"])
        plan = [(n, p, ()) for n in names for p in precisions if p != "bf16" or n in BF16_RUNS]
        if "srupp_enwik8_base" in names:
            plan.append(("srupp_enwik8_base", "fp32", ("--recurrence-impl", "torch")))
        for name, precision, extra in plan:
            corpus, flags, tiny = RUNS[name]
            label = name + {"fp32": " fp32", "amp": " --amp", "bf16": " --gpu-bf16"}[precision]
            label += " " + " ".join(extra) if extra else ""
            if time.time() - start > args.budget - 20:
                rows.append(("(b) " + label, "SKIP", f"time budget of {args.budget}s spent"))
                continue
            log(f"(b) {label}")
            n = updates if not extra or args.cpu else max(10, updates // 5)  # the per-step loop is slow: fewer
            res = run_training(label, bins[corpus], flags, n, precision, args.cpu, args.timeout,
                               extra=tuple(extra) + (tuple(tiny) if args.cpu else ()))
            rows.append(("(b) " + res[0], res[1], res[2] + f" [{res[3]:.0f}s]"))
    width = max(len(r[0]) for r in rows)
    print(f"\n{'check'.ljust(width)} | result | details")
    print(f"{'-' * width}-|--------|--------")
    for name, verdict, detail in rows:
        print(f"{name.ljust(width)} | {verdict:6s} | {detail}")
    print("(ok: parity within tolerance / loss went down; NODROP: loss did not go down; FALLBACK: the Triton kernel "
          "failed and the run used the torch code)")
    print(f"\n(c) QRNN vs cuDNN LSTM: compare the awd_qrnn_ptb and awd_lstm_ptb rows (24.0M vs 24.2M parameters); "
          f"SRU++ triton vs torch: the srupp_enwik8_base fp32 rows. Total {time.time() - start:.0f}s on {device}"
          + (" (dry run: tiny models, figures meaningless)" if args.cpu else f" ({torch.cuda.get_device_name()})"))
    return 1 if any(r[1] == "FAIL" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
