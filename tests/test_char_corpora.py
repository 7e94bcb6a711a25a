"""Byte/character corpora (REFERENCE §1.1, §1.5) and one end-to-end SHA-RNN run:
fairseq-train with min_trust_lamb → --restore-file continuing identically →
fairseq-eval-lm reporting bits per character as its base-2 loss."""

import gzip
import io
import math
import os
import re
import subprocess
import sys
import zipfile

import pytest
import torch
import torch.nn.functional as F

import awd_plugins  # noqa: F401  (registers the task and model for the in-process check)
from conftest import REPO

sys.path.insert(0, os.path.join(REPO, "preprocess"))
try:
    from _bytes import bytes_to_lines, symbols_to_bytes, token_count, write_byte_lines
    from prepare_ptb_char import ptb_to_char_text, words_to_chars
finally:
    sys.path.remove(os.path.join(REPO, "preprocess"))


def script(name, *args, expect_fail=False):
    proc = subprocess.run([sys.executable, os.path.join(REPO, "preprocess", name), *map(str, args)],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env=dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="2"))
    if expect_fail:
        assert proc.returncode == 2, proc.stderr
    elif proc.returncode != 0:
        pytest.fail(f"{name} exited {proc.returncode}:\n{proc.stderr[-4000:]}")
    return proc


def reference_tokens(text: str):
    """The reference corpus reader: each line's whitespace-split words plus <eos>."""
    return [tok for line in io.StringIO(text) for tok in line.split() + ["<eos>"]]


# -- the byte encoding ---------------------------------------------------------------------------

def test_bytes_to_lines():
    assert bytes_to_lines(b"ab\ncd") == "97 98 \n 99 100"
    assert bytes_to_lines(b"\n\nx") == "\n \n 120"
    assert bytes_to_lines("é".encode()) == "195 169"
    assert bytes_to_lines(b"") == ""
    data = bytes(range(256)) * 3 + b"\n"
    assert reference_tokens(bytes_to_lines(data)) == [("<eos>" if b == 10 else str(b)) for b in data]


def test_newlines_become_eos_and_an_unterminated_split_gets_one_more(tmp_path):
    for data, n in ((b"ab\n\ncd", 7), (b"ab\ncd\n", 6), (b"\n", 1)):
        tokens = reference_tokens(bytes_to_lines(data))
        assert len(tokens) == token_count(data) == n
        assert symbols_to_bytes(tokens, eos="<eos>") == (data if data.endswith(b"\n") else data + b"\n")
    data = bytes(range(256)) * 50
    path = tmp_path / "x.txt"
    write_byte_lines(data, str(path), chunk=37)  # chunked writing gives the same text
    assert path.read_text() == bytes_to_lines(data)


# -- enwik8 ----------------------------------------------------------------------------------------

def synthetic_enwik8(tmp_path):
    torch.manual_seed(0)
    data = bytearray(torch.randint(32, 127, (1000,), dtype=torch.uint8).tolist())
    data[10:12] = b"\n\n"  # an empty line: one <eos> per newline byte
    data[20:22] = "é".encode()  # UTF-8 bytes above 127 are tokens too
    data[799] = 10  # train ends in a newline: no extra <eos>
    data[899] = 65  # valid does not: one extra <eos>
    path = tmp_path / "enwik8.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("enwik8", bytes(data))
    return path, bytes(data)


def test_enwik8_splits(tmp_path):
    archive, data = synthetic_enwik8(tmp_path)
    raw = tmp_path / "raw"
    proc = script("prepare_enwik8.py", "--from", archive, "--no-verify", "--split-sizes", "800,100,100",
                  "--text-only", "--raw", raw)
    parts = {"train": data[:800], "valid": data[800:900], "test": data[900:]}
    for split, part in parts.items():
        assert (raw / f"{split}.raw").read_bytes() == part
        text = (raw / f"{split}.txt").read_text()
        assert text == bytes_to_lines(part)
        assert len(reference_tokens(text)) == token_count(part)
    assert token_count(parts["train"]) == 800 and token_count(parts["valid"]) == 101
    assert "train: 800 bytes → 800 tokens" in proc.stderr
    assert reference_tokens((raw / "train.txt").read_text())[10:12] == ["<eos>", "<eos>"]


def test_enwik8_checks(tmp_path):
    archive, data = synthetic_enwik8(tmp_path)
    out = tmp_path / "raw"
    bad = script("prepare_enwik8.py", "--from", archive, "--split-sizes", "800,100,100", "--text-only", "--raw", out,
                 expect_fail=True)
    assert "sha256" in bad.stderr and "547994d9980ebed1" in bad.stderr and not out.exists()
    short = script("prepare_enwik8.py", "--from", archive, "--no-verify", "--text-only", "--raw", out, expect_fail=True)
    assert "need 100,000,000 bytes; the file has 1,000" in short.stderr
    # an unzipped enwik8 in a directory: no archive to check, a warning instead
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "enwik8").write_bytes(data)
    ok = script("prepare_enwik8.py", "--from", tmp_path / "dir", "--split-sizes", "500,100,100", "--text-only",
                "--raw", out)
    assert "cannot be checked" in ok.stderr and "first 700 of 1,000 bytes" in ok.stderr
    assert (out / "test.raw").read_bytes() == data[600:700]


# -- PTB-char ----------------------------------------------------------------------------------------

def test_ptb_char_derivation(tmp_path):
    assert words_to_chars(" the <unk> cat ") == "t h e _ < u n k > _ c a t"
    assert words_to_chars("N") == "N"
    words = " aer banknote \n pierre <unk> N years old \n"
    assert ptb_to_char_text(words) == "a e r _ b a n k n o t e\np i e r r e _ < u n k > _ N _ y e a r s _ o l d\n"
    src = tmp_path / "ptb"
    src.mkdir()
    for split in ("train", "valid", "test"):
        with gzip.open(src / f"{split}.txt.gz", "wt") as f:
            f.write(words)
    proc = script("prepare_ptb_char.py", "--from", src, "--text-only", "--raw", tmp_path / "raw")
    assert "sha256 differs" in proc.stderr  # not Mikolov's files: a warning with --from
    assert (tmp_path / "raw" / "valid.txt").read_text() == ptb_to_char_text(words)
    assert "ptb-char test: 38 tokens" in proc.stderr  # 12 + 24 characters and separators, two </s>


def test_ptb_char_full_counts(shared_corpus, tmp_path):
    """The standard PTB-char sizes (train 5.02M, valid 393k, test 442k characters incl. </s>)."""
    proc = script("prepare_ptb_char.py", "--from", shared_corpus("ptb"), "--text-only", "--raw", tmp_path)
    assert "train: 5,017,482 tokens" in proc.stderr
    assert "valid: 393,042 tokens" in proc.stderr and "test: 442,423 tokens" in proc.stderr
    assert "warning" not in proc.stderr


# -- end to end ----------------------------------------------------------------------------------------

UPDATE = re.compile(r"epoch (\d+): +(\d+) / \d+ loss=([\d.]+),.*num_updates=(\d+), lr=([\de.-]+), gnorm=([\d.]+)")
VALID = re.compile(r"valid on 'valid' subset \| loss ([\d.]+)")


def updates(log, epoch):
    return [m.groups() for m in UPDATE.finditer(log) if int(m.group(1)) == epoch]


def test_end_to_end_train_resume_eval(tmp_path, run_cli):
    src = tmp_path / "src"
    src.mkdir()
    sizes = {"train": 2400, "valid": 600, "test": 999}
    parts = {}
    for split, n in sizes.items():
        with gzip.open(os.path.join(REPO, "data", "wikitext-2-small", f"{split}.txt.gz"), "rb") as f:
            parts[split] = f.read()[:n]
        (src / f"{split}.txt").write_bytes(parts[split])
    data_bin = tmp_path / "bin"
    script("prepare_wikitext2_bytes.py", "--from", src, "--out", data_bin)

    from fairseq.data import Dictionary, data_utils
    dictionary = Dictionary.load(str(data_bin / "dict.txt"))
    assert not any(s.startswith("madeupword") for s in dictionary.symbols)  # --padding-factor 1
    assert all(s.isdigit() for s in dictionary.symbols[dictionary.nspecial:])
    def stream(split):
        ds = data_utils.load_indexed_dataset(str(data_bin / split), dictionary, None)
        return torch.cat([ds[i] for i in range(len(ds))])

    def with_final_newline(data):
        return data if data.endswith(b"\n") else data + b"\n"

    train = stream("train")
    assert symbols_to_bytes(dictionary[i] for i in train.tolist()) == with_final_newline(parts["train"])
    ids = stream("test")
    assert ids.numel() == token_count(parts["test"])
    known = [("</s>" if b == 10 else str(b)) for b in with_final_newline(parts["test"])]
    known = [s if dictionary.index(s) != dictionary.unk() else "<unk>" for s in known]
    assert [dictionary[i] for i in ids.tolist()] == known  # bytes never seen in train are <unk>

    common = [
        data_bin, "--task", "awd_language_modeling", "--arch", "sha_rnn", "--emsize", 16, "--nhid", 32,
        "--nlayers", 2, "--criterion", "split_cross_entropy", "--alpha", 0, "--beta", 0,
        "--optimizer", "min_trust_lamb", "--lr", 2e-3, "--lr-scheduler", "fixed", "--warmup-updates", 5,
        "--clip-norm", 0.25, "--batch-size", 4, "--bptt", 30, "--bptt-cap", 30, "--no-lr-rescale",
        "--eval-batch-size", 4, "--max-epoch", 2, "--seed", 3, "--cpu", "--log-format", "simple",
        "--log-interval", 1, "--num-workers", 0,
    ]
    full = run_cli("fairseq-train", *common, "--save-dir", tmp_path / "a").stdout
    resumed = run_cli("fairseq-train", *common, "--save-dir", tmp_path / "b",
                      "--restore-file", tmp_path / "a" / "checkpoint1.pt").stdout
    assert "Loaded checkpoint" in resumed and not updates(resumed, 1)
    first, second = updates(full, 2), updates(resumed, 2)
    assert len(second) > 15 and second == first  # loss, update number, lr and grad norm of every update
    assert VALID.findall(full)[-1] == VALID.findall(resumed)[-1]
    warm = updates(full, 1)
    # the lr logged with update k is the one set for update k + 1: lr·min(k + 1, 5)/5
    assert [float(u[4]) for u in warm[:6]] == pytest.approx([2e-3 * min(k + 1, 5) / 5 for k in range(1, 7)])

    checkpoint = tmp_path / "a" / "checkpoint_last.pt"
    out = run_cli("fairseq-eval-lm", data_bin, "--task", "awd_language_modeling", "--path", checkpoint,
                  "--gen-subset", "test", "--batch-size", 1, "--bptt", 50, "--cpu", "--num-workers", 0).stdout
    assert f"Evaluated {token_count(parts['test']):,} tokens" in out
    bits = float(re.search(r"Loss \(base 2\): ([\d.]+)", out).group(1))

    # the same number, computed here: mean −log2 p over the test bytes, state carried (one window)
    from fairseq import checkpoint_utils
    models, _, _ = checkpoint_utils.load_model_ensemble_and_task([str(checkpoint)], arg_overrides={"data": str(data_bin)})
    model = models[0].eval()
    stream = torch.cat([ids.new_tensor([dictionary.eos()]), ids])
    with torch.no_grad():
        raw, _, _ = model.decoder.run(stream[:-1, None], model.decoder.init_state(1, model.decoder.embed_tokens.weight))
        nll = F.cross_entropy(model.decoder.output_layer(raw[:, 0]), stream[1:])
    assert bits == pytest.approx(nll.item() / math.log(2), abs=6e-5)
