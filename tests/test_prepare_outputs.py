"""The preparation scripts never delete or rewrite what they did not create (issue #12 §1).

Every case runs on a scratch copy under tmp_path and asserts that the user's files are
byte-identical afterwards (the whole scratch tree is snapshotted: names and contents).
Refusals happen before any reading or tokenizing, so each case takes about a second.
"""

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO

PREPROCESS = os.path.join(REPO, "preprocess")
MARKER = ".awd-prepared.json"
LINE = "the cat sat on the mat .\n"


def script(name, *args, cwd=None):
    return subprocess.run([sys.executable, os.path.join(PREPROCESS, name), *map(str, args)], cwd=cwd,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env=dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1"))


def snapshot(root):
    """{relative path: bytes} of every file below ``root`` (folders as None), to compare before and after."""
    found = {}
    for folder, dirs, files in os.walk(root):
        for d in dirs:
            found[os.path.relpath(os.path.join(folder, d), root)] = None
        for f in files:
            path = os.path.join(folder, f)
            with open(path, "rb") as fh:
                found[os.path.relpath(path, root)] = fh.read()
    return found


def one_error_line(proc, *words):
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and ": error: " in lines[0], proc.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def project(tmp_path):
    """A user's project folder: a corpus folder, a single-file corpus, their own notes and a checkpoint."""
    root = tmp_path / "project"
    (root / "corpus").mkdir(parents=True)
    for split in ("train", "valid", "test"):
        (root / "corpus" / f"{split}.txt").write_text(LINE * 3, encoding="utf-8")
    (root / "book.txt").write_text(LINE * 40, encoding="utf-8")
    (root / "notes.md").write_text("my notes\n", encoding="utf-8")
    (root / "checkpoints").mkdir()
    (root / "checkpoints" / "checkpoint_best.pt").write_bytes(b"\x80weights")
    return root


TEXT = ["prepare_text.py", "--tokenizer", "moses"]


@pytest.mark.parametrize("case, args, words", [
    ("out is the input folder", TEXT + ["corpus", "--out", "corpus", "--force"], ["--out corpus", "is the input"]),
    ("out is the current folder", TEXT + ["corpus", "--out", ".", "--force"], ["is the current folder"]),
    ("out contains the current folder", TEXT + ["corpus", "--out", "..", "--force"], ["contains the current folder"]),
    ("raw is the input folder", TEXT + ["corpus", "--out", "bin", "--raw", "corpus"], ["--raw corpus", "is the input"]),
    ("raw inside the input", TEXT + ["corpus", "--out", "bin", "--raw", "corpus/tok", "--force"], ["lies inside the input"]),
    ("out inside the input", TEXT + ["corpus", "--out", "corpus/bin"], ["lies inside the input"]),
    ("out contains the input file", TEXT + ["data/book.txt", "--out", "data", "--force"], ["contains the input"]),
    ("raw inside out", TEXT + ["corpus", "--out", "bin", "--raw", "bin/raw"], ["two separate folders"]),
    ("out is a file", TEXT + ["corpus", "--out", "notes.md", "--force"], ["is not a folder"]),
    ("ptb from D out D", ["prepare_ptb.py", "--from", "corpus", "--out", "corpus", "--force", "--no-verify"],
     ["is the input"]),
    ("ptb raw is the input", ["prepare_ptb.py", "--from", "corpus", "--out", "bin", "--raw", "corpus", "--no-verify"],
     ["is the input"]),
    ("ptb into a non-empty folder", ["prepare_ptb.py", "--from", "corpus", "--out", "checkpoints", "--no-verify"],
     ["is not empty", "--force"]),
    ("ptb --force on the user's folder", ["prepare_ptb.py", "--from", "corpus", "--out", "checkpoints", "--force",
                                          "--no-verify"], ["not an earlier output", MARKER]),
    ("ptb-char raw is the input", ["prepare_ptb_char.py", "--from", "corpus", "--text-only", "--raw", "corpus",
                                   "--force"], ["is the input"]),
    ("bytes out is the current folder", ["prepare_wikitext2_bytes.py", "--from", "corpus", "--out", ".", "--force"],
     ["is the current folder"]),
])
def test_refused_and_nothing_changed(project, case, args, words):
    if "data/book.txt" in args:
        (project / "data").mkdir()
        (project / "data" / "book.txt").write_text(LINE * 40, encoding="utf-8")
    root = project.parent
    before = snapshot(root)
    proc = script(*args, cwd=project)
    one_error_line(proc, *words)
    assert snapshot(root) == before, case


def test_force_replaces_only_an_earlier_output(project):
    bin_dir, raw = project / "bin", project / "raw"
    first = script(*TEXT, "corpus", "--out", "bin", "--raw", "raw", cwd=project)
    assert first.returncode == 0, first.stderr
    record = json.loads((bin_dir / MARKER).read_text())
    assert record["made_by"] == "prepare_text.py"
    assert sorted(record["files"]) == sorted(n for n in os.listdir(bin_dir) if n != MARKER)
    assert {"dict.txt", "train.bin", "tokenizer.json"} <= set(record["files"])
    assert json.loads((raw / MARKER).read_text())["files"] == ["test.txt", "train.txt", "valid.txt"]
    umask = os.umask(0)
    os.umask(umask)
    assert bin_dir.stat().st_mode & 0o777 == 0o777 & ~umask  # a plain new folder, not mkdtemp's private 0700
    assert not [n for n in os.listdir(project) if n.startswith(".")]  # no temporary folder left
    assert str(bin_dir) in (bin_dir / "preprocess.log").read_text()  # the log names the final folder

    # without --force: refused, even though it is our own output
    again = script(*TEXT, "corpus", "--out", "bin", cwd=project)
    one_error_line(again, "is not empty", "--force")

    # --force over the earlier output (another corpus, other tokenizer): replaced as a whole
    (project / "corpus" / "train.txt").write_text("a b c d\n" * 5, encoding="utf-8")
    forced = script("prepare_text.py", "corpus", "--out", "bin", "--raw", "raw", "--tokenizer", "bytes", "--force",
                    cwd=project)
    assert forced.returncode == 0, forced.stderr
    assert json.loads((bin_dir / "tokenizer.json").read_text())["tokenizer"] == "bytes"
    assert (raw / "train.txt").read_text().startswith("97 32 98")

    # an earlier output holding one file of the user's: --force refuses and changes nothing
    (bin_dir / "checkpoint_best.pt").write_bytes(b"mine")
    before = snapshot(project)
    refused = script(*TEXT, "corpus", "--out", "bin", "--force", cwd=project)
    one_error_line(refused, "holds checkpoint_best.pt", "did not write")
    assert snapshot(project) == before

    # a marker that does not parse is no marker
    (bin_dir / "checkpoint_best.pt").unlink()
    (bin_dir / MARKER).write_text("{not json")
    before = snapshot(project)
    one_error_line(script(*TEXT, "corpus", "--out", "bin", "--force", cwd=project), "not an earlier output")
    assert snapshot(project) == before


def test_prepare_ptb_output_and_empty_folder(project):
    """An existing empty folder is used; --force replaces prepare_ptb.py's own output; --from D --out D never."""
    (project / "bin").mkdir()
    ok = script("prepare_ptb.py", "--from", "corpus", "--out", "bin", "--no-verify", cwd=project)
    assert ok.returncode == 0, ok.stderr
    assert json.loads((project / "bin" / MARKER).read_text())["made_by"] == "prepare_ptb.py"
    forced = script("prepare_ptb.py", "--from", "corpus", "--out", "bin", "--no-verify", "--force", cwd=project)
    assert forced.returncode == 0, forced.stderr
    assert sorted(os.listdir(project)) == ["bin", "book.txt", "checkpoints", "corpus", "notes.md"]


def test_bad_input_leaves_an_earlier_output_intact(project):
    """--force with a corpus that fails its checks: the earlier output is still there, byte for byte."""
    assert script(*TEXT, "corpus", "--out", "bin", cwd=project).returncode == 0
    (project / "corpus" / "valid.txt").write_text("\n \n", encoding="utf-8")
    before = snapshot(project)
    one_error_line(script(*TEXT, "corpus", "--out", "bin", "--force", cwd=project), "valid split", "empty")
    assert snapshot(project) == before


def test_a_failure_while_building_leaves_the_destination_as_it_was(tmp_path, monkeypatch):
    """``Outputs``: an error after the temporary folders were filled removes them (and the parents it made)."""
    monkeypatch.syspath_prepend(PREPROCESS)
    import _output

    dest = tmp_path / "new" / "deeper" / "bin"
    with pytest.raises(RuntimeError):
        with _output.Outputs("prepare_x.py", force=False) as outputs:
            tmp = outputs.folder(str(dest), "--out")
            with open(os.path.join(tmp, "dict.txt"), "w") as f:
                f.write("a 1\n")
            raise RuntimeError("fairseq-preprocess died")
    assert os.listdir(tmp_path) == []

    # replacing an earlier output: the old one stays complete until the new one is in place
    old = tmp_path / "old"
    with _output.Outputs("prepare_x.py", force=False) as outputs:
        tmp = outputs.folder(str(old), "--out")
        with open(os.path.join(tmp, "dict.txt"), "w") as f:
            f.write("old\n")
        outputs.commit()
    before = snapshot(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        with _output.Outputs("prepare_x.py", force=True) as outputs:
            tmp = outputs.folder(str(old), "--out")
            with open(os.path.join(tmp, "dict.txt"), "w") as f:
                f.write("new\n")
            raise KeyboardInterrupt
    assert snapshot(tmp_path) == before


def test_a_text_file_named_gz_is_one_error_line(tmp_path):
    book = tmp_path / "book.txt.gz"
    book.write_text(LINE * 40, encoding="utf-8")
    proc = script(*TEXT, book, "--out", tmp_path / "bin")
    one_error_line(proc, "book.txt.gz is named .gz but is not complete gzip data")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for split in ("train", "valid", "test"):
        (corpus / f"{split}.txt.gz").write_bytes(b"\x1f\x8b\x08truncated")
    one_error_line(script("prepare_ptb.py", "--from", corpus, "--out", tmp_path / "bin2"), "not complete gzip data")
    assert sorted(os.listdir(tmp_path)) == ["book.txt.gz", "corpus"]
