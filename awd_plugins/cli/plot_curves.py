"""Learning curves from fairseq training logs: perplexity (or bpc) per epoch and per wall-clock time.

    python -m awd_plugins.cli.plot_curves train.log [other.log ...] --out curves.png [--bpc]

Reads the end-of-epoch summaries that ``fairseq-train`` prints with
``--log-format simple`` (also tqdm, which prints the same summaries) or
``--log-format json``, from captured stdout or a ``--log-file`` (FAIRSEQ_NOTES §9):

    ... | INFO | valid | epoch 001 | valid on 'valid' subset | loss 9.56653 | ... | ppl 758.25 | ...
    ... | INFO | train | epoch 001 | loss 9.08 | ... | wall 110
    ... | INFO | valid | {"epoch": 1, "valid_loss": "9.75622", ..., "valid_ppl": "864.8", ...}

fairseq logs ``loss`` in bits (base 2), so ``ppl = 2**loss`` and, on a character
or byte corpus, ``loss`` is bits per character (``--bpc``; REFERENCE §1.1). The
left panel is against epochs, the right one against the wall clock of the
training summary of the same epoch. The NT-ASGD switch (REFERENCE §3.3) is marked
with a vertical line, found from the log line ``NT-ASGD: switching to averaged SGD
after epoch N`` or from the ``asgd_switch_epoch`` metric of later epochs.
A resumed run logging into the same file keeps the last summary of each epoch.
"""

import argparse
import json
import math
import os
import re
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Dict, List, Optional

_PREFIX = re.compile(r"^.*?\| (?:INFO|WARNING) \| (?P<tag>[^|]+?) \| (?P<rest>.*)$")
_SIMPLE = re.compile(r"^epoch (?P<epoch>\d+) \| (?P<fields>.*)$")
_SUBSET = re.compile(r"^valid on '(?P<subset>[^']+)' subset$")
_SWITCH = re.compile(r"NT-ASGD: switching to averaged SGD after epoch (\d+)")


@dataclass
class Run:
    """One log: per subset, per epoch, the summary metrics (floats)."""

    name: str
    subsets: Dict[str, Dict[int, Dict[str, float]]] = field(default_factory=lambda: defaultdict(dict))
    switch_epoch: Optional[int] = None

    def series(self, subset: str, key: str, x: str = "epoch"):
        """(xs, ys) of metric ``key``; x is "epoch" or "wall" (the train summary's wall clock)."""
        xs, ys = [], []
        train = self.subsets.get("train", {})
        for epoch in sorted(self.subsets.get(subset, {})):
            stats = self.subsets[subset][epoch]
            value = metric(stats, key)
            if value is None:
                continue
            if x == "epoch":
                xs.append(epoch)
            else:
                wall = stats.get("wall", train.get(epoch, {}).get("wall"))
                if wall is None:
                    continue
                xs.append(wall)
            ys.append(value)
        return xs, ys

    def wall_at(self, epoch: int) -> Optional[float]:
        return self.subsets.get("train", {}).get(epoch, {}).get("wall")


def metric(stats: Dict[str, float], key: str) -> Optional[float]:
    if key == "ppl":
        if "ppl" in stats:
            return stats["ppl"]
        return 2.0 ** stats["loss"] if "loss" in stats else None
    return stats.get(key)


def _number(text) -> Optional[float]:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _json_summary(payload: dict, tag: Optional[str]):
    """(subset, epoch, stats) of a JSON epoch summary, or None (e.g. a train_inner line)."""
    if "epoch" not in payload or "update" in payload:
        return None
    keys = [k for k in payload if k != "epoch"]
    if tag and all(k.startswith(tag + "_") for k in keys):
        subset = tag
    else:  # a --log-file line has no tag: the subset is the prefix shared by every key
        candidates = [k[: -len("_loss")] for k in keys if k.endswith("_loss")]
        candidates = [c for c in candidates if all(k.startswith(c + "_") for k in keys)]
        if not candidates:
            return None
        subset = min(candidates, key=len)
    stats = {}
    for k in keys:
        value = _number(payload[k])
        if value is not None:
            stats[k[len(subset) + 1:]] = value
    return subset, int(payload["epoch"]), stats


def _simple_summary(rest: str, tag: Optional[str]):
    m = _SIMPLE.match(rest)
    if not m:
        return None
    fields = m.group("fields").split(" | ")
    subset = tag if tag and tag != "train_inner" else "train"
    stats = {}
    for f in fields:
        sub = _SUBSET.match(f)
        if sub:
            subset = sub.group("subset")
            continue
        parts = f.rsplit(" ", 1)
        if len(parts) == 2:
            value = _number(parts[1])
            if value is not None:
                stats[parts[0]] = value
    return subset, int(m.group("epoch")), stats


def parse_log(path: str, name: Optional[str] = None) -> Run:
    run = Run(name or os.path.basename(path))
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            switch = _SWITCH.search(line)
            if switch:
                run.switch_epoch = int(switch.group(1))
                continue
            m = _PREFIX.match(line)
            tag, rest = (m.group("tag").strip(), m.group("rest")) if m else (None, line)
            if tag == "train_inner":
                continue
            summary = None
            if rest.startswith("{"):
                try:
                    payload = json.loads(rest)
                except ValueError:
                    payload = None
                if isinstance(payload, dict):
                    summary = _json_summary(payload, tag)
            else:
                summary = _simple_summary(rest, tag)
            if summary is None:
                continue
            subset, epoch, stats = summary
            if "loss" not in stats and "ppl" not in stats:
                continue
            run.subsets[subset][epoch] = stats
            if run.switch_epoch is None and stats.get("asgd_switch_epoch") is not None:
                run.switch_epoch = int(stats["asgd_switch_epoch"])
    return run


def _wall_unit(max_seconds: float):
    if max_seconds >= 3 * 3600:
        return 3600.0, "hours"
    if max_seconds >= 3 * 60:
        return 60.0, "minutes"
    return 1.0, "seconds"


def plot(runs: List[Run], out: str, bpc: bool = False, title: Optional[str] = None):
    import logging

    # importing the plugin (fairseq) may have set the root logger to DEBUG; matplotlib is chatty there
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    key = "loss" if bpc else "ppl"
    ylabel = "bits per character (base-2 loss)" if bpc else "perplexity"
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    walls = [w for r in runs for e in r.subsets.get("train", {}).values() for w in [e.get("wall")] if w is not None]
    scale, unit = _wall_unit(max(walls) if walls else 0.0)
    styles = {"train": dict(linestyle="--", marker=None), "valid": dict(linestyle="-", marker="o")}
    for i, run in enumerate(runs):
        color = colors[i % len(colors)]
        subsets = ["train"] + sorted(s for s in run.subsets if s != "train")
        for k, subset in enumerate(subsets):
            style = styles.get(subset, dict(linestyle=":", marker="s"))
            if len(runs) == 1:  # one run: a colour per subset reads better than one colour for all
                color = colors[k % len(colors)]
            label = f"{run.name}: {subset}" if len(runs) > 1 else subset
            for ax, x in zip(axes, ("epoch", "wall")):
                xs, ys = run.series(subset, key, x)
                if not xs:
                    continue
                if x == "wall":
                    xs = [v / scale for v in xs]
                ax.plot(xs, ys, color=color, label=label, markersize=3, linewidth=1.5, **style)
        color = colors[i % len(colors)] if len(runs) > 1 else "black"
        if run.switch_epoch is not None:
            # after epoch N's validation: averaged SGD from epoch N+1 on
            label = f"NT-ASGD switch after epoch {run.switch_epoch}"
            if len(runs) > 1:
                label = f"{run.name}: {label}"
            axes[0].axvline(run.switch_epoch, color=color, linestyle=":", linewidth=1.5, label=label)
            wall = run.wall_at(run.switch_epoch)
            if wall is not None:
                axes[1].axvline(wall / scale, color=color, linestyle=":", linewidth=1.5)
    axes[0].set_xlabel("epoch")
    axes[1].set_xlabel(f"wall clock ({unit})")
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    for ax in axes:
        ax.set_ylabel(ylabel)
        if not bpc:
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(plain)
            ax.yaxis.set_minor_formatter(plain)
            ax.tick_params(axis="y", which="both", labelsize=8)
        ax.grid(True, which="both", alpha=0.3)
    if axes[0].lines:
        axes[0].legend(fontsize=8)
    axes[0].xaxis.get_major_locator().set_params(integer=True)
    fig.suptitle(title or ("bits per character" if bpc else "perplexity") + " — " + ", ".join(r.name for r in runs))
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def cli_main(argv=None):
    parser = argparse.ArgumentParser(
        prog="awd-plot",
        description="Plot train/valid perplexity (or bpc) of fairseq-train logs against epochs and wall clock.",
    )
    parser.add_argument("logs", nargs="+", metavar="LOG", help="fairseq-train output (simple or json log format)")
    parser.add_argument("--out", default="curves.png", help="PNG file to write (default curves.png)")
    parser.add_argument("--bpc", action="store_true", help="plot bits per character (the base-2 loss) instead of perplexity")
    parser.add_argument("--labels", help="comma-separated legend names, one per log (default: file names)")
    parser.add_argument("--title", help="figure title")
    args = parser.parse_args(argv)
    labels = args.labels.split(",") if args.labels else [None] * len(args.logs)
    if len(labels) != len(args.logs):
        parser.error(f"--labels names {len(labels)} runs but {len(args.logs)} logs were given")
    runs = []
    for path, label in zip(args.logs, labels):
        if not os.path.isfile(path):
            parser.error(f"log not found: {path}")
        run = parse_log(path, label)
        if not run.subsets:
            parser.error(f"{path}: no end-of-epoch train/valid summaries found (is it fairseq-train output?)")
        runs.append(run)
    plot(runs, args.out, bpc=args.bpc, title=args.title)
    for run in runs:
        epochs = sorted(run.subsets.get("train", {}) or next(iter(run.subsets.values())))
        valid = {s: run.subsets[s] for s in run.subsets if s != "train"}
        best = []
        for s, per_epoch in valid.items():
            losses = [(st["loss"], e) for e, st in per_epoch.items() if "loss" in st]
            if losses:
                loss, e = min(losses)
                best.append(f"best {s} loss {loss:g} (ppl {2 ** loss:.2f}) at epoch {e}")
        switch = f", NT-ASGD after epoch {run.switch_epoch}" if run.switch_epoch is not None else ""
        print(f"{run.name}: {len(epochs)} epochs{switch}; " + "; ".join(best), file=sys.stderr)
    print(args.out)


if __name__ == "__main__":
    cli_main()
