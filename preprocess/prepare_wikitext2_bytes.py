#!/usr/bin/env python3
"""WikiText-2 as raw bytes → byte-level data-bin (every byte a token, newline = ``</s>``;
the enwik8 encoding of REFERENCE §1.1, see ``_bytes.py``).

    python preprocess/prepare_wikitext2_bytes.py --out data-bin/wt2-bytes          # download wikitext-2-raw-v1
    python preprocess/prepare_wikitext2_bytes.py --from ../shared/data/wikitext-2 --out data-bin/wt2-tok-bytes
    python preprocess/prepare_wikitext2_bytes.py --from data/wikitext-2-small --out data-bin/wt2-small-bytes

The download is the *raw* (untokenized) WikiText-2, the usual character-level
variant; ``--tokenized`` downloads the tokenized v1 files instead, and ``--from``
takes whichever files the directory holds (``{split}.txt[.gz]``,
``wiki.{split}.raw`` or ``wiki.{split}.tokens``). Byte values that occur only in
valid/test map to ``<unk>``. Binarized with ``--padding-factor 1``.
"""

import argparse
import sys

from _bytes import add_output_arguments, check_output_arguments, token_count, write_and_binarize
from _corpus import SPLITS, download, member_of_archive, read_text_from_dir, sha256

ARCHIVES = {
    "raw": ("https://s3.amazonaws.com/research.metamind.io/wikitext/wikitext-2-raw-v1.zip", "wikitext-2-raw/wiki.{}.raw"),
    "tokens": ("https://s3.amazonaws.com/research.metamind.io/wikitext/wikitext-2-v1.zip", "wikitext-2/wiki.{}.tokens"),
}


def main():
    parser = argparse.ArgumentParser(description="WikiText-2 bytes → byte-level data-bin")
    parser.add_argument("--from", dest="source", metavar="DIR", help="take the three splits from DIR instead of downloading")
    parser.add_argument("--tokenized", action="store_true", help="download the tokenized v1 files instead of the raw ones")
    add_output_arguments(parser)
    args = parser.parse_args()
    check_output_arguments(args)

    names = {s: [f"wiki.{s}.raw", f"wiki.{s}.tokens"] for s in SPLITS}
    url, member = ARCHIVES["tokens" if args.tokenized else "raw"]
    splits, archive = {}, None
    for split in SPLITS:
        if args.source:
            splits[split] = read_text_from_dir(args.source, split, names)
        else:
            archive = archive if archive is not None else download(url)
            splits[split] = member_of_archive(archive, member.format(split))

    write_and_binarize("wikitext-2-bytes", splits, args)
    for split in SPLITS:
        data = splits[split]
        print(f"wikitext-2-bytes {split}: {len(data):,} bytes → {token_count(data):,} tokens, sha256 {sha256(data)}",
              file=sys.stderr)


if __name__ == "__main__":
    main()
