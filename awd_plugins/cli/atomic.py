"""Atomic outputs for the commands (write beside the target, then ``os.replace``), and their exit.

A command interrupted half-way (or failing on bad input) leaves no partial file and
never touches an existing one; a reader sees the old file or the complete new one.
"""

import os
import sys
import tempfile
from contextlib import contextmanager

from awd_plugins.atomic import atomic_file  # noqa: F401  (here since the commands first used it)


@contextmanager
def atomic_dir(path: str):
    """``with atomic_dir(out) as tmp: ...`` builds a folder in ``tmp`` and moves it to ``path``.

    ``path`` must not exist yet (the caller checks, so that nothing is overwritten).
    """
    parent = os.path.dirname(os.path.abspath(path))
    tmp = tempfile.mkdtemp(prefix="." + os.path.basename(os.path.abspath(path)) + ".", suffix=".tmp", dir=parent)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        raise


def run_command(prog: str, main, argv=None):
    """Run a command's ``main``; bad input (:class:`AwdUserError`) → one ``prog: error: ...`` line, exit 2."""
    from awd_plugins.errors import user_error_in_chain

    try:
        return main(argv)
    except Exception as e:
        err = user_error_in_chain(e)
        if err is None:
            raise
        print(f"{prog}: error: {err}", file=sys.stderr)
        sys.exit(2)
