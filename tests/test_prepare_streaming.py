"""Corpus preparation in bounded memory (issue #16): splits are streamed to files and
scanned in one pass; the scan agrees with the in-memory helpers it replaced."""

import gzip
import hashlib
import os
import sys
import zipfile

import pytest

from conftest import REPO

sys.path.insert(0, os.path.join(REPO, "preprocess"))
import _corpus  # noqa: E402


TEXT = " = Title = \n\n word <unk> , déjà vu .\n  \nlast line without newline"


@pytest.mark.parametrize("trailing_newline", [True, False])
def test_scan_counts_and_hashes_like_the_in_memory_helpers(tmp_path, trailing_newline):
    data = (TEXT + ("\n" if trailing_newline else "")).encode("utf-8")
    path = tmp_path / "t.txt"
    path.write_bytes(data)
    digest, tokens, nonblank, error = _corpus.scan_text(str(path))
    assert digest == hashlib.sha256(data).hexdigest() and tokens == _corpus.count_tokens(data)
    assert nonblank and error is None


def test_scan_flags_blank_and_non_utf8_files(tmp_path):
    (tmp_path / "blank.txt").write_bytes(b" \n\n  \n")
    assert _corpus.scan_text(str(tmp_path / "blank.txt"))[2] is False
    (tmp_path / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    assert _corpus.scan_text(str(tmp_path / "latin1.txt"))[3] is not None


def test_splits_stream_from_gz_files_and_zip_archives(tmp_path):
    data = (TEXT + "\n").encode("utf-8")
    src = tmp_path / "src"
    src.mkdir()
    with gzip.open(src / "wiki.train.tokens.gz", "wb") as f:
        f.write(data)
    _corpus.copy_split_from_dir(str(src), "train", {"train": ["wiki.train.tokens"]}, str(tmp_path / "a.txt"))
    assert (tmp_path / "a.txt").read_bytes() == data
    with zipfile.ZipFile(tmp_path / "c.zip", "w") as z:
        z.writestr("wikitext-103/wiki.valid.tokens", data)
    _corpus.extract_member(str(tmp_path / "c.zip"), "wikitext-103/wiki.valid.tokens", str(tmp_path / "b.txt"))
    assert (tmp_path / "b.txt").read_bytes() == data
