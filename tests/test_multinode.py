"""Many machines (issue #16): two CPU ranks launched by torchrun, as the multi-node recipe does.

``torchrun --nnodes N --nproc-per-node G fairseq-train ... --distributed-backend gloo``
(gloo here, nccl on GPUs): fairseq reads torchrun's RANK/WORLD_SIZE/MASTER_* variables.
The task logs which streams and stream positions each rank owns; the two ranks'
shares must be disjoint and together cover the split (its remainder dropped).
"""

import os
import re
import shutil
import subprocess

from conftest import BIN, PLUGIN, cli


def test_torchrun_two_ranks_own_disjoint_streams_covering_the_corpus(small_bin, tmp_path):
    torchrun = os.path.join(BIN, "torchrun")
    if not os.path.exists(torchrun):
        torchrun = shutil.which("torchrun")
    # --standalone: torchrun picks a free port itself (a port chosen here could be taken before it binds)
    cmd = [torchrun, "--standalone", "--nnodes", "1", "--nproc-per-node", "2", cli("fairseq-train")[-1],
           small_bin, "--user-dir", PLUGIN, "--task", "awd_language_modeling", "--arch", "awd_lstm",
           "--emsize", "8", "--nhid", "8", "--nlayers", "1", "--criterion", "split_cross_entropy",
           "--optimizer", "sgd", "--lr", "1", "--batch-size", "3", "--bptt", "10", "--max-update", "3", "--cpu",
           "--distributed-world-size", "2", "--distributed-backend", "gloo", "--ddp-backend", "legacy_ddp", "--num-workers", "0", "--seed", "1",
           "--disable-validation", "--no-save", "--log-format", "simple"]
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:]
    shares = {}
    for rank, world, first, last, total, lo, hi, n in re.findall(
        r"train: rank (\d+)/(\d+) owns streams (\d+)\.\.(\d+) of (\d+), stream positions \[(\d+), (\d+)\) of (\d+)",
        proc.stdout,
    ):
        assert (world, total) == ("2", "6"), proc.stdout[-3000:]
        shares[int(rank)] = (int(lo), int(hi), int(n))
    assert sorted(shares) == [0, 1], proc.stdout[-3000:]  # each rank reported its own share
    (lo0, hi0, n), (lo1, hi1, _) = shares[0], shares[1]
    assert lo0 == 0 and hi0 == lo1  # disjoint and contiguous
    assert n - hi1 < 6  # together they cover the split but its remainder (< one token per stream)
    assert re.search(r"\| bsz 6 \|", proc.stdout) or "num_updates 3" in proc.stdout or "done training" in proc.stdout
