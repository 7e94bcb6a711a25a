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


def find_split(directory: str, split: str, names: Dict[str, List[str]]) -> str:
    """The file of ``split`` in ``directory``: ``{split}.txt``, ``.txt.gz`` or one of the corpus's own names."""
    candidates = [f"{split}.txt", f"{split}.txt.gz"] + names.get(split, [])
    for name in candidates:
        for path in (os.path.join(directory, name), os.path.join(directory, name + ".gz")):
            if os.path.isfile(path):
                return path
    fail(f"no {split} split in {directory} (looked for {', '.join(candidates)}, optionally .gz)")


def read_text_from_dir(directory: str, split: str, names: Dict[str, List[str]]) -> bytes:
    """The bytes of ``split`` from ``directory`` (:func:`find_split`), gunzipped where named .gz."""
    return read_file(find_split(directory, split, names))


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


# -- streaming versions (bounded memory, any corpus size) ------------------------------
CHUNK = 1 << 20


def copy_split_from_dir(directory: str, split: str, names: Dict[str, List[str]], dest: str):
    """Stream ``split`` from ``directory`` (:func:`find_split`) into ``dest``, gunzipped where named .gz."""
    path = find_split(directory, split, names)
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as src, open(dest, "wb") as out:
            shutil.copyfileobj(src, out, CHUNK)
    except (OSError, EOFError, zlib.error) as e:
        if path.endswith(".gz"):
            fail(f"{path} is named .gz but is not complete gzip data ({e}); rename it if it is plain text")
        fail(f"cannot read {path}: {getattr(e, 'strerror', None) or e}")


def download_to(url: str, dest: str):
    print(f"downloading {url}", file=sys.stderr)
    with urllib.request.urlopen(url, timeout=120) as response, open(dest, "wb") as out:
        shutil.copyfileobj(response, out, CHUNK)


def extract_member(archive: str, member_suffix: str, dest: str):
    """Stream the member of a .zip or .tar.gz file whose path ends with ``member_suffix`` to ``dest``."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            for name in z.namelist():
                if name.endswith(member_suffix):
                    with z.open(name) as src, open(dest, "wb") as out:
                        shutil.copyfileobj(src, out, CHUNK)
                    return
    else:
        with tarfile.open(archive, mode="r:*") as t:
            for m in t:
                if m.name.endswith(member_suffix):
                    with t.extractfile(m) as src, open(dest, "wb") as out:
                        shutil.copyfileobj(src, out, CHUNK)
                    return
    fail(f"archive has no member ending in {member_suffix}")


def scan_text(path: str):
    """One pass over a text file: (sha256, tokens as :func:`count_tokens` counts them,
    whether any non-blank byte occurs, the UTF-8 error or None)."""
    import codecs

    digest, decoder = hashlib.sha256(), codecs.getincrementaldecoder("utf-8")()
    tokens, nonblank, error = 0, False, None
    with open(path, "rb") as f:
        for line in f:  # binary lines end at b"\n", as the text's own split("\n")
            digest.update(line)
            if error is None:
                try:
                    decoder.decode(line)
                except UnicodeDecodeError as e:
                    error = e
            words = line.decode("utf-8", errors="replace").split()
            tokens += len(words) + 1
            nonblank = nonblank or bool(words)
    if error is None:
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError as e:
            error = e
    return digest.hexdigest(), tokens, nonblank, error


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

    # Every split is streamed to a file and scanned in one pass, so the memory used does not
    # grow with the corpus (WikiText-103: 540 MB of text; issue #16).
    counts = {}
    vocab = ["--nwordssrc", str(args.vocab_size + 4)] if args.vocab_size else None
    with _output.Outputs(_output.script_name(), args.force, [args.source]) as outputs, \
            tempfile.TemporaryDirectory(prefix=f"{corpus}-raw-") as scratch:
        raw_dir = outputs.folder(args.raw, "--raw") if args.raw else scratch
        archive = None
        for split in SPLITS:
            dest = os.path.join(raw_dir, f"{split}.txt")
            if args.source:
                copy_split_from_dir(args.source, split, names, dest)
            elif split in urls:
                download_to(urls[split], dest)
            else:
                if archive is None:
                    archive = os.path.join(scratch, "archive")
                    download_to(urls["archive"], archive)
                extract_member(archive, archive_members[split], dest)
            digest, counts[split], nonblank, error = scan_text(dest)
            if not nonblank:
                fail(f"the {split} split is empty")
            if error:
                fail(f"the {split} split is not UTF-8 text ({error})")
            if not args.no_verify and split in sha256s and digest != sha256s[split]:
                message = f"{split}: sha256 differs from the standard {corpus} file, so perplexities are not comparable"
                if args.source:
                    print(f"warning: {message}", file=sys.stderr)
                else:
                    fail(message)
        bin_dir = outputs.folder(args.out, "--out")
        binarize(raw_dir, bin_dir, args.workers, vocab)
        outputs.name_final_paths(os.path.join(bin_dir, "preprocess.log"))
        outputs.commit()

    with open(os.path.join(args.out, "dict.txt"), encoding="utf-8") as f:
        nwords = sum(1 for _ in f)
    print(f"{corpus}: dictionary {nwords + 4:,} symbols (4 fairseq specials, padded to a multiple of 8)")
    for split in SPLITS:
        print(f"{corpus} {split}: {counts[split]:,} tokens incl. one </s> per line "
              f"(= targets of a batch-1 evaluation)")
