"""End to end (fairseq-train → --restore-file → fairseq-eval-lm with a tiny SRU++ and
fairseq's adaptive softmax) and the WT103 / Billion Word preparation scripts on
small synthetic files laid out as the real corpora."""

import importlib.util
import os
import re
import subprocess
import sys

import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PREPROCESS = os.path.join(REPO, "preprocess")
# OpenMP threads spin when the cores are shared; passive waiting keeps tiny runs fast
ENV = {"OMP_WAIT_POLICY": "PASSIVE"}

TINY_SRUPP = [
    "--task", "awd_language_modeling", "--arch", "srupp", "--n-d", 16, "--n-proj", 8, "--depth", 2,
    "--dropout", 0.1, "--attn-dropout", 0.1, "--emb-dropout", 0.1,
    "--adaptive-softmax-cutoff", "500,1500", "--n-e", 16, "--div-val", 2,
    "--criterion", "adaptive_loss", "--ddp-backend", "legacy_ddp",
    "--optimizer", "radam_decoupled", "--weight-decay", 0.1, "--lr", 3e-3,
    "--lr-scheduler", "srupp_cosine", "--warmup-updates", 20, "--max-update", 1000, "--clip-norm", 1.0,
    "--batch-size", 8, "--bptt", 16, "--fixed-bptt", "--no-lr-rescale", "--eval-batch-size", 5,
    "--max-epoch", 2, "--cpu", "--log-format", "simple", "--num-workers", 0, "--seed", 3,
]


def _valid_losses(log):
    return [float(x) for x in re.findall(r"valid on 'valid' subset \| loss ([0-9.]+)", log)]


def test_train_restore_and_eval_lm_with_adaptive_softmax(ptb_slice_bin, run_cli, tmp_path):
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    log_full = run_cli("fairseq-train", ptb_slice_bin, *TINY_SRUPP, "--save-dir", full, env=ENV).stdout
    log_resumed = run_cli("fairseq-train", ptb_slice_bin, *TINY_SRUPP, "--save-dir", resumed,
                          "--restore-file", full / "checkpoint1.pt", env=ENV).stdout
    assert re.search(r"Loaded checkpoint \S*checkpoint1.pt \(epoch 2 @ \d+ updates\)", log_resumed)
    assert "epoch 001:" not in log_resumed  # only epoch 2 is trained again
    losses = _valid_losses(log_full)
    assert len(losses) == 2 and losses[1] < losses[0]
    assert _valid_losses(log_resumed) == losses[1:]

    load = lambda p: torch.load(p, map_location="cpu", weights_only=False)  # noqa: E731
    a, b = load(full / "checkpoint2.pt"), load(resumed / "checkpoint2.pt")
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert a["optimizer_history"][-1]["num_updates"] == b["optimizer_history"][-1]["num_updates"]

    # fairseq-eval-lm on the same streams and windows as the validation (same-length mask, memory)
    out = run_cli("fairseq-eval-lm", ptb_slice_bin, "--task", "awd_language_modeling", "--path",
                  full / "checkpoint2.pt", "--gen-subset", "valid", "--batch-size", 5, "--bptt", 16,
                  "--cpu", "--num-workers", 0, env=ENV).stdout
    loss = float(re.search(r"Loss \(base 2\): ([0-9.]+)", out).group(1))
    assert loss == pytest.approx(losses[1], abs=6e-4)


def _script(name, *args):
    return subprocess.run([sys.executable, os.path.join(PREPROCESS, name), *map(str, args)],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env=dict(os.environ, PYTHONWARNINGS="ignore"))


def _stream(bin_dir, split):
    from fairseq.data import Dictionary, data_utils

    d = Dictionary.load(os.path.join(bin_dir, "dict.txt"))
    ds = data_utils.load_indexed_dataset(os.path.join(bin_dir, split), d, None)
    return d, [d.string(ds[i]) for i in range(len(ds))]


def test_prepare_wikitext103_from_files(tmp_path):
    src = tmp_path / "wikitext-103"
    src.mkdir()
    (src / "wiki.train.tokens").write_text(" = Title = \n\n the cat sat on the mat . \n <unk> sat the @-@ here \n")
    (src / "wiki.valid.tokens").write_text(" the dog sat \n\n")
    (src / "wiki.test.tokens").write_text(" = Other = \n the cat \n")
    proc = _script("prepare_wikitext103.py", "--from", src, "--out", tmp_path / "bin")
    assert proc.returncode == 0, proc.stdout
    d, valid = _stream(tmp_path / "bin", "valid")
    assert "dog" not in d.indices and "cat" in d.indices and "Title" in d.indices  # train-only, cased
    assert d.index("the") == 4  # the most frequent training word comes first after the 4 specials
    assert valid == ["the <unk> sat", ""]  # the empty line is kept: a lone </s>
    assert "wikitext-103 valid: 5 tokens" in proc.stdout


def _load_prepare_lm1b():
    sys.path.insert(0, PREPROCESS)
    try:
        spec = importlib.util.spec_from_file_location("prepare_lm1b", os.path.join(PREPROCESS, "prepare_lm1b.py"))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(PREPROCESS)


def _fake_benchmark(root):
    bench = root / "1-billion-word-language-modeling-benchmark-r13output"
    train = bench / "training-monolingual.tokenized.shuffled"
    held = bench / "heldout-monolingual.tokenized.shuffled"
    train.mkdir(parents=True)
    held.mkdir(parents=True)
    (train / "news.en-00001-of-00100").write_text("the cat sat .\nthe dog ran .\na cat ran .\n")
    (train / "news.en-00002-of-00100").write_text("the cat is here .\nrare words appear once .\n")
    (held / "news.en.heldout-00000-of-00050").write_text("the cat ran away .\n")
    (held / "news.en.heldout-00001-of-00050").write_text("not used\n")
    return bench


def test_prepare_lm1b_with_the_benchmark_vocabulary(tmp_path):
    src = tmp_path / "src"  # outputs may not lie inside the input folder
    _fake_benchmark(src)
    (src / "1b_word_vocab.txt").write_text("<S> 5\n</S> 5\n<UNK> 7\nthe 4\n. 5\ncat 3\nran 2\n")
    out = tmp_path / "bin"
    proc = _script("prepare_lm1b.py", "--from", src, "--out", out, "--raw", tmp_path / "raw")
    assert proc.returncode == 0, proc.stdout
    # the vocabulary is saved first, in its own order, the reference's specials left to fairseq's
    assert (out / "1b_word_vocab.txt").read_text().split("\n")[:3] == ["<S> 5", "</S> 5", "<UNK> 7"]
    d, valid = _stream(out, "valid")
    assert d.symbols[4:] == ["the", ".", "cat", "ran"] and len(d) == 8
    assert valid == ["the cat ran <unk> ."]
    assert _stream(out, "test")[1] == valid  # valid and test are both heldout-00000
    train = (tmp_path / "raw" / "train.txt").read_text().splitlines()
    assert sorted(train) == sorted(["the cat sat .", "the dog ran .", "a cat ran .", "the cat is here .",
                                    "rare words appear once ."])
    assert "lm1b valid: 6 tokens" in proc.stdout


def test_lm1b_vocabulary_is_counted_with_the_benchmark_rule(tmp_path):
    lm1b = _load_prepare_lm1b()
    bench = _fake_benchmark(tmp_path)
    entries = lm1b.build_vocab(lm1b.training_shards(str(bench)), min_count=2)
    assert entries == [("<S>", 5), ("</S>", 5), ("<UNK>", 9), (".", 5), ("the", 3), ("cat", 3), ("ran", 2)]
