"""The recipe scripts in examples/ pass the published flags (fairseq commands replaced by a recorder)."""

import os
import subprocess
from argparse import Namespace

import pytest

import awd_plugins  # noqa: F401
from conftest import REPO


def _record(tmp_path, script, *args, env=None):
    """Run ``examples/<script>`` with fairseq-train/fairseq-eval-lm replaced by a stub that records its argv."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    log = tmp_path / "calls.txt"
    # the stub fairseq-train leaves a (dummy) checkpoint_best.pt where the next step checks for it
    save_dir = 'prev=""; for a in "$@"; do [ "$prev" = --save-dir ] && mkdir -p "$a" && echo x > "$a/checkpoint_best.pt"; prev=$a; done'
    for tool in ("fairseq-train", "fairseq-eval-lm"):
        stub = bin_dir / tool
        stub.write_text(f'#!/usr/bin/env bash\necho "{tool} $*" >> "{log}"\n' + (save_dir + "\n" if tool == "fairseq-train" else ""))
        stub.chmod(0o755)
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)  # an existing, complete DATA skips the corpus preparation
    for name in ("dict.txt", "train.bin", "train.idx", "valid.bin", "valid.idx", "test.bin", "test.idx"):
        (data / name).write_text("x")
    full_env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "DATA": str(data),
                "SAVE": str(tmp_path / "save"), **(env or {})}
    proc = subprocess.run(["bash", os.path.join(REPO, "examples", script), *args], env=full_env, cwd=REPO,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.returncode == 0, proc.stdout
    return [line.split() for line in log.read_text().splitlines()]


def _opt(argv, name):
    return argv[argv.index(name) + 1]


@pytest.mark.parametrize("bsz", ["16", "8"])
def test_sha_rnn_validates_with_min_100_batch_size_streams(tmp_path, bsz):
    train = _record(tmp_path, "sha_rnn_enwik8.sh", env={"BSZ": bsz})[0]
    assert _opt(train, "--batch-size") == bsz and _opt(train, "--eval-batch-size") == bsz


@pytest.mark.parametrize("run,arch,lr,wd,when,bptt,bsz,epochs", [
    ("enwik8", "awd_lstm_enwik8", "1e-3", "1.2e-6", "25,35", "200", "128", "50"),
    ("ptb-char", "awd_lstm_ptb_char", "2e-3", "1.2e-6", "300,400", "150", "128", "500"),
    ("wt103", "awd_qrnn_wt103", "1e-3", "0", "12", "140", "60", "14"),
])
def test_adam_recipes_pass_the_published_flags(tmp_path, run, arch, lr, wd, when, bptt, bsz, epochs):
    train, test = _record(tmp_path, "awd_adam.sh", run)
    assert train[0] == "fairseq-train" and test[0] == "fairseq-eval-lm"
    expect = {"--arch": arch, "--optimizer": "adam_l2", "--lr": lr, "--weight-decay": wd,
              "--lr-scheduler": "awd_when", "--when": when, "--bptt": bptt, "--batch-size": bsz,
              "--max-epoch": epochs, "--alpha": "0", "--beta": "0", "--clip-norm": "0.25"}
    assert {k: _opt(train, k) for k in expect} == expect
    assert _opt(test, "--batch-size") == "1" and _opt(test, "--bptt") == bptt


def test_srupp_large_configs_and_the_ratio8_checkpoints():
    from awd_plugins.models import srupp

    def arch(fn):
        cfg = Namespace()
        fn(cfg)
        return cfg

    for fn, n_d, n_proj in [(srupp.srupp_enwik8_large, 4096, 1024), (srupp.srupp_enwik8_large_ratio8, 6016, 752),
                            (srupp.srupp_wt103_large, 4096, 1024), (srupp.srupp_wt103_large_ratio8, 5952, 744)]:
        cfg = arch(fn)
        assert (cfg.n_d, cfg.n_proj, cfg.depth, cfg.attn_every) == (n_d, n_proj, 10, 1)
    assert arch(srupp.srupp_enwik8_large_ratio8).dropout == 0.32
    assert arch(srupp.srupp_wt103_large_ratio8).adaptive_softmax_cutoff == "19997,39997,199997"


@pytest.mark.parametrize("size", ["large", "large_ratio8"])
def test_srupp_scripts_select_the_size(tmp_path, size):
    (tmp_path / "e").mkdir(), (tmp_path / "w").mkdir()
    train, _ = _record(tmp_path / "e", "srupp_enwik8.sh", env={"SIZE": size})
    assert _opt(train, "--arch") == f"srupp_enwik8_{size}" and _opt(train, "--batch-size") == "8"
    train = _record(tmp_path / "w", "srupp_wt103.sh", env={"SIZE": size})[0]
    assert _opt(train, "--arch") == f"srupp_wt103_{size}" and _opt(train, "--bptt") == "1024"
