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
        if isinstance(exc, FloatingPointError):
            done = _updates_done()
            at = f" at update {done + 1}" if done is not None else ""
            return (f"training diverged{at} ({_first_line(exc)}): lower --lr or clip the gradients with --clip-norm; "
                    "fairseq saved the state of that moment as crash.pt in --save-dir")
        if isinstance(exc, RuntimeError) and _is_collective_failure(exc):
            return (f"a collective of the distributed run failed: another rank stopped or cannot be reached "
                    f"({_first_line(exc)}); see that rank's log, then start all ranks again")
        exc = exc.__cause__ or exc.__context__
    return None


def _is_collective_failure(exc) -> bool:
    text = str(exc)
    backend = "gloo" in text or "NCCL" in text or "ProcessGroup" in text or type(exc).__name__ == "DistBackendError"
    return backend and bool(_PEER_LOST.search(text))


class _DropNanDump(logging.Filter):
    def filter(self, record):
        return not _NAN_DUMP.match(str(record.msg))


def install():
    """Keep the NaN detector's one-line findings, drop its tensor dump."""
    nan_logger = logging.getLogger("fairseq.nan_detector")
    if not any(isinstance(f, _DropNanDump) for f in nan_logger.filters):
        nan_logger.addFilter(_DropNanDump())
