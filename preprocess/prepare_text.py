#!/usr/bin/env python3
"""Your own corpus → a fairseq data-bin for ``awd_language_modeling``, in one step.

    # a folder holding train/valid/test(.txt[.gz]):
    python preprocess/prepare_text.py corpus/ --out data-bin/mine --tokenizer moses --vocab-size 10000
    # one file, lines assigned to train/valid/test at random (seeded, order kept within a split):
    python preprocess/prepare_text.py book.txt --split 0.9,0.05,0.05 --seed 1 \\
        --out data-bin/mine-sp --tokenizer sentencepiece --vocab-size 8000
    python preprocess/prepare_text.py book.txt --out data-bin/mine-bytes --tokenizer bytes

Tokenizers (the choice is recorded in ``DEST/tokenizer.json``, which
``python -m awd_plugins.cli.detokenize --data DEST`` reads to turn samples back into text):

* ``moses``: word tokens from sacremoses (``--lang``, ``--lowercase``). With
  ``--vocab-size N`` only the N most frequent training words are kept and every
  other word becomes ``<unk>``, the way the PTB/WikiText word-level corpora of
  REFERENCE §1 are made; fairseq reads the text ``<unk>`` as its own unknown symbol.
* ``sentencepiece``: a unigram or BPE model trained on the training split only
  (``--sp-model-type``, ``--vocab-size``), saved as ``DEST/spm.model``.
* ``bytes``: one decimal token per UTF-8 byte, newline bytes as line breaks
  (``preprocess/_bytes.py``), the character-level setting of enwik8-style corpora.

Every line ends with fairseq's ``</s>`` (the reference's ``<eos>``). All input is
read and checked, and the tokenization (SentencePiece training included) done in
memory, before anything is written; the data-bin (and ``--raw``) is built in a
temporary folder beside DEST and moved into place at the end, so bad input leaves
nothing behind. DEST and ``--raw`` may not be, contain or lie inside the input, nor be
or contain the current folder; a non-empty one is replaced only with ``--force`` and
only when an earlier run of these scripts made it (``preprocess/_output.py``: its
``.awd-prepared.json`` lists every file, and nothing else is in it).
"""

import argparse
import json
import os
import re
import tempfile
from collections import Counter
from typing import Dict, List, Optional

import _output
from _corpus import SPLITS, binarize, check_output, count_tokens, fail, read_file, read_text_from_dir

UNK = "<unk>"
EOS = "</s>"
# extra names accepted in a corpus folder besides {split}.txt(.gz)
SPLIT_NAMES = {
    "train": ["train", "wiki.train.tokens", "ptb.train.txt"],
    "valid": ["valid", "dev.txt", "dev", "validation.txt", "wiki.valid.tokens", "ptb.valid.txt"],
    "test": ["test", "wiki.test.tokens", "ptb.test.txt"],
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="Raw UTF-8 text → tokenized → fairseq-preprocess --only-source → data-bin (+ tokenizer.json).",
    )
    p.add_argument("input", help="a folder with train/valid/test(.txt[.gz]) or one text file (split with --split)")
    p.add_argument("--out", required=True, metavar="DEST", help="data-bin folder to create")
    p.add_argument("--tokenizer", required=True, choices=["moses", "sentencepiece", "bytes"])
    p.add_argument("--split", metavar="TRAIN,VALID,TEST",
                   help="for a single input file: fractions of its lines for each split (default 0.9,0.05,0.05)")
    p.add_argument("--seed", type=int, default=1, help="seed of the random line-to-split assignment (default 1)")
    p.add_argument("--lowercase", action="store_true", help="lowercase the text before tokenizing (moses, sentencepiece)")
    p.add_argument("--lang", help="moses: language code of the tokenizer rules (default en)")
    p.add_argument("--vocab-size", type=int,
                   help="moses: keep the N most frequent training words, the rest become <unk> (default: keep all); "
                   "sentencepiece: size of the piece vocabulary (default 8000)")
    p.add_argument("--sp-model-type", choices=["unigram", "bpe"], help="sentencepiece model type (default unigram)")
    p.add_argument("--sp-normalization", choices=["identity", "nmt_nfkc", "nfkc"],
                   help="sentencepiece normalization (default identity: decoding gives back the text exactly, "
                   "up to runs of spaces)")
    p.add_argument("--raw", metavar="DIR", help="also keep the tokenized train/valid/test.txt in this new folder")
    p.add_argument("--workers", type=int, default=1, help="processes for tokenization and fairseq-preprocess (default 1)")
    p.add_argument("--force", action="store_true", help=_output.FORCE_HELP)
    return p.parse_args(argv)


def check_options(args):
    """Option errors, before touching any file."""
    only = {"moses": ["lang"], "sentencepiece": ["sp_model_type", "sp_normalization"]}
    for tokenizer, names in only.items():
        for name in names:
            if getattr(args, name) is not None and args.tokenizer != tokenizer:
                fail(f"--{name.replace('_', '-')} applies to --tokenizer {tokenizer} only")
    if args.tokenizer == "bytes" and args.vocab_size is not None:
        fail("--vocab-size does not apply to --tokenizer bytes (the vocabulary is the 256 byte values)")
    if args.tokenizer == "bytes" and args.lowercase:
        fail("--lowercase does not apply to --tokenizer bytes (bytes are kept as they are)")
    if args.vocab_size is not None and args.vocab_size < 1:
        fail(f"--vocab-size must be a positive integer, got {args.vocab_size}")
    if args.workers < 1:
        fail(f"--workers must be a positive integer, got {args.workers}")
    args.lang = args.lang or "en"
    args.sp_model_type = args.sp_model_type or "unigram"
    args.sp_normalization = args.sp_normalization or "identity"
    if args.tokenizer == "sentencepiece" and args.vocab_size is None:
        args.vocab_size = 8000
    if not os.path.exists(args.input):
        fail(f"input not found: {args.input}")
    if os.path.isdir(args.input) and args.split is not None:
        fail(f"--split applies to a single input file; {args.input} is a folder (its train/valid/test are used)")
    if os.path.isfile(args.input):
        args.ratios = parse_ratios(args.split or "0.9,0.05,0.05")
    check_output(args.out, args.force, raw=args.raw, inputs=[args.input])


def parse_ratios(text: str) -> List[float]:
    try:
        ratios = [float(x) for x in text.split(",")]
    except ValueError:
        fail(f"--split must be three comma-separated fractions like 0.9,0.05,0.05, got {text!r}")
    if len(ratios) != 3 or any(not r > 0 for r in ratios) or abs(sum(ratios) - 1.0) > 1e-6:
        fail(f"--split must be three positive fractions summing to 1 (train,valid,test), got {text!r}")
    return ratios


def decode_utf8(data: bytes, what: str) -> str:
    try:
        return data.decode("utf-8-sig")  # a leading byte-order mark is not text
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        fail(f"{what} is not UTF-8 text: byte 0x{data[e.start]:02x} at line {line} (byte offset {e.start}) "
             f"cannot be decoded; convert it first, e.g. iconv -f latin1 -t utf-8")


def split_lines(text: str) -> List[str]:
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def read_input(args) -> Dict[str, List[str]]:
    """train/valid/test as lists of lines; every check on the text happens here."""
    if os.path.isdir(args.input):
        texts = {}
        for split in SPLITS:
            data = read_text_from_dir(args.input, split, SPLIT_NAMES)
            texts[split] = decode_utf8(data, f"the {split} split in {args.input}")
        lines = {split: split_lines(text) for split, text in texts.items()}
        for split in SPLITS:
            if not any(line.strip() for line in lines[split]):
                fail(f"the {split} split in {args.input} is empty")
        return lines

    data = read_file(args.input)
    all_lines = split_lines(decode_utf8(data, args.input))
    if not any(line.strip() for line in all_lines):
        fail(f"{args.input} is empty")
    return assign_lines(all_lines, args.ratios, args.seed, args.input)


def assign_lines(lines: List[str], ratios: List[float], seed: int, name: str) -> Dict[str, List[str]]:
    """Lines to splits at random with ``seed``; each split keeps the file's line order."""
    import numpy as np

    n = len(lines)
    n_valid, n_test = round(ratios[1] * n), round(ratios[2] * n)
    order = np.random.RandomState(seed).permutation(n)
    which = np.zeros(n, dtype=np.int64)
    which[order[:n_valid]] = 1
    which[order[n_valid:n_valid + n_test]] = 2
    out = {split: [line for line, w in zip(lines, which) if w == k] for k, split in enumerate(SPLITS)}
    for split in SPLITS:
        if not any(line.strip() for line in out[split]):
            fail(f"--split {','.join(map(str, ratios))} leaves the {split} split of {name} without text "
                 f"({n} lines in all); give it a larger fraction or more text")
    return out


# -- tokenizers ----------------------------------------------------------------------------
def _moses_lines(lang: str, lines: List[str]) -> List[str]:
    from sacremoses import MosesTokenizer

    tok = MosesTokenizer(lang=lang)
    out = []
    for line in lines:
        # an existing <unk> (PTB-style text) must stay one token, not "< unk >"
        pieces = [tok.tokenize(part, escape=False, return_str=True) for part in line.split(UNK)]
        out.append(f" {UNK} ".join(pieces).strip())
    return [" ".join(line.split()) for line in out]


def moses_tokenize(lines: List[str], lang: str, workers: int) -> List[str]:
    if workers <= 1 or len(lines) < 10000:
        return _moses_lines(lang, lines)
    from multiprocessing import Pool

    size = (len(lines) + workers - 1) // workers
    chunks = [lines[i:i + size] for i in range(0, len(lines), size)]
    with Pool(workers) as pool:
        parts = pool.starmap(_moses_lines, [(lang, c) for c in chunks])
    return [line for part in parts for line in part]


def cap_vocabulary(tokenized: Dict[str, List[str]], size: int):
    """Words outside the ``size`` most frequent training words → <unk> (ties: alphabetical)."""
    counts = Counter(w for line in tokenized["train"] for w in line.split() if w != UNK)
    keep = {w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:size]}
    for split, lines in tokenized.items():
        tokenized[split] = [" ".join(w if w in keep else UNK for w in line.split()) for line in lines]


def train_sentencepiece(train_lines: List[str], args) -> bytes:
    """A SentencePiece model trained in memory on the training split; returns its bytes."""
    import io

    import sentencepiece as spm

    model = io.BytesIO()
    sentences = [line for line in train_lines if line.strip()]
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences),
            model_writer=model,
            vocab_size=args.vocab_size,
            model_type=args.sp_model_type,
            character_coverage=1.0,  # small corpora: every training character gets a piece
            normalization_rule_name=args.sp_normalization,
            # </s> is fairseq's line end and <unk> its unknown: SentencePiece needs no bos/eos of its own
            unk_id=0, bos_id=-1, eos_id=-1, pad_id=-1,
            max_sentence_length=1 << 16,  # long paragraph lines would otherwise be skipped silently
            num_threads=args.workers,
            minloglevel=2,
        )
    except (RuntimeError, OSError) as e:
        message = " ".join(str(e).split())
        message = re.sub(r"^.*?\] ", "", message)  # drop the C++ file/line prefix
        chars = re.search(r"smaller than required_chars\. \d+ vs (\d+)", message)
        if chars:
            message = (f"--vocab-size {args.vocab_size} is too small: the characters of the training text "
                       f"alone need {chars.group(1)} pieces")
        fail(f"SentencePiece could not be trained on the training split: {message}")
    return model.getvalue()


def sentencepiece_tokenize(lines: Dict[str, List[str]], model: bytes) -> Dict[str, List[str]]:
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_proto=model)
    return {split: [" ".join(pieces) for pieces in sp.encode(ls, out_type=str)] for split, ls in lines.items()}


def bytes_tokenize(lines: Dict[str, List[str]]) -> Dict[str, List[str]]:
    try:
        from _bytes import bytes_to_lines
    except ImportError as e:
        fail(f"--tokenizer bytes needs preprocess/_bytes.py ({e})")
    # bytes_to_lines gives one text with a real line break per newline byte
    return {split: [line.strip() for line in split_lines(bytes_to_lines(to_bytes(ls)))] for split, ls in lines.items()}


def tokenize(lines: Dict[str, List[str]], args):
    """(tokenized lines per split, SentencePiece model bytes or None)."""
    if args.tokenizer == "bytes":
        return bytes_tokenize(lines), None
    # CRLF files: the \r is line-ending noise for word and piece tokenizers (bytes keep it)
    lines = {split: [line.rstrip("\r") for line in ls] for split, ls in lines.items()}
    if args.lowercase:
        lines = {split: [line.lower() for line in ls] for split, ls in lines.items()}
    if args.tokenizer == "moses":
        out = {split: moses_tokenize(ls, args.lang, args.workers) for split, ls in lines.items()}
        if args.vocab_size is not None:
            cap_vocabulary(out, args.vocab_size)
        return out, None
    model = train_sentencepiece(lines["train"], args)
    return sentencepiece_tokenize(lines, model), model


def tokenizer_record(args) -> dict:
    record = {"tokenizer": args.tokenizer, "lowercase": bool(args.lowercase)}
    if args.tokenizer == "moses":
        record.update(lang=args.lang, vocab_size=args.vocab_size, unk=UNK)
    elif args.tokenizer == "sentencepiece":
        record.update(model="spm.model", model_type=args.sp_model_type, vocab_size=args.vocab_size,
                      normalization=args.sp_normalization)
    else:
        record.update(encoding="utf-8", newline="line break (</s>)")
    if os.path.isfile(args.input):
        record["source"] = {"file": os.path.abspath(args.input), "split": args.ratios, "seed": args.seed}
    else:
        record["source"] = {"folder": os.path.abspath(args.input)}
    return record


# -- writing -------------------------------------------------------------------------------
def to_bytes(lines: List[str]) -> bytes:
    return "".join(line + "\n" for line in lines).encode("utf-8")


def write_data_bin(tokenized: Dict[str, List[str]], model: Optional[bytes], record: dict, args):
    """Tokenized text → data-bin (+ ``--raw``), each built beside its destination and moved into place (``_output``)."""
    with _output.Outputs("prepare_text.py", args.force, [args.input]) as outputs, \
            tempfile.TemporaryDirectory(prefix="prepare-text-") as scratch:
        raw = outputs.folder(args.raw, "--raw") if args.raw else scratch
        for split in SPLITS:
            with open(os.path.join(raw, f"{split}.txt"), "wb") as f:
                f.write(to_bytes(tokenized[split]))
        binarized = outputs.folder(args.out, "--out")
        # bytes: no made-up padding symbols, as _bytes.py (they could never occur)
        binarize(raw, binarized, args.workers, extra=["--padding-factor", "1"] if args.tokenizer == "bytes" else None)
        outputs.name_final_paths(os.path.join(binarized, "preprocess.log"), {scratch: "<tokenized text>"})
        if model is not None:
            with open(os.path.join(binarized, record["model"]), "wb") as f:
                f.write(model)
        with open(os.path.join(binarized, "tokenizer.json"), "w", encoding="utf-8") as f:
            json.dump(record, f, indent=2, ensure_ascii=False)
            f.write("\n")
        outputs.commit()


def report(tokenized: Dict[str, List[str]], dest: str, tokenizer: str):
    with open(os.path.join(dest, "dict.txt"), encoding="utf-8") as f:
        known = {line.rsplit(" ", 1)[0] for line in f if line.strip()}
    size = len(known) + 4
    padding = "no padding" if tokenizer == "bytes" else "padded to a multiple of 8"
    print(f"{dest}: {tokenizer} tokens, dictionary of {size:,} symbols (4 fairseq specials included, {padding})")
    for split in SPLITS:
        n = count_tokens(to_bytes(tokenized[split]))
        unk = sum(1 for line in tokenized[split] for w in line.split() if w not in known)
        print(f"  {split}: {len(tokenized[split]):,} lines, {n:,} tokens incl. one </s> per line, "
              f"{unk:,} <unk> ({100.0 * unk / max(n, 1):.2f}%)")


def main(argv=None):
    args = parse_args(argv)
    check_options(args)
    lines = read_input(args)
    tokenized, model = tokenize(lines, args)
    for split in SPLITS:
        if not any(tokenized[split]):
            fail(f"the {split} split has no tokens after tokenization")
    record = tokenizer_record(args)
    write_data_bin(tokenized, model, record, args)
    report(tokenized, os.path.abspath(args.out), args.tokenizer)


if __name__ == "__main__":
    main()
