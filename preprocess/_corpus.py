"""Shared machinery of the corpus preparation scripts: obtain train/valid/test
text (download or ``--from DIR``), check it, and binarize it with
``fairseq-preprocess --only-source``.

fairseq-preprocess appends ``</s>`` to every line, which plays the role of the
reference's ``<eos>``; a word ``<unk>`` in the text is fairseq's own unknown
symbol, so corpora that already contain ``<unk>`` (PTB, WikiText) get no extra
unknowns. The task adds one leading ``</s>`` to each split's stream, so a batch-1
evaluation scores exactly as many targets as the reference counts tokens (PTB
test: 82,430).
"""

import argparse
import gzip
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
import zipfile
import zlib
from typing import Dict, List, Optional, Sequence

import _output

SPLITS = ("train", "valid", "test")


def fail(message: str):
    print(f"{os.path.basename(sys.argv[0])}: error: {message}", file=sys.stderr)
    sys.exit(2)


def read_text_from_dir(directory: str, split: str, names: Dict[str, List[str]]) -> bytes:
    """``split`` from ``directory``: ``{split}.txt``, ``.txt.gz`` or one of the corpus's own names."""
    candidates = [f"{split}.txt", f"{split}.txt.gz"] + names.get(split, [])
    for name in candidates:
        for path in (os.path.join(directory, name), os.path.join(directory, name + ".gz")):
            if os.path.isfile(path):
                return read_file(path)
    fail(f"no {split} split in {directory} (looked for {', '.join(candidates)}, optionally .gz)")


def read_file(path: str) -> bytes:
    """The bytes of ``path``, gunzipped when its name ends in ``.gz`` (one error line if it is not gzip data)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        fail(f"cannot read {path}: {e.strerror or e}")
    if not path.endswith(".gz"):
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as e:
        fail(f"{path} is named .gz but is not complete gzip data ({e}); rename it if it is plain text")


def download(url: str) -> bytes:
    print(f"downloading {url}", file=sys.stderr)
    with urllib.request.urlopen(url, timeout=120) as response:
        return response.read()


def member_of_archive(archive: bytes, member_suffix: str) -> bytes:
    """A file from a .zip or .tar.gz archive, found by the end of its path."""
    if archive[:2] == b"PK":
        with zipfile.ZipFile(io.BytesIO(archive)) as z:
            for name in z.namelist():
                if name.endswith(member_suffix):
                    return z.read(name)
    else:
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:*") as t:
            for m in t.getmembers():
                if m.name.endswith(member_suffix):
                    return t.extractfile(m).read()
    fail(f"archive has no member ending in {member_suffix}")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def count_tokens(text: bytes) -> int:
    """Tokens the reference counts: whitespace-separated words plus one <eos> per line."""
    lines = text.decode("utf-8").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return sum(len(line.split()) + 1 for line in lines)


def binarize(raw_dir: str, dest: str, workers: int = 1, extra: Optional[List[str]] = None):
    exe = shutil.which("fairseq-preprocess")
    cmd = [exe] if exe else [sys.executable, "-m", "fairseq_cli.preprocess"]
    cmd += [
        "--only-source",
        "--trainpref", os.path.join(raw_dir, "train.txt"),
        "--validpref", os.path.join(raw_dir, "valid.txt"),
        "--testpref", os.path.join(raw_dir, "test.txt"),
        "--destdir", dest,
        "--workers", str(workers),
    ] + (extra or [])
    print("+ fairseq-preprocess " + " ".join(cmd[1 if exe else 3 :]), file=sys.stderr)
    status = subprocess.run(cmd).returncode
    if status != 0:
        fail(f"fairseq-preprocess failed (exit status {status}); its messages are above")


def check_output(out: str, force: bool, source: str = None, raw: str = None, inputs: Sequence[str] = ()):
    """Stop before any work unless ``--out`` (and ``--raw``) may be written (``_output``'s rules), or
    when the ``--from`` input does not exist."""
    if source and not os.path.exists(source):
        fail(f"--from not found: {source}")
    inputs = [source, *inputs]
    if out:
        _output.check_destination(out, "--out", force, inputs)
    if raw:
        _output.check_destination(raw, "--raw", force, inputs)
    _output.check_separate(out, raw)


def main(corpus: str, urls: Dict[str, str], archive_members: Dict[str, str], names: Dict[str, List[str]],
         sha256s: Dict[str, str]):
    parser = argparse.ArgumentParser(
        description=f"Prepare {corpus} for awd-plugins: text → fairseq-preprocess --only-source → data-bin."
    )
    parser.add_argument("--from", dest="source", metavar="DIR",
                        help="take train/valid/test(.txt[.gz]) from DIR instead of downloading")
    parser.add_argument("--out", required=True, help="data-bin directory to write (dict.txt, {train,valid,test}.bin/.idx)")
    parser.add_argument("--raw", help="also keep the plain text files in this new folder (default: a temporary one)")
    parser.add_argument("--workers", type=int, default=1, help="fairseq-preprocess worker processes")
    parser.add_argument("--vocab-size", type=int, metavar="N",
                        help="keep the N most frequent words; the others become <unk> (as prepare_text.py)")
    parser.add_argument("--no-verify", action="store_true", help="skip the sha256 check of the standard files")
    parser.add_argument("--force", action="store_true", help=_output.FORCE_HELP)
    args = parser.parse_args()
    check_output(args.out, args.force, args.source, args.raw)

    texts = {}
    archive = None
    for split in SPLITS:
        if args.source:
            texts[split] = read_text_from_dir(args.source, split, names)
        elif split in urls:
            texts[split] = download(urls[split])
        else:
            archive = archive if archive is not None else download(urls["archive"])
            texts[split] = member_of_archive(archive, archive_members[split])
        if not texts[split].strip():
            fail(f"the {split} split is empty")
        try:
            texts[split].decode("utf-8")
        except UnicodeDecodeError as e:
            fail(f"the {split} split is not UTF-8 text ({e})")
        if not args.no_verify and split in sha256s and sha256(texts[split]) != sha256s[split]:
            message = f"{split}: sha256 differs from the standard {corpus} file, so perplexities are not comparable"
            if args.source:
                print(f"warning: {message}", file=sys.stderr)
            else:
                fail(message)

    vocab = ["--nwordssrc", str(args.vocab_size + 4)] if args.vocab_size else None
    with _output.Outputs(_output.script_name(), args.force, [args.source]) as outputs, \
            tempfile.TemporaryDirectory(prefix=f"{corpus}-raw-") as scratch:
        raw_dir = outputs.folder(args.raw, "--raw") if args.raw else scratch
        for split, text in texts.items():
            with open(os.path.join(raw_dir, f"{split}.txt"), "wb") as f:
                f.write(text)
        bin_dir = outputs.folder(args.out, "--out")
        binarize(raw_dir, bin_dir, args.workers, vocab)
        outputs.name_final_paths(os.path.join(bin_dir, "preprocess.log"))
        outputs.commit()

    with open(os.path.join(args.out, "dict.txt"), encoding="utf-8") as f:
        nwords = sum(1 for _ in f)
    print(f"{corpus}: dictionary {nwords + 4:,} symbols (4 fairseq specials, padded to a multiple of 8)")
    for split in SPLITS:
        print(f"{corpus} {split}: {count_tokens(texts[split]):,} tokens incl. one </s> per line "
              f"(= targets of a batch-1 evaluation)")
