#!/usr/bin/env python3
"""enwik8 (the first 10⁸ bytes of an English Wikipedia XML dump, Hutter Prize) → byte-level data-bin,
as awd-lstm-lm's and sha-rnn's ``data/enwik8/prep_enwik8.py`` (REFERENCE §1.1).

    python preprocess/prepare_enwik8.py --out data-bin/enwik8                  # download enwik8.zip
    python preprocess/prepare_enwik8.py --from enwik8.zip --out data-bin/enwik8
    python preprocess/prepare_enwik8.py --from DIR --out data-bin/enwik8       # DIR/enwik8.zip or DIR/enwik8

The file is cut into its first 90,000,000 bytes (train), the next 5,000,000
(valid) and the last 5,000,000 (test); every byte becomes a token (newline =
``</s>``, see ``_bytes.py``). The sha256 of enwik8.zip is checked (``--no-verify``
skips it, e.g. for a synthetic test archive with ``--split-sizes``).
"""

import argparse
import os
import sys

from _bytes import add_output_arguments, check_output_arguments, token_count, write_and_binarize
from _corpus import SPLITS, download, fail, member_of_archive, sha256

URL = "http://mattmahoney.net/dc/enwik8.zip"
ZIP_SHA256 = "547994d9980ebed1288380d652999f38a14fe291a6247c157c3d33d4932534bc"
SPLIT_SIZES = (90_000_000, 5_000_000, 5_000_000)


def parse_sizes(text: str):
    try:
        sizes = tuple(int(s) for s in text.split(","))
    except ValueError:
        sizes = ()
    if len(sizes) != 3 or min(sizes) < 1:
        fail(f"--split-sizes must be three positive byte counts TRAIN,VALID,TEST, got {text!r}")
    return sizes


def read_source(source: str):
    """(archive or None, enwik8 bytes) from a file (zip or unzipped) or a directory holding one."""
    if os.path.isdir(source):
        for name in ("enwik8.zip", "enwik8"):
            if os.path.isfile(os.path.join(source, name)):
                return read_source(os.path.join(source, name))
        fail(f"{source} holds neither enwik8.zip nor enwik8")
    if not os.path.isfile(source):
        fail(f"--from: no such file or directory: {source}")
    with open(source, "rb") as f:
        data = f.read()
    if data[:2] == b"PK":
        return data, member_of_archive(data, "enwik8")
    return None, data


def split_bytes(data: bytes, sizes):
    """Consecutive slices ``train | valid | test`` of the given sizes, from the start of ``data``."""
    if sum(sizes) > len(data):
        fail(f"--split-sizes {','.join(map(str, sizes))} need {sum(sizes):,} bytes; the file has {len(data):,}")
    if sum(sizes) < len(data):
        print(f"note: using the first {sum(sizes):,} of {len(data):,} bytes", file=sys.stderr)
    bounds = [0, sizes[0], sizes[0] + sizes[1], sum(sizes)]
    return {split: data[bounds[i] : bounds[i + 1]] for i, split in enumerate(SPLITS)}


def main():
    parser = argparse.ArgumentParser(description="enwik8 → byte-level data-bin (90M/5M/5M, newline = </s>)")
    parser.add_argument("--from", dest="source", metavar="FILE|DIR",
                        help="enwik8.zip, the unzipped enwik8, or a directory with either")
    parser.add_argument("--url", default=URL, help="where to download enwik8.zip from")
    parser.add_argument("--split-sizes", default=",".join(map(str, SPLIT_SIZES)),
                        help="TRAIN,VALID,TEST byte counts (default the standard 90M,5M,5M)")
    parser.add_argument("--no-verify", action="store_true", help="skip the sha256 check of enwik8.zip")
    add_output_arguments(parser)
    args = parser.parse_args()
    check_output_arguments(args)
    sizes = parse_sizes(args.split_sizes)

    if args.source:
        archive, data = read_source(args.source)
    else:
        archive = download(args.url)
        data = member_of_archive(archive, "enwik8")
    if not args.no_verify:
        if archive is None:
            print("warning: an unzipped enwik8 was given, so the sha256 of enwik8.zip cannot be checked", file=sys.stderr)
        elif sha256(archive) != ZIP_SHA256:
            fail(f"sha256 of the archive is {sha256(archive)}, not the standard enwik8.zip's {ZIP_SHA256} "
                 "(give --no-verify to use it anyway; bpc would not be comparable)")

    splits = split_bytes(data, sizes)
    write_and_binarize("enwik8", splits, args)
    for split in SPLITS:
        print(f"enwik8 {split}: {len(splits[split]):,} bytes → {token_count(splits[split]):,} tokens "
              f"(= targets of a batch-1 evaluation)", file=sys.stderr)


if __name__ == "__main__":
    main()
