#!/usr/bin/env python3
"""Character-level Penn Treebank ("pennchar", REFERENCE §1.1) → data-bin, derived from
Mikolov's word-level PTB the way his ``ptb.char.*.txt`` files are: the characters of
each word separated by spaces, ``_`` between words, one sentence per line
(``<unk>`` becomes the five characters ``< u n k >``). After fairseq-preprocess
every line ends in ``</s>``, the reference's ``<eos>``.

    python preprocess/prepare_ptb_char.py --from ../shared/data/ptb --out data-bin/ptb-char
    python preprocess/prepare_ptb_char.py --out data-bin/ptb-char              # download simple-examples.tgz

Binarized with ``--padding-factor 1`` (padding would only add unused symbols).
"""

import argparse
import sys

from _bytes import add_output_arguments, check_output_arguments, write_and_binarize
from _corpus import SPLITS, download, fail, member_of_archive, read_text_from_dir, sha256

from prepare_ptb import ARCHIVE_MEMBERS, FILE_NAMES, URL
from prepare_ptb import SHA256 as WORD_SHA256  # the word-level files

WORD_BOUNDARY = "_"


def words_to_chars(line: str) -> str:
    """``" the <unk> cat "`` → ``"t h e _ < u n k > _ c a t"``."""
    return f" {WORD_BOUNDARY} ".join(" ".join(word) for word in line.split())


def ptb_to_char_text(text: str) -> str:
    """Every line of a word-level PTB file in the character format, one output line per input line."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return "".join(words_to_chars(line) + "\n" for line in lines)


def write_char_text(data: bytes, path: str):
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(ptb_to_char_text(data.decode("utf-8")))


def main():
    parser = argparse.ArgumentParser(description="word-level PTB → character-level PTB data-bin")
    parser.add_argument("--from", dest="source", metavar="DIR",
                        help="word-level PTB: DIR/{train,valid,test}.txt[.gz] or ptb.{split}.txt (default: download)")
    parser.add_argument("--no-verify", action="store_true", help="skip the sha256 check of the word-level files")
    add_output_arguments(parser)
    args = parser.parse_args()
    check_output_arguments(args)

    texts, archive = {}, None
    for split in SPLITS:
        if args.source:
            texts[split] = read_text_from_dir(args.source, split, FILE_NAMES)
        else:
            archive = archive if archive is not None else download(URL)
            texts[split] = member_of_archive(archive, ARCHIVE_MEMBERS[split])
        if not args.no_verify and sha256(texts[split]) != WORD_SHA256[split]:
            message = f"{split}: sha256 differs from Mikolov's ptb.{split}.txt, so bpc is not comparable"
            if args.source:
                print(f"warning: {message}", file=sys.stderr)
            else:
                fail(message)

    write_and_binarize("ptb-char", texts, args, text_writer=write_char_text)
    for split in SPLITS:
        text = ptb_to_char_text(texts[split].decode("utf-8"))
        ntokens = sum(len(line.split()) + 1 for line in text.splitlines())
        print(f"ptb-char {split}: {ntokens:,} tokens incl. one </s> per line", file=sys.stderr)


if __name__ == "__main__":
    main()
