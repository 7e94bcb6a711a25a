#!/usr/bin/env python3
"""Side by side on this CPU: the reference awd-lstm-lm trainer and ours, same PTB data.

    python bench/bench_vs_reference.py --reference /tmp/awd-lstm-lm [--data /tmp/ptb-bin] \\
        [--batches 12] [--rounds 2] [--variants fp32,cpu-bf16] [--eval] [--threads 1]

``--reference`` is a checkout of salesforce/awd-lstm-lm at commit 1d466ec with the patch
of ``../shared/peers/awd-lstm-lm.patch`` applied (it makes the reference run on current
torch and adds ``--bench``/``--max_batches``/``--bench_eval``); nothing of it is copied
here, it is only run. Its ``--data`` folder (``train.txt``, ``valid.txt``, ``test.txt``)
is written into a temporary folder from ``../shared/data/ptb`` (or ``--raw``).

Each measurement starts the reference and one variant of ours **at the same time**,
``--threads`` threads each (default 1; OMP_WAIT_POLICY=PASSIVE), at the published PTB
configuration (emsize 400, nhid 1150, 3 layers, batch 20, bptt 70 variable, dropouts
0.4/0.25/0.4/0.1, wdrop 0.5, AR/TAR, lr 30, clip 0.25, seed 141: both draw the same
windows), for ``--batches`` training batches, and alternates which one starts first
from round to round. Ours is fairseq's own ``Trainer.train_step`` (what
``fairseq-train`` runs per update) on the task ``awd_language_modeling``. Both sides
time each batch after 2 warm-up batches, in wall-clock and in the process's own CPU
time; the CPU-time rate is the steadier figure on a loaded machine (it still suffers
from shared caches and SMT). Printed per measurement: tokens/s (wall, median batch and
whole run), CPU-tokens/s, the ratio ours / reference, peak RSS of each process, and
the machine's 1-minute load average before and after.

With ``--eval``: ``fairseq-eval-lm --batch-size 10`` on the validation split (ours, from
a checkpoint of the trained model) against the reference's ``evaluate()`` at its
``eval_batch_size`` 10 (``--bench_eval 1``), again simultaneously; the eval rates
exclude loading (ours: the time inside fairseq's ``eval_lm`` loop).
"""

import argparse
import gzip
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "bench"))
SHARED = os.environ.get("AWD_SHARED", os.path.join(os.path.dirname(REPO), "shared"))
PTB_FLAGS = ["--batch_size", "20", "--dropouti", "0.4", "--dropouth", "0.25", "--seed", "141", "--epochs", "1"]


# -- child processes (one measurement each) -------------------------------------------
def child_ours_train(args, extra):
    import torch
    from _trainer import build_trainer, time_updates

    torch.set_num_threads(args.threads)
    trainer, itr, nparams = build_trainer(args.data, "awd_lstm_ptb", extra)
    if args.batches > 2:
        result = dict(time_updates(trainer, itr, args.batches), params=nparams)
    else:  # only a model to evaluate
        for _ in range(args.batches):
            trainer.train_step([next(itr)])
        result = {}
    if args.save:
        trainer.consolidate_optimizer()
        trainer.save_checkpoint(args.save, {"train_iterator": {"epoch": 1}})
    print("RESULT " + json.dumps(result), flush=True)


def child_ours_eval(args, extra):
    import fairseq_cli.eval_lm as eval_lm_cli

    timing = {}
    inner = eval_lm_cli.eval_lm

    def counted(batches):
        for sample in batches:
            timing["tokens"] = timing.get("tokens", 0) + int(sample["ntokens"])
            yield sample

    def timed(*a, **k):
        k["batch_iterator"] = counted(k["batch_iterator"])
        w0, c0 = time.perf_counter(), time.process_time()
        out = inner(*a, **k)
        timing["wall"], timing["cpu"] = time.perf_counter() - w0, time.process_time() - c0
        timing["ppl"] = float(out["perplexity"])
        return out

    eval_lm_cli.eval_lm = timed
    sys.argv = ["fairseq-eval-lm", args.data, "--user-dir", os.path.join(REPO, "awd_plugins"),
                "--task", "awd_language_modeling", "--path", args.save, "--gen-subset", "valid",
                "--batch-size", "10", "--cpu", "--num-workers", "0"] + extra
    eval_lm_cli.cli_main()
    print("RESULT " + json.dumps({
        "tokens": timing["tokens"], "tok_s": timing["tokens"] / timing["wall"],
        "cpu_tok_s": timing["tokens"] / timing["cpu"], "ppl": timing["ppl"],
        "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}), flush=True)


# -- parent ----------------------------------------------------------------------------
def parse_reference(text):
    m = re.search(r"batch-tok/s min=([\d.]+) median=([\d.]+).*whole-run tok/s ([\d.]+) \| cpu-tok/s median=([\d.]+) "
                  r"whole-run ([\d.]+)", text)
    rss = re.search(r"peak RSS MiB ([\d.]+)", text)
    ev = re.search(r"eval batch \d+ \| (\d+) tokens \| ([\d.]+) s \| eval-tok/s ([\d.]+) \| valid ppl ([\d.]+)", text)
    out = {"rss_mib": float(rss.group(1)) if rss else float("nan")}
    if m:
        out.update(median_tok_s=float(m.group(2)), tok_s=float(m.group(3)), cpu_tok_s=float(m.group(5)))
    if ev:
        out.update(tokens=int(ev.group(1)), tok_s=float(ev.group(3)), ppl=float(ev.group(4)))
    return out


def parse_ours(text):
    lines = [line for line in text.splitlines() if line.startswith("RESULT ")]
    return json.loads(lines[-1][7:]) if lines else None


def env_for(threads):
    return dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), OMP_WAIT_POLICY="PASSIVE",
                PYTHONWARNINGS="ignore", PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))


def run_pair(ref_cmd, ref_cwd, ours_cmd, env, ours_first):
    """Start both, wait for both; returns (reference text, ours text, load before, load after)."""
    load0 = os.getloadavg()[0]
    procs = {}
    order = [("ours", ours_cmd, REPO), ("ref", ref_cmd, ref_cwd)]
    for name, cmd, cwd in order if ours_first else order[::-1]:
        procs[name] = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                       text=True)
    texts = {name: p.communicate()[0] for name, p in procs.items()}
    for name, p in procs.items():
        if p.returncode != 0:
            sys.exit(f"{name} failed (exit {p.returncode}): {' '.join(p.args)}\n{texts[name][-3000:]}")
    return texts["ref"], texts["ours"], load0, os.getloadavg()[0]


def reference_data(raw, folder, eval_lines=0):
    """The reference's --data folder; with ``eval_lines``, valid.txt keeps only its first lines."""
    os.makedirs(folder, exist_ok=True)
    for split in ("train", "valid", "test"):
        src = os.path.join(raw, f"{split}.txt")
        opener = open if os.path.exists(src) else gzip.open
        with opener(src if os.path.exists(src) else src + ".gz", "rb") as f:
            lines = f.readlines()
        if split == "valid" and eval_lines:
            lines = lines[:eval_lines]
        with open(os.path.join(folder, f"{split}.txt"), "wb") as g:
            g.writelines(lines)
    return folder


def ours_eval_data(data, ref_folder, work):
    """Our data-bin with the (shortened) valid.txt of ``ref_folder``, binarized with the full dictionary."""
    dest = os.path.join(work, "ours-eval-bin")
    subprocess.run([os.path.join(os.path.dirname(sys.executable), "fairseq-preprocess"), "--only-source",
                    "--srcdict", os.path.join(data, "dict.txt"), "--validpref", os.path.join(ref_folder, "valid.txt"),
                    "--destdir", dest, "--workers", "1"], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return dest


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", help="checkout of salesforce/awd-lstm-lm (patched, see above)")
    parser.add_argument("--data", help="our PTB data-bin (default: prepared from ../shared/data/ptb)")
    parser.add_argument("--raw", default=os.path.join(SHARED, "data", "ptb"),
                        help="PTB text folder for the reference: {train,valid,test}.txt[.gz]")
    parser.add_argument("--batches", type=int, default=12, help="training batches per run (2 are warm-up)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--train-rounds", type=int, help="rounds of the training comparison (default --rounds; "
                        "0 = only the evaluation, from a model trained for one untimed batch)")
    parser.add_argument("--variants", default="fp32,cpu-bf16", help="ours: comma-separated fp32 / cpu-bf16")
    parser.add_argument("--eval", action="store_true", help="also time evaluation at batch 10")
    parser.add_argument("--eval-lines", type=int, default=0,
                        help="evaluate on the first N lines of PTB valid only (both sides; 0 = all 3,370)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--child", choices=["ours-train", "ours-eval"], help=argparse.SUPPRESS)
    parser.add_argument("--save", help=argparse.SUPPRESS)
    args, extra = parser.parse_known_args()
    extra = [a for a in extra if a != "--"]
    if args.child == "ours-train":
        return child_ours_train(args, extra)
    if args.child == "ours-eval":
        return child_ours_eval(args, extra)
    if not args.reference or not os.path.isfile(os.path.join(args.reference, "main.py")):
        parser.error("--reference must be a checkout of salesforce/awd-lstm-lm (with main.py)")
    if "--bench" not in open(os.path.join(args.reference, "main.py")).read():
        parser.error(f"{args.reference}/main.py has no --bench: apply ../shared/peers/awd-lstm-lm.patch first")
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    for v in variants:
        if v not in ("fp32", "cpu-bf16"):
            parser.error(f"unknown variant {v!r} (fp32, cpu-bf16)")
    work = tempfile.mkdtemp(prefix="bench-vs-ref-")
    if args.data is None:
        args.data = os.path.join(work, "ptb-bin")
        subprocess.run([sys.executable, os.path.join(REPO, "preprocess", "prepare_ptb.py"), "--from", args.raw,
                        "--out", args.data], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ref_data = reference_data(args.raw, os.path.join(work, "ref-ptb"), args.eval_lines)
    eval_bin = ours_eval_data(args.data, ref_data, work) if args.eval_lines else args.data
    env = env_for(args.threads)
    me = [sys.executable, os.path.abspath(__file__), "--data", args.data, "--threads", str(args.threads),
          "--batches", str(args.batches)]
    ref_train = [sys.executable, "main.py", "--data", ref_data, *PTB_FLAGS, "--cuda", "--bench",
                 "--max_batches", str(args.batches), "--save", os.path.join(work, "ref.pt")]
    ckpt = os.path.join(work, "ours.pt")
    print(f"reference {args.reference}; ours {REPO}; {args.threads} thread(s) each, both at once; "
          f"{args.batches} batches per run (2 warm-up); {os.cpu_count()} CPUs", flush=True)
    header = (f"{'round':>5} {'ours':>9} {'ref tok/s':>9} {'ours tok/s':>10} {'ratio':>6} {'ref cpu-tok/s':>13} "
              f"{'ours cpu-tok/s':>14} {'cpu ratio':>9} {'ref RSS':>8} {'ours RSS':>8} {'load before/after':>17}")
    rows = {v: [] for v in variants}
    train_rounds = args.rounds if args.train_rounds is None else args.train_rounds
    if args.eval and train_rounds == 0:
        for v in variants:
            subprocess.run(me[:-2] + ["--batches", "1", "--child", "ours-train", "--save", ckpt + v, "--"]
                           + (["--cpu-bf16"] if v == "cpu-bf16" else []), env=env, check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    print("\ntraining (tokens/s: whole run after warm-up; RSS in MiB)\n" + header, flush=True)
    for r in range(train_rounds):
        for k, v in enumerate(variants):
            flags = ["--cpu-bf16"] if v == "cpu-bf16" else []
            save = ["--save", ckpt + v] if (args.eval and r == 0) else []
            ours_cmd = me + ["--child", "ours-train"] + save + ["--"] + flags
            ref, ours, l0, l1 = run_pair(ref_train, args.reference, ours_cmd, env, ours_first=(r + k) % 2 == 0)
            a, b = parse_reference(ref), parse_ours(ours)
            rows[v].append((b["tok_s"] / a["tok_s"], b["cpu_tok_s"] / a["cpu_tok_s"]))
            print(f"{r + 1:>5} {v:>9} {a['tok_s']:>9.0f} {b['tok_s']:>10.0f} {b['tok_s'] / a['tok_s']:>6.2f} "
                  f"{a['cpu_tok_s']:>13.0f} {b['cpu_tok_s']:>14.0f} {b['cpu_tok_s'] / a['cpu_tok_s']:>9.2f} "
                  f"{a['rss_mib']:>8.0f} {b['rss_mib']:>8.0f} {l0:>8.2f}/{l1:<8.2f}", flush=True)
    print("\nmedian ratio ours / reference over rounds:")
    for v in variants if train_rounds else []:
        print(f"  {v:<9} wall {statistics.median(x for x, _ in rows[v]):.2f}   "
              f"cpu {statistics.median(y for _, y in rows[v]):.2f}")
    if args.eval:
        ref_eval = [sys.executable, "main.py", "--data", ref_data, *PTB_FLAGS, "--cuda", "--bench",
                    "--max_batches", "1", "--bench_eval", "1", "--save", os.path.join(work, "ref.pt")]
        print("\nevaluation, validation split, batch 10 (ours: fairseq-eval-lm)\n" + header, flush=True)
        for r in range(args.rounds):
            for k, v in enumerate(variants):
                flags = ["--cpu-bf16"] if v == "cpu-bf16" else []
                ours_cmd = [sys.executable, os.path.abspath(__file__), "--data", eval_bin, "--child", "ours-eval",
                            "--save", ckpt + v, "--"] + flags
                ref, ours, l0, l1 = run_pair(ref_eval, args.reference, ours_cmd, env, ours_first=(r + k) % 2 == 0)
                a, b = parse_reference(ref), parse_ours(ours)
                print(f"{r + 1:>5} {v:>9} {a['tok_s']:>9.0f} {b['tok_s']:>10.0f} {b['tok_s'] / a['tok_s']:>6.2f} "
                      f"{'':>13} {b['cpu_tok_s']:>14.0f} {'':>9} {a['rss_mib']:>8.0f} {b['rss_mib']:>8.0f} "
                      f"{l0:>8.2f}/{l1:<8.2f}  tokens ref {a.get('tokens')} ours {b['tokens']}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
