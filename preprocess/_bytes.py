"""Byte-level corpora for awd-plugins (REFERENCE §1.1, the ``prep_enwik8.py`` rule
of awd-lstm-lm and sha-rnn).

Every byte becomes its decimal value as a word, words separated by single
spaces, except the newline byte (10), which becomes a real line break. After
``fairseq-preprocess`` (one ``</s>`` per line) each newline byte is therefore the
``</s>`` token, and a split that does not end in a newline gets one extra ``</s>``
at its very end, exactly as the reference's corpus reader counts. One token is
one byte, so bits per token = bits per character (bpc).

Binarized with ``--padding-factor 1``: fairseq's default pads the dictionary to a
multiple of 8 with made-up symbols that can never occur, which would only add
unused rows to the tied embedding/softmax.
"""

import argparse
import os
import sys
import tempfile
from typing import Dict, Iterable

import _output
from _corpus import SPLITS, binarize, check_output, fail

NEWLINE = 10
_WORDS = [str(b) for b in range(256)]
_WORDS[NEWLINE] = "\n"
_CHUNK = 1 << 22


def bytes_to_lines(data: bytes) -> str:
    """``b"ab\\ncd"`` → ``"97 98 \\n 99 100"``: decimal byte values joined by spaces, newline bytes as line breaks."""
    return " ".join(map(_WORDS.__getitem__, data))


def write_byte_lines(data: bytes, path: str, chunk: int = _CHUNK):
    """Write :func:`bytes_to_lines` of ``data`` to ``path`` in pieces (enwik8's 90 MB would not fit as one list)."""
    with open(path, "w", encoding="ascii", newline="\n") as f:
        for start in range(0, len(data), chunk):
            if start:
                f.write(" ")
            f.write(bytes_to_lines(data[start : start + chunk]))


def token_count(data: bytes) -> int:
    """Tokens (= prediction targets of a batch-1 evaluation) the split yields: one per byte,
    plus the final ``</s>`` when the split does not end in a newline."""
    return len(data) + (1 if data and not data.endswith(b"\n") else 0)


def symbols_to_bytes(symbols: Iterable[str], eos: str = "</s>") -> bytes:
    """Inverse of the encoding, for sampled or decoded token strings (``</s>`` → newline)."""
    return bytes(NEWLINE if s == eos else int(s) for s in symbols)


def add_output_arguments(parser: argparse.ArgumentParser):
    parser.add_argument("--out", help="data-bin directory to write (dict.txt, {train,valid,test}.bin/.idx)")
    parser.add_argument("--raw", help="also keep the text files ({split}.txt) and the raw bytes ({split}.raw) in this new folder")
    parser.add_argument("--text-only", action="store_true", help="write the text files to --raw and stop (no data-bin)")
    parser.add_argument("--workers", type=int, default=1, help="fairseq-preprocess worker processes")
    parser.add_argument("--force", action="store_true", help=_output.FORCE_HELP)


def check_output_arguments(args):
    if args.text_only:
        if not args.raw:
            fail("--text-only needs --raw DIR to write the text files to")
    elif not args.out:
        fail("give the data-bin directory with --out (or --text-only --raw DIR)")
    source = getattr(args, "source", None)
    check_output(None if args.text_only else args.out, args.force, source, args.raw)


def write_and_binarize(corpus: str, splits: Dict[str, bytes], args, text_writer=None):
    """Write each split as text (``text_writer(data, path)``, default the byte encoding), then
    ``fairseq-preprocess --only-source --padding-factor 1`` unless ``--text-only``; every output
    folder appears complete or not at all (``_output``)."""
    keep_bytes = text_writer is None  # the .raw files only make sense when the text encodes these bytes
    text_writer = text_writer or write_byte_lines
    with _output.Outputs(_output.script_name(), args.force, [getattr(args, "source", None)]) as outputs, \
            tempfile.TemporaryDirectory(prefix=f"{corpus}-raw-") as scratch:
        raw_dir = outputs.folder(args.raw, "--raw") if args.raw else scratch
        for split in SPLITS:
            text_writer(splits[split], os.path.join(raw_dir, f"{split}.txt"))
            if args.raw and keep_bytes:
                with open(os.path.join(raw_dir, f"{split}.raw"), "wb") as f:
                    f.write(splits[split])
        if not args.text_only:
            bin_dir = outputs.folder(args.out, "--out")
            binarize(raw_dir, bin_dir, args.workers, extra=["--padding-factor", "1"])
            outputs.name_final_paths(os.path.join(bin_dir, "preprocess.log"))
        outputs.commit()
    if not args.text_only:
        with open(os.path.join(args.out, "dict.txt"), encoding="utf-8") as f:
            nsymbols = sum(1 for _ in f)
        print(f"{corpus}: dictionary {nsymbols + 4} symbols ({nsymbols} from train + 4 fairseq specials; "
              f"no padding)", file=sys.stderr)
