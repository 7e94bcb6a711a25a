"""awd_plugins/atomic.py: outputs appear whole or not at all, and never replace a file on failure."""

import os

import pytest

from awd_plugins.atomic import atomic_file, atomic_path


def test_a_failing_writer_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "model.pt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(str(target)) as tmp:
            with open(tmp, "w") as f:
                f.write("half")
            raise RuntimeError("the exporter failed")
    with pytest.raises(KeyboardInterrupt):
        with atomic_file(str(target)) as f:
            f.write("half")
            raise KeyboardInterrupt
    assert target.read_text() == "old"
    assert sorted(os.listdir(tmp_path)) == ["model.pt"]


def test_a_completed_write_replaces_the_file_with_open_s_permissions(tmp_path):
    target = tmp_path / "model.json"
    with atomic_path(str(target)) as tmp:
        assert os.path.dirname(tmp) == str(tmp_path) and not os.path.exists(target)  # beside it, not yet there
        with open(tmp, "w") as f:
            f.write("{}")
    with atomic_file(str(tmp_path / "b.txt")) as f:
        f.write("text")
    mask = os.umask(0)
    os.umask(mask)
    assert target.read_text() == "{}" and (tmp_path / "b.txt").read_text() == "text"
    assert os.stat(target).st_mode & 0o777 == 0o666 & ~mask
    assert sorted(os.listdir(tmp_path)) == ["b.txt", "model.json"]
