"""Atomic single-file writes: write beside the target, then ``os.replace``.

A writer interrupted half-way (or failing) leaves no partial file and never touches
an existing one; a reader sees the old file or the complete new one. Used by the
commands (also importable as ``awd_plugins.cli.atomic.atomic_file``) and by the
checkpoint copy of :mod:`awd_plugins.checkpoints`.
"""

import os
import tempfile
from contextlib import contextmanager


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str):
    """``with atomic_path(path) as tmp: save(tmp)``, for writers that take a file name
    (``torch.jit.save``, ``torch.onnx.export``): ``path`` appears only if the block completes."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 → what open() would have given
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


@contextmanager
def atomic_file(path: str, mode: str = "w", encoding: str = "utf-8"):
    """``with atomic_file(path) as f: ...`` writes ``path`` only if the block completes."""
    with atomic_path(path) as tmp:
        with open(tmp, mode, **({} if "b" in mode else {"encoding": encoding})) as f:
            yield f
