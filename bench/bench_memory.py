#!/usr/bin/env python3
"""Peak memory of a rank on a corpus larger than its share of memory (issue #16).

    python bench/bench_memory.py [--tokens 200000000] [--work /tmp/bench-memory] [--eval-batches 20]

Builds a synthetic data-bin of ``--tokens`` tokens (1,000-symbol dictionary, so uint16
like any vocabulary under 65,500 symbols) directly with fairseq's
MMapIndexedDatasetBuilder, then measures the peak resident memory (VmHWM, includes
the pages of the memory-mapped data-bin that were touched) of

* 20 training updates of a tiny ``rnn_lm`` through ``fairseq-train`` (``--batch-size 8``),
* ``fairseq-eval-lm`` of the same split (stopped after ``--eval-batches`` windows:
  the corpus is read at load time, the rest of the evaluation changes nothing),

once with the task's memory-mapped streams ("after") and once with the in-memory
loading it replaced ("before": the whole split copied to int64, then the rank's rows
copied out; re-implemented below and patched into the task). Prints a table.
"""

import argparse
import os
import resource
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def build_data_bin(path, ntokens, vocab=1000, line=25, chunk=4_000_000):
    """train = ``ntokens`` random ids in lines of ``line`` tokens ending with </s>; test is train; valid small."""
    import numpy as np
    import torch
    from fairseq.data import Dictionary
    from fairseq.data.indexed_dataset import MMapIndexedDatasetBuilder, best_fitting_int_dtype

    os.makedirs(path, exist_ok=True)
    if os.path.exists(os.path.join(path, "test.idx")):
        return path
    d = Dictionary()
    for i in range(vocab - len(d)):
        d.add_symbol(f"w{i}", n=vocab - i)
    d.save(os.path.join(path, "dict.txt"))
    dtype = best_fitting_int_dtype(len(d))
    rng = np.random.RandomState(0)
    for split, n in [("train", ntokens), ("valid", 10_000)]:
        builder = MMapIndexedDatasetBuilder(os.path.join(path, f"{split}.bin"), dtype=dtype)
        done = 0
        while done < n:
            # one item per chunk: the stream is their concatenation, sentence sizes do not matter here
            size = min(chunk, n - done)
            ids = rng.randint(d.nspecial, len(d), size=size).astype(np.int64)
            ids[line - 1 :: line] = d.eos()
            builder.add_item(torch.from_numpy(ids))
            done += size
            print(f"\r{split}: {done:,}/{n:,} tokens", end="", file=sys.stderr, flush=True)
        print(file=sys.stderr)
        builder.finalize(os.path.join(path, f"{split}.idx"))
    for ext in ("bin", "idx"):
        os.symlink(f"train.{ext}", os.path.join(path, f"test.{ext}"))
    return path


def patch_in_memory_loading():
    """The loading the task used before: int64 copy of the split, then batchify()'s row copy."""
    import numpy as np
    import torch

    from awd_plugins.data import stream_dataset
    from awd_plugins.tasks import awd_language_modeling as task_module
    from fairseq import utils
    from fairseq.data import data_utils

    def load_dataset(self, split, epoch=1, combine=False, **kwargs):
        path = os.path.join(utils.split_paths(self.cfg.data)[0], split)
        indexed = data_utils.load_indexed_dataset(path, self.dictionary, None)
        flat = np.frombuffer(indexed._bin_buffer, dtype=indexed._index.dtype)
        flat = torch.from_numpy(flat.astype(np.int64))
        stream = torch.cat([flat.new_tensor([self.dictionary.eos()]), flat])
        self.datasets[split] = stream_dataset.TokenStream(stream, split)

    task_module.AwdLanguageModelingTask.load_dataset = load_dataset
    class InMemoryRows(stream_dataset._TensorRows):
        """batchify()'s contiguous copy of the rank's rows, behind StreamRows' interface."""

        def __init__(self, ds, bsz, rank, world):
            super().__init__(stream_dataset.batchify(ds.stream, bsz, rank, world))
            self.stream, self.first_row = ds, rank * bsz

    task_module.StreamRows = InMemoryRows


def child(mode, tool, eval_batches, argv):
    """Run one fairseq command in this process and print its peak RSS."""
    if mode == "before":
        patch_in_memory_loading()
    if tool == "eval":
        import itertools

        from awd_plugins.tasks.awd_language_modeling import AwdLanguageModelingTask

        class FirstBatches:
            def __init__(self, itr):
                self.itr, self.n = itr, min(eval_batches, len(itr))

            def __len__(self):
                return self.n

            def __iter__(self):
                return itertools.islice(iter(self.itr), self.n)

        full = AwdLanguageModelingTask.eval_lm_dataloader
        AwdLanguageModelingTask.eval_lm_dataloader = lambda self, *a, **k: FirstBatches(full(self, *a, **k))
        from fairseq_cli.eval_lm import cli_main
    else:
        from fairseq_cli.train import cli_main
    sys.argv = [tool] + argv
    cli_main()
    print(f"PEAK_RSS_KB {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}")


def measure(mode, tool, argv, eval_batches):
    cmd = [sys.executable, os.path.abspath(__file__), "--child", mode, tool, str(eval_batches), "--"] + argv
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1", PYTHONPATH=REPO)
    t0 = time.time()
    out = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    if out.returncode != 0:
        sys.exit(out.stdout[-4000:])
    peak = [int(line.split()[1]) for line in out.stdout.splitlines() if line.startswith("PEAK_RSS_KB")][-1]
    return peak / 1024, time.time() - t0


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        mode, tool, eval_batches = sys.argv[2], sys.argv[3], int(sys.argv[4])
        return child(mode, tool, eval_batches, sys.argv[6:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=200_000_000)
    parser.add_argument("--work", default="/tmp/bench-memory")
    parser.add_argument("--eval-batches", type=int, default=20)
    args = parser.parse_args()
    data = build_data_bin(os.path.join(args.work, f"bin-{args.tokens}"), args.tokens)
    ckpt_dir = os.path.join(args.work, "ckpt")
    plugin = os.path.join(REPO, "awd_plugins")
    train = [data, "--user-dir", plugin, "--task", "awd_language_modeling", "--arch", "rnn_lm",
             "--emsize", "16", "--nhid", "16", "--nlayers", "1", "--criterion", "split_cross_entropy",
             "--optimizer", "sgd", "--lr", "1", "--batch-size", "8", "--bptt", "35", "--fixed-bptt", "--cpu",
             "--max-update", "20", "--disable-validation", "--num-workers", "0", "--log-format", "simple",
             "--save-dir", ckpt_dir, "--no-epoch-checkpoints", "--seed", "1"]
    rows = []
    for mode in ("before", "after"):
        rows.append((f"fairseq-train, 20 updates, {mode}", *measure(mode, "train", train, args.eval_batches)))
    ckpt = os.path.join(ckpt_dir, "checkpoint_last.pt")
    evaluate = [data, "--user-dir", plugin, "--task", "awd_language_modeling", "--path", ckpt, "--gen-subset", "test",
                "--batch-size", "8", "--bptt", "35", "--cpu", "--num-workers", "0"]
    for mode in ("before", "after"):
        rows.append((f"fairseq-eval-lm, {args.eval_batches} windows, {mode}", *measure(mode, "eval", evaluate, args.eval_batches)))
    size = os.path.getsize(os.path.join(data, "train.bin")) / 2**20
    print(f"\nsynthetic data-bin: {args.tokens:,} tokens, train.bin {size:,.0f} MiB (uint16)")
    print(f"{'run':<44} {'peak RSS (MiB)':>15} {'wall (s)':>9}")
    for name, mib, secs in rows:
        print(f"{name:<44} {mib:>15,.0f} {secs:>9.1f}")


if __name__ == "__main__":
    main()
