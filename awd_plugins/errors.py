"""User-facing errors: one clear line and a non-zero exit instead of a traceback.

fairseq's command lines print a full traceback for any exception. Errors caused by
the user's input (a missing data directory, an option out of range, a checkpoint
that does not fit the dictionary) raise :class:`AwdUserError`; importing the plugin
installs :func:`install_excepthook`, which prints those as
``<program>: error: <message>`` and exits with status 2 (argparse's convention),
leaving every other exception to Python's default hook.
"""

import os
import sys


class AwdUserError(ValueError):
    """Bad input from the user (data, options, checkpoint): reported in one line."""


def check_range(name: str, value, low, high, low_inclusive=True, high_inclusive=False):
    """Raise :class:`AwdUserError` unless ``value`` lies in the interval."""
    ok_low = value >= low if low_inclusive else value > low
    ok_high = value <= high if high_inclusive else value < high
    if not (ok_low and ok_high):
        lb, hb = "[" if low_inclusive else "(", "]" if high_inclusive else ")"
        raise AwdUserError(f"--{name.replace('_', '-')} must be in {lb}{low}, {high}{hb}, got {value}")


def user_error_in_chain(exc):
    """The :class:`AwdUserError` that caused ``exc`` (fairseq re-raises some errors as plain ones)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, AwdUserError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def _hook(exc_type, exc_value, tb, _default=sys.excepthook):
    exc = user_error_in_chain(exc_value)
    if exc is None:
        from awd_plugins.failures import known_failure  # divergence, a lost rank (issue #12 §5)

        exc = known_failure(exc_value)
    if exc is not None:
        prog = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "awd_plugins"
        # the process's own stderr: torch.distributed's hook calls this one with sys.stderr
        # swapped for a buffer that it would print only after this function returned
        stream = sys.__stderr__ or sys.stderr
        print(f"{prog}: error: {exc}", file=stream)
        stream.flush()
        os._exit(2)  # fairseq may hold worker processes; leave at once, like argparse
    _default(exc_type, exc_value, tb)


def install_excepthook():
    if sys.excepthook is not _hook:
        sys.excepthook = _hook
