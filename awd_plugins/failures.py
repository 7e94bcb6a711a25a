"""Run-time failures that are not bugs, reported in one ``error:`` line (issue #12 §5).

:func:`known_failure` names two situations a user meets in a normal run and can act
on; the plugin's exception hook (:mod:`awd_plugins.errors`) prints its message
instead of a traceback and exits with status 2:

* **Training diverged**: fairseq's trainer raises ``FloatingPointError`` when the
  gradient norm is NaN/Inf (fp32) or the fp16 loss scale hit its minimum. fairseq has
  then saved ``crash.pt`` in ``--save-dir`` and re-run the step under its
  ``NanDetector``, which logs where the first NaN/Inf appeared; :func:`install`
  keeps those lines but drops the detector's dump of every parameter norm and every
  NaN gradient tensor (thousands of lines of ``nan``).
* **Another rank of a distributed run is gone**: gloo/NCCL report a closed or reset
  connection, or a collective that timed out (``--distributed-timeout``).

When fairseq spawns one process per GPU, a rank's exception reaches the parent process as
the text of its traceback; its last line is read the same way (and an ``AwdUserError``
raised in a rank becomes its one line too).
"""

import logging
import re

# fairseq.nan_detector's dump after the re-run: "dumping norms...", "norms: {...}", "gradients: {...}"
_NAN_DUMP = re.compile(r"^(Detected nan/inf grad norm, dumping norms|norms: |gradients: )")
_PEER_LOST = re.compile(
    r"Connection (reset|closed) by peer|Broken pipe|remote process exited|Socket Timeout|"
    r"Timed out waiting|timed out|Timeout|ProcessGroup\w* is aborted|NCCL communicator was aborted",
    re.IGNORECASE,
)


def _updates_done():
    """Updates fairseq's trainer completed (its ``num_updates`` meter), or None outside training."""
    try:
        from fairseq.logging import metrics

        meter = metrics.get_meter("default", "num_updates")
        return int(meter.val) if meter is not None else None
    except Exception:  # noqa: BLE001 (only for a nicer message)
        return None


def _first_line(exc) -> str:
    text = " ".join(str(exc).split())
    text = re.sub(r"^\[[^\]]*\.(cc|cpp):\d+\] ", "", text)  # the C++ source location
    text = text.split(" This is typically caused by")[0]
    return text[:300]


def known_failure(exc):
    """The one-line message for ``exc`` (or an exception in its chain), or None when it is not a known failure."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if type(exc).__name__ == "ProcessRaisedException":  # a rank started by torch.multiprocessing.spawn
            return _spawned_rank_failure(exc)
        if isinstance(exc, FloatingPointError):
            return _diverged(exc)
        if isinstance(exc, RuntimeError) and _is_collective_failure(type(exc).__name__, str(exc)):
            return _rank_lost(exc)
        exc = exc.__cause__ or exc.__context__
    return None


def _diverged(exc) -> str:
    done = _updates_done()
    at = f" at update {done + 1}" if done is not None else ""
    return (f"training diverged{at} ({_first_line(exc)}): lower --lr or clip the gradients with --clip-norm; "
            "fairseq saved the state of that moment as crash.pt in --save-dir")


def _rank_lost(exc) -> str:
    return (f"a collective of the distributed run failed: another rank stopped or cannot be reached "
            f"({_first_line(exc)}); see that rank's log, then start all ranks again")


def _spawned_rank_failure(exc):
    """fairseq spawns one process per GPU; a rank's exception reaches the parent as the text of its traceback,
    whose last line is ``Type: message``."""
    lines = [line for line in str(exc).splitlines() if line.strip()]
    match = re.match(r"^([\w.]+): (.*)$", lines[-1]) if lines else None
    if not match:
        return None
    name, message = match.group(1).rsplit(".", 1)[-1], match.group(2)
    rank = getattr(exc, "error_index", "?")
    if name == "AwdUserError":
        return f"rank {rank}: {message}"
    if name == "FloatingPointError":
        return f"rank {rank}: {_diverged(message)}"
    if _is_collective_failure(name, message):
        return f"rank {rank}: {_rank_lost(message)}"
    return None


def _is_collective_failure(type_name: str, text: str) -> bool:
    if type_name not in ("RuntimeError", "DistBackendError", "DistNetworkError", "DistError"):
        return False
    backend = "gloo" in text or "NCCL" in text or "ProcessGroup" in text or type_name != "RuntimeError"
    return backend and bool(_PEER_LOST.search(text))


class _DropNanDump(logging.Filter):
    def filter(self, record):
        return not _NAN_DUMP.match(str(record.msg))


def install():
    """Keep the NaN detector's one-line findings, drop its tensor dump."""
    nan_logger = logging.getLogger("fairseq.nan_detector")
    if not any(isinstance(f, _DropNanDump) for f in nan_logger.filters):
        nan_logger.addFilter(_DropNanDump())
