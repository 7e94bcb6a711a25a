"""Generated token strings → readable text, using the tokenizer a data-bin was made with.

``preprocess/prepare_text.py`` records its tokenizer in ``DEST/tokenizer.json``;
:func:`load_detokenizer` reads it and returns a callable that turns a model's
symbols (a space-joined string or a list) back into text:

* ``moses``: sacremoses' detokenizer for the recorded language (lowercasing
  cannot be undone; ``<unk>`` stays visible as ``<unk>``);
* ``sentencepiece``: ``DEST/spm.model`` decodes the pieces;
* ``bytes``: the decimal byte values → UTF-8, ``errors="replace"`` so a sample
  that stops inside a multi-byte character still prints.

In every case ``</s>``, the line separator of the token stream (REFERENCE §1),
becomes a line break, and fairseq's other specials (``<s>``, ``<pad>``, the
``madeupwordNNNN`` padding symbols) are dropped. Data-bins without
``tokenizer.json`` (``prepare_ptb.py``, ``prepare_enwik8.py``, ...) are read as
bytes when every dictionary symbol is a byte value, else as space-separated words.

    python -m awd_plugins.cli.detokenize --data data-bin/mine < samples.txt

Input lines in ``fairseq-interactive`` / ``fairseq-generate`` format are
understood: the hypothesis of each ``H-<id>`` line is printed, the other
prefixed lines (``S-``, ``P-``, ...) and log lines are skipped. ``--encode``
tokenizes text lines the way prepare_text.py did (prompts for sampling)::

    echo "The game was" | python -m awd_plugins.cli.detokenize --data data-bin/mine --encode \
      | fairseq-interactive data-bin/mine --user-dir awd_plugins --task awd_language_modeling \
          --path checkpoints/checkpoint_best.pt --sampling --sampling-topk 10 --beam 1 --max-len-b 50 \
      | python -m awd_plugins.cli.detokenize --data data-bin/mine
"""

import argparse
import json
import os
import re
import sys
from typing import Callable, Iterable, List, Sequence, Union

EOS, BOS, PAD, UNK = "</s>", "<s>", "<pad>", "<unk>"
_DROPPED = re.compile(r"^(<s>|<pad>|madeupword\d+)$")
_FAIRSEQ_HYPOTHESIS = re.compile(r"^H-\d+\t[^\t]*\t(.*)$")
_FAIRSEQ_OTHER = re.compile(r"^([A-Z]-\d+\t|\d{4}-\d\d-\d\d .*\| (INFO|WARNING|ERROR) \|)")

Tokens = Union[str, Sequence[str]]


class DetokenizerError(ValueError):
    pass


def _symbols(tokens: Tokens) -> List[str]:
    return tokens.split() if isinstance(tokens, str) else list(tokens)


def _lines(symbols: Iterable[str]) -> List[List[str]]:
    """Split at ``</s>`` and drop fairseq's padding/bos symbols."""
    lines: List[List[str]] = [[]]
    for s in symbols:
        if s == EOS:
            lines.append([])
        elif not _DROPPED.match(s):
            lines[-1].append(s)
    return lines


class Detokenizer:
    """Callable: symbols → text. ``kind`` is moses, sentencepiece, bytes or words.

    :meth:`encode` goes the other way, for prompts: text → the space-separated
    tokens prepare_text.py would have written (one line in, one line out)."""

    def __init__(self, kind: str, line_decoder: Callable[[List[str]], str] = None,
                 line_encoder: Callable[[str], str] = None, lowercase: bool = False):
        self.kind = kind
        self._line = line_decoder or (lambda words: " ".join(words))
        self._encode = line_encoder or (lambda line: " ".join(line.split()))
        self.lowercase = lowercase

    def encode(self, line: str) -> str:
        line = line.rstrip("\n")
        if self.kind == "bytes":  # a \r is data for bytes, line-ending noise for the others
            return " ".join(str(b) for b in line.encode("utf-8"))
        line = line.rstrip("\r")
        return self._encode(line.lower() if self.lowercase else line)

    def __call__(self, tokens: Tokens) -> str:
        symbols = _symbols(tokens)
        if self.kind == "bytes":
            return _bytes_to_text(symbols)
        return "\n".join(self._line(words) for words in _lines(symbols))


def _bytes_to_text(symbols: List[str]) -> str:
    data = bytearray()
    for s in symbols:
        if s == EOS:
            data.append(10)
        elif s.isdigit() and int(s) < 256:
            data.append(int(s))
        elif not _DROPPED.match(s):
            data += "\ufffd".encode("utf-8")  # <unk> or a stray symbol: show that something was there
    return data.decode("utf-8", errors="replace")


def _moses(record: dict) -> Detokenizer:
    from sacremoses import MosesDetokenizer

    from sacremoses import MosesTokenizer

    lang = record.get("lang") or "en"
    detok, tok = MosesDetokenizer(lang=lang), MosesTokenizer(lang=lang)

    def encode(line):  # as prepare_text.py: escape=False, an existing <unk> stays one token
        return " ".join(f" {UNK} ".join(tok.tokenize(p, escape=False, return_str=True) for p in line.split(UNK)).split())

    # prepare_text tokenizes with escape=False, so nothing is to be unescaped here
    return Detokenizer("moses", lambda words: detok.detokenize(words, unescape=False) if words else "", encode,
                       bool(record.get("lowercase")))


def _sentencepiece(record: dict, data: str) -> Detokenizer:
    import sentencepiece as spm

    path = os.path.join(data, record.get("model") or "spm.model")
    if not os.path.isfile(path):
        raise DetokenizerError(f"{path} not found: the SentencePiece model belongs beside tokenizer.json")
    sp = spm.SentencePieceProcessor(model_file=path)
    return Detokenizer("sentencepiece", lambda pieces: sp.decode(pieces) if pieces else "",
                       lambda line: " ".join(sp.encode(line, out_type=str)), bool(record.get("lowercase")))


def _guess(data: str) -> Detokenizer:
    """Data-bins made without prepare_text.py: bytes if every symbol is a byte value, else words."""
    path = os.path.join(data, "dict.txt")
    if not os.path.isfile(path):
        raise DetokenizerError(f"{data} holds neither tokenizer.json nor dict.txt: is it a data-bin?")
    with open(path, encoding="utf-8") as f:
        symbols = [line.split(" ", 1)[0] for line in f if line.strip()]
    real = [s for s in symbols if not _DROPPED.match(s)]
    if real and all(s.isdigit() and int(s) < 256 for s in real):
        return Detokenizer("bytes")
    return Detokenizer("words")


def load_detokenizer(data: str) -> Detokenizer:
    """The detokenizer for data-bin ``data`` (see the module docstring)."""
    if not os.path.isdir(data):
        raise DetokenizerError(f"data directory not found: {data}")
    path = os.path.join(data, "tokenizer.json")
    if not os.path.isfile(path):
        return _guess(data)
    try:
        with open(path, encoding="utf-8") as f:
            record = json.load(f)
    except (OSError, ValueError) as e:
        raise DetokenizerError(f"cannot read {path}: {e}")
    kind = record.get("tokenizer")
    if kind == "moses":
        return _moses(record)
    if kind == "sentencepiece":
        return _sentencepiece(record, data)
    if kind == "bytes":
        return Detokenizer("bytes")
    raise DetokenizerError(f"{path}: unknown tokenizer {kind!r} (expected moses, sentencepiece or bytes)")


def detokenize(data: str, tokens: Tokens) -> str:
    """One-shot helper: ``detokenize("data-bin/mine", "Hello , world !")`` → ``"Hello, world!"``."""
    return load_detokenizer(data)(tokens)


def detokenize_stream(detok: Detokenizer, lines: Iterable[str]) -> Iterable[str]:
    """Input lines → output texts, understanding fairseq-interactive/generate output."""
    for line in lines:
        line = line.rstrip("\n")
        hypothesis = _FAIRSEQ_HYPOTHESIS.match(line)
        if hypothesis:
            yield detok(hypothesis.group(1))
        elif not _FAIRSEQ_OTHER.match(line):
            yield detok(line)


def cli_main(argv=None):
    parser = argparse.ArgumentParser(
        prog="awd-detokenize",
        description="Turn generated token strings (one sample per line, or fairseq-interactive output) "
        "into readable text with the tokenizer recorded in DATA/tokenizer.json.",
    )
    parser.add_argument("--data", required=True, help="the data-bin the model was trained on")
    parser.add_argument("input", nargs="?", help="file of samples (default: standard input)")
    parser.add_argument("--encode", action="store_true",
                        help="the other way: tokenize text lines (e.g. prompts for fairseq-interactive) as "
                        "prepare_text.py did")
    args = parser.parse_args(argv)
    try:
        detok = load_detokenizer(args.data)
    except DetokenizerError as e:
        parser.exit(2, f"{parser.prog}: error: {e}\n")
    if args.input:
        try:
            f = open(args.input, encoding="utf-8", errors="replace")
        except OSError as e:
            parser.exit(2, f"{parser.prog}: error: cannot read {args.input}: {e.strerror}\n")
    else:
        f = sys.stdin
    with f:
        texts = (detok.encode(line) for line in f) if args.encode else detokenize_stream(detok, f)
        for text in texts:
            print(text)


if __name__ == "__main__":
    cli_main()
