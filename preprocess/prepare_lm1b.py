#!/usr/bin/env python3
"""One Billion Word benchmark (Chelba et al. 2013) → data-bin, prepared as the SRU++
scripts do (Transformer-XL's getdata.sh and data_utils.py; REFERENCE §8.4).

    python preprocess/prepare_lm1b.py --out data-bin/lm1b                   # download (≈1.8 GB)
    python preprocess/prepare_lm1b.py --from one-billion-words --out data-bin/lm1b

``--from DIR``: the directory holding ``1-billion-word-language-modeling-benchmark-r13output/``
(or that directory itself) and, optionally, ``1b_word_vocab.txt``.

1. Vocabulary first, saved before binarizing (the seed's ``prepare_corpus.py``):
   the benchmark's ``1b_word_vocab.txt`` (``--vocab``, found in ``--from``, or
   downloaded), in its own order; with ``--build-vocab`` (or when none can be had)
   it is counted from the training shards, keeping words seen ``--min-count``
   (3, the benchmark's rule) times or more. Saved as ``OUT/1b_word_vocab.txt``
   (the reference's format) and as ``OUT/lm1b_dict.txt`` for fairseq: the same
   words in the same order without ``<S>``, ``</S>``, ``<UNK>``, whose roles fairseq's
   ``</s>`` and ``<unk>`` play (the reference wraps every sentence in ``<S> … <S>``;
   one ``</s>`` per line gives the same targets: the words and one end marker).
2. Text: the 99 training shards ``news.en-000NN-of-00100`` in shuffled order,
   sentences shuffled within each shard (``--seed``; ``--no-shuffle`` keeps the
   order). The reference reshuffles at every pass over the data; the stream task
   cannot, so the order is drawn once here. valid *and* test are
   ``heldout-…/news.en.heldout-00000-of-00050``, as getdata.sh copies that one
   file to both ``valid.txt`` and ``test.txt``.
3. ``fairseq-preprocess --only-source --srcdict OUT/lm1b_dict.txt`` (no padding
   of the dictionary: 793,472 symbols with the benchmark's vocabulary).
"""

import argparse
import collections
import glob
import os
import random
import shutil
import sys
import tarfile
import tempfile
import urllib.request

import _output
from _corpus import SPLITS, binarize, check_output, count_tokens, download, fail

ROOT = "1-billion-word-language-modeling-benchmark-r13output"
TRAIN_DIR = "training-monolingual.tokenized.shuffled"
HELDOUT_DIR = "heldout-monolingual.tokenized.shuffled"
HELDOUT_FILE = "news.en.heldout-00000-of-00050"
ARCHIVE_URL = f"http://www.statmt.org/lm-benchmark/{ROOT}.tar.gz"
VOCAB_URL = "https://github.com/rafaljozefowicz/lm/raw/master/1b_word_vocab.txt"
VOCAB_NAME = "1b_word_vocab.txt"
REFERENCE_SPECIALS = ("<S>", "</S>", "<UNK>")


def find_benchmark(directory: str) -> str:
    for root in (os.path.join(directory, ROOT), directory):
        if os.path.isdir(os.path.join(root, TRAIN_DIR)):
            return root
    fail(f"{directory} holds no {ROOT}/{TRAIN_DIR} (unpack the benchmark there)")


def training_shards(root: str):
    shards = sorted(glob.glob(os.path.join(root, TRAIN_DIR, "news.en-*-of-00100")))
    if not shards:
        fail(f"no training shards news.en-*-of-00100 in {os.path.join(root, TRAIN_DIR)}")
    return shards


def read_lines(path: str):
    with open(path, encoding="utf-8") as f:
        return f.read().splitlines()


def read_vocab(path: str):
    """(word, count) pairs of a ``1b_word_vocab.txt`` ("word count" per line, count optional)."""
    entries = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            fields = line.split()
            if fields:
                entries.append((fields[0], int(fields[1]) if len(fields) > 1 and fields[1].isdigit() else 0))
    if not entries:
        fail(f"vocabulary {path} is empty")
    return entries


def build_vocab(shards, min_count: int):
    """The benchmark's rule: training words seen ``min_count`` times or more, most frequent first."""
    counts = collections.Counter()
    sentences = 0
    for shard in shards:
        for line in read_lines(shard):
            counts.update(line.split())
            sentences += 1
    kept = [(w, c) for w, c in counts.most_common() if c >= min_count and w not in REFERENCE_SPECIALS]
    unknown = sum(c for w, c in counts.items() if c < min_count)
    return [("<S>", sentences), ("</S>", sentences), ("<UNK>", unknown)] + kept


def write_vocab(entries, path: str, fairseq: bool):
    with open(path, "w", encoding="utf-8") as f:
        for word, count in entries:
            if not (fairseq and word in REFERENCE_SPECIALS):
                f.write(f"{word} {count}\n")


def fetch_archive(workdir: str) -> str:
    path = os.path.join(workdir, ROOT + ".tar.gz")
    print(f"downloading {ARCHIVE_URL}", file=sys.stderr)
    with urllib.request.urlopen(ARCHIVE_URL, timeout=120) as response, open(path, "wb") as f:
        shutil.copyfileobj(response, f, 1 << 20)
    with tarfile.open(path) as t:
        members = [m for m in t.getmembers() if TRAIN_DIR in m.name or m.name.endswith(HELDOUT_FILE)]
        t.extractall(workdir, members=members, filter="data")
    os.remove(path)
    return os.path.join(workdir, ROOT)


def main():
    parser = argparse.ArgumentParser(description="Prepare the One Billion Word benchmark for awd-plugins (SRU++).")
    parser.add_argument("--from", dest="source", metavar="DIR", help="directory with the unpacked benchmark")
    parser.add_argument("--out", required=True, help="data-bin directory to write")
    parser.add_argument("--vocab", help=f"the benchmark's {VOCAB_NAME} (default: DIR/{VOCAB_NAME}, else downloaded)")
    parser.add_argument("--build-vocab", action="store_true", help="count the vocabulary from the training shards")
    parser.add_argument("--min-count", type=int, default=3, help="with --build-vocab: keep words seen this often")
    parser.add_argument("--seed", type=int, default=1234, help="seed of the shard and sentence shuffle")
    parser.add_argument("--no-shuffle", action="store_true", help="keep the shards' order")
    parser.add_argument("--raw", help="keep the plain text files (and a download) in this new folder")
    parser.add_argument("--workers", type=int, default=1, help="fairseq-preprocess worker processes")
    parser.add_argument("--force", action="store_true", help=_output.FORCE_HELP)
    args = parser.parse_args()

    if args.vocab and not os.path.isfile(args.vocab):
        fail(f"--vocab file not found: {args.vocab}")
    check_output(args.out, args.force, args.source, args.raw, inputs=[args.vocab])
    with _output.Outputs("prepare_lm1b.py", args.force, [args.source, args.vocab]) as outputs, \
            tempfile.TemporaryDirectory(prefix="lm1b-raw-") as scratch:
        raw_dir = outputs.folder(args.raw, "--raw") if args.raw else scratch
        out_dir = outputs.folder(args.out, "--out")
        root = find_benchmark(args.source) if args.source else fetch_archive(raw_dir)
        shards = training_shards(root)
        heldout = os.path.join(root, HELDOUT_DIR, HELDOUT_FILE)
        if not os.path.isfile(heldout):
            fail(f"{heldout} not found")

        # 1. vocabulary, saved first
        vocab_path = args.vocab or (os.path.join(args.source, VOCAB_NAME) if args.source else None)
        if args.build_vocab:
            entries = build_vocab(shards, args.min_count)
        elif vocab_path and os.path.isfile(vocab_path):
            entries = read_vocab(vocab_path)
        else:
            try:
                data = download(VOCAB_URL)
                vocab_path = os.path.join(raw_dir, VOCAB_NAME)
                with open(vocab_path, "wb") as f:
                    f.write(data)
                entries = read_vocab(vocab_path)
            except OSError as e:
                print(f"warning: could not download {VOCAB_URL} ({e}); counting the vocabulary instead",
                      file=sys.stderr)
                entries = build_vocab(shards, args.min_count)
        write_vocab(entries, os.path.join(out_dir, VOCAB_NAME), fairseq=False)
        fairseq_dict = os.path.join(out_dir, "lm1b_dict.txt")
        write_vocab(entries, fairseq_dict, fairseq=True)

        # 2. text
        rng = random.Random(args.seed)
        order = list(shards)
        if not args.no_shuffle:
            rng.shuffle(order)
        with open(os.path.join(raw_dir, "train.txt"), "w", encoding="utf-8") as out:
            for shard in order:
                lines = read_lines(shard)
                if not args.no_shuffle:
                    rng.shuffle(lines)
                out.writelines(line + "\n" for line in lines)
        for split in ("valid", "test"):
            shutil.copyfile(heldout, os.path.join(raw_dir, f"{split}.txt"))

        # 3. binarize with the saved vocabulary
        binarize(raw_dir, out_dir, args.workers, extra=["--srcdict", fairseq_dict])
        outputs.name_final_paths(os.path.join(out_dir, "preprocess.log"))
        outputs.commit()

    words = sum(1 for w, _ in entries if w not in REFERENCE_SPECIALS)
    print(f"lm1b: vocabulary {len(entries):,} entries as the reference counts them; fairseq dictionary "
          f"{words + 4:,} symbols (4 specials)")
    with open(heldout, "rb") as f:
        held = count_tokens(f.read())
    for split in SPLITS[1:]:
        print(f"lm1b {split}: {held:,} tokens incl. one </s> per line (heldout-00000, as the reference)")


if __name__ == "__main__":
    main()
