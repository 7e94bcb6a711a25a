"""Shared fixtures.

* ``golden(name)``: a golden vector file of ``../shared/golden`` (skips when the
  folder is absent, e.g. in a user's clone; set AWD_SHARED to point elsewhere).
* ``shared_corpus(name)``: ``../shared/data/<name>`` (PTB, WikiText-2), or skip.
* ``small_bin``: a tiny data-bin binarized once per session from the corpus
  bundled in ``data/wikitext-2-small`` (always available).
* ``ptb_slice_bin``: the same from the first lines of PTB (skips without shared/).
* ``rising_valid_bin``: a PTB (else bundled) slice whose validation loss rises, for NT-ASGD.
* ``run_cli``: runs a fairseq command line with the plugin, returns its output,
  and fails the test with the output when it exits non-zero.
* ``one_thread``: torch on one intra-op thread for the test (a module opts in with
  ``pytestmark = pytest.mark.usefixtures("one_thread")``).
"""

import gzip
import os
import subprocess
import sys

import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.environ.get("AWD_SHARED", os.path.join(os.path.dirname(REPO), "shared"))
PLUGIN = os.path.join(REPO, "awd_plugins")
BIN = os.path.dirname(sys.executable)

torch.set_num_threads(2)


def shared_path(*parts):
    path = os.path.join(SHARED, *parts)
    return path if os.path.exists(path) else None


@pytest.fixture
def one_thread():
    """Tiny models gain nothing from a second intra-op thread, and lose a lot when the cores are busy."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def golden():
    def load(name):
        path = shared_path("golden", name)
        if path is None:
            pytest.skip(f"golden vectors not available ({SHARED}/golden/{name})")
        return torch.load(path, weights_only=True)

    return load


@pytest.fixture
def shared_corpus():
    def find(name):
        path = shared_path("data", name)
        if path is None:
            pytest.skip(f"corpus {name} not available under {SHARED}/data")
        return path

    return find


def cli(name):
    exe = os.path.join(BIN, name)
    return [exe] if os.path.exists(exe) else [sys.executable, "-m", "fairseq_cli." + name.split("-", 1)[1].replace("-", "_")]


def run(cmd, expect_fail=False, env=None, cwd=None):
    # PASSIVE: idle OpenMP threads sleep instead of spinning, which matters on 2 shared cores
    full_env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "2", "OMP_WAIT_POLICY": "PASSIVE",
                **(env or {})}
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=full_env, cwd=cwd)
    if expect_fail:
        assert proc.returncode != 0, f"expected failure of {' '.join(cmd)}\n{proc.stdout[-4000:]}"
    elif proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout[-6000:]}")
    return proc


@pytest.fixture
def run_cli():
    """``run_cli("fairseq-train", data, "--arch", ...)``: the plugin is added with --user-dir."""

    def go(tool, *args, expect_fail=False, env=None, cwd=None, user_dir=True):
        cmd = cli(tool) + [str(a) for a in args]
        if user_dir and tool != "fairseq-preprocess":
            cmd += ["--user-dir", PLUGIN]
        return run(cmd, expect_fail=expect_fail, env=env, cwd=cwd)

    return go


def write_slice(src_dir, dst_dir, ntokens):
    """First ``ntokens[split]`` tokens (whole lines) of each split of a gzipped corpus."""
    os.makedirs(dst_dir, exist_ok=True)
    for split, n in ntokens.items():
        with gzip.open(os.path.join(src_dir, f"{split}.txt.gz"), "rt", encoding="utf-8") as f:
            lines, count = [], 0
            for line in f:
                if count >= n:
                    break
                lines.append(line)
                count += len(line.split()) + 1
        with open(os.path.join(dst_dir, f"{split}.txt"), "w", encoding="utf-8") as f:
            f.writelines(lines)
    return dst_dir


def binarize(raw_dir, dest, extra=()):
    run(cli("fairseq-preprocess") + [
        "--only-source", "--trainpref", f"{raw_dir}/train.txt", "--validpref", f"{raw_dir}/valid.txt",
        "--testpref", f"{raw_dir}/test.txt", "--destdir", dest, "--workers", "1", *extra,
    ])
    return dest


SLICE = {"train": 12000, "valid": 2000, "test": 2000}


@pytest.fixture(scope="session")
def small_bin(tmp_path_factory):
    root = tmp_path_factory.mktemp("small")
    raw = write_slice(os.path.join(REPO, "data", "wikitext-2-small"), str(root / "raw"), SLICE)
    return binarize(raw, str(root / "bin"), extra=["--nwordssrc", "2000"])


def hapax_validation(raw_dir):
    """Rewrite ``valid.txt`` as lines of words that occur once in ``train.txt``.

    The better a model learns the training text, the less probable it finds these
    words, so the validation loss rises from epoch to epoch: with ``--nonmono 0`` NT-ASGD
    then switches after epoch 2 on any corpus (REFERENCE §3.3).
    """
    from collections import Counter

    with open(os.path.join(raw_dir, "train.txt"), encoding="utf-8") as f:
        counts = Counter(f.read().split())
    hapax = sorted(w for w, c in counts.items() if c == 1)[:600]
    with open(os.path.join(raw_dir, "valid.txt"), "w", encoding="utf-8") as f:
        f.writelines(" ".join(hapax[i : i + 12]) + "\n" for i in range(0, len(hapax), 12))
    return raw_dir


@pytest.fixture(scope="session")
def rising_valid_bin(tmp_path_factory):
    """A PTB slice (or, without ../shared, the bundled corpus) whose validation loss rises."""
    src = shared_path("data", "ptb") or os.path.join(REPO, "data", "wikitext-2-small")
    root = tmp_path_factory.mktemp("rising")
    raw = hapax_validation(write_slice(src, str(root / "raw"), SLICE))
    return binarize(raw, str(root / "bin"))


@pytest.fixture(scope="session")
def ptb_slice_bin(tmp_path_factory):
    src = shared_path("data", "ptb")
    if src is None:
        pytest.skip("PTB not available under ../shared/data")
    root = tmp_path_factory.mktemp("ptb")
    raw = write_slice(src, str(root / "raw"), SLICE)
    return binarize(raw, str(root / "bin"))
