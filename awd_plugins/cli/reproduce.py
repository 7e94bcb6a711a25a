"""Run a published pipeline end to end and compare every stage with the published figure.

    awd-reproduce NAME [--scale {tiny,full}] [--gpus N] [--work DIR] [--data-root DIR]
    awd-reproduce --list

Stages (see :mod:`awd_plugins.cli.pipelines`): prepare the corpus with the package's
preparation script, train with ``fairseq-train``, finetune where the authors did,
then evaluate with ``fairseq-eval-lm`` plainly, with the cache pointer and with
dynamic evaluation where those were published. Every command's output goes to
``DIR/logs/<stage>.log``; the driver shows live progress (one updating line on a
terminal, a line every ``--progress-every`` seconds otherwise) and at the end prints
one table (stage, published figure, ours, difference, wall time, tokens/s), also
written as ``DIR/results.md`` and ``DIR/results.json``.

Resumable: a finished stage leaves ``DIR/stages/<stage>.json``; rerunning the same
command skips those and continues with the first unfinished stage. A stage that
fails stops the run with one line naming the stage and its log. A stage that needs a
task option this installation lacks (dynamic evaluation, ``--dynamic-eval``) is
skipped with the note "not available".

``--scale tiny`` keeps every stage and flag but shrinks the model, the corpus (a
slice of ``--data-root``'s PTB / WikiText-2, else of the bundled
``data/wikitext-2-small``) and the training, so a pipeline runs on 2 CPU cores in a
few minutes; its figures are not comparable with the published ones ("n/a at tiny
scale").
"""

import argparse
import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import zipfile
from typing import Dict, List, Optional

from awd_plugins.cli import pipelines
from awd_plugins.cli.atomic import atomic_file
from awd_plugins.cli.pipelines import Paths, Stage

PROG = "awd-reproduce"
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class StageFailed(Exception):
    pass


# -- small utilities ---------------------------------------------------------------------------------


def slug(stage_name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", stage_name.lower()).strip("-")


def write_atomic(path: str, text: str):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with atomic_file(path) as f:
        f.write(text)


def show(path: str) -> str:
    """A path as a person reads it: relative below the current folder, else absolute."""
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def task_has_option(name: str) -> bool:
    """Whether the task ``awd_language_modeling`` of this installation has the option (e.g. ``dynamic_eval``)."""
    import awd_plugins  # noqa: F401  (registers the task)
    from fairseq.tasks import TASK_DATACLASS_REGISTRY

    dc = TASK_DATACLASS_REGISTRY.get("awd_language_modeling")
    return dc is not None and name in getattr(dc, "__dataclass_fields__", {})


def command(stage: Stage) -> List[str]:
    if stage.kind == "prepare":
        return [sys.executable, os.path.join(REPO, "preprocess", stage.tool), *stage.args]
    exe = os.path.join(os.path.dirname(sys.executable), stage.tool)
    base = [exe] if os.path.exists(exe) else [sys.executable, "-m", "fairseq_cli." + stage.tool.split("-", 1)[1].replace("-", "_")]
    return base + stage.args + ["--user-dir", os.path.join(REPO, "awd_plugins")]


# -- parsing the logs ---------------------------------------------------------------------------------


def parse_train(log: str, metric: str) -> Dict[str, Optional[float]]:
    """Best validation figure (ppl, or bpc = fairseq's base-2 loss) and the mean training words/s."""
    figures = []
    for line in log.splitlines():
        if "valid on 'valid' subset" in line:
            m = re.search(r"\| loss ([\d.]+)" if metric == "bpc" else r"\| ppl ([\d.]+)", line)
            if m:
                figures.append(float(m.group(1)))
    # a finetune starts from the restored model, whose validation (awd_plugins.tasks.finetune_best) counts too
    seeded = re.search(r"finetune: the restored model's valid loss is ([\d.]+)", log)
    if seeded:
        figures.append(float(seeded.group(1)) if metric == "bpc" else 2 ** float(seeded.group(1)))
    wps = [float(x) for x in re.findall(r"\| train \|.*?\| wps ([\d.]+)", log)]
    return {"ours": min(figures) if figures else None, "tokens_per_s": sum(wps) / len(wps) if wps else None}


def parse_eval(log: str, metric: str) -> Dict[str, Optional[float]]:
    m = re.search(r"Loss \(base 2\): ([\d.]+), Perplexity: ([\d.]+)", log)
    speed = re.search(r"Evaluated ([\d,]+) tokens in ([\d.]+)s \(([\d.]+) tokens/s\)", log)
    ours = None
    if m:
        ours = float(m.group(1)) if metric == "bpc" else float(m.group(2))
    return {"ours": ours, "tokens_per_s": float(speed.group(3)) if speed else None}


# -- corpus slices for --scale tiny --------------------------------------------------------------------


def write_tiny_slice(corpus: str, paths: Paths):
    """The first lines (TINY_SLICE tokens) of each split; for byte corpora an enwik8.zip of that text."""
    src = pipelines.tiny_source(corpus, paths)
    out = os.path.join(paths.work, "slice")
    os.makedirs(out, exist_ok=True)
    texts = {}
    for split, n in pipelines.TINY_SLICE.items():
        path = next((os.path.join(src, f"{split}{ext}") for ext in (".txt", ".txt.gz")
                     if os.path.exists(os.path.join(src, f"{split}{ext}"))), None)
        if path is None:
            raise StageFailed(f"{src} has no {split}.txt[.gz] to slice")
        opener = gzip.open if path.endswith(".gz") else open
        lines, count = [], 0
        with opener(path, "rt", encoding="utf-8") as f:
            for line in f:
                if count >= n:
                    break
                lines.append(line)
                count += len(line.split()) + 1
        texts[split] = "".join(lines)
        write_atomic(os.path.join(out, f"{split}.txt"), texts[split])
    if corpus == "enwik8":
        data = "".join(texts[s] for s in ("train", "valid", "test")).encode("utf-8")
        need = sum(pipelines.TINY_BYTES)
        data = (data * (need // max(len(data), 1) + 1))[:need]
        tmp = os.path.join(out, "enwik8.zip.tmp")
        with zipfile.ZipFile(tmp, "w") as z:
            z.writestr("enwik8", data)
        os.replace(tmp, os.path.join(out, "enwik8.zip"))


# -- running one stage --------------------------------------------------------------------------------


class Progress:
    """Live progress of a running command: one rewritten line on a terminal, a line every ``every``
    seconds otherwise, showing the elapsed time and the command's latest progress line (fairseq-train's
    ``epoch 001: 50 / 133 loss=...``); a background thread keeps it ticking while the command is silent."""

    PATTERN = re.compile(r"(\| (train_inner|train|valid) \||epoch \d+:|Evaluated|begin validation|Loading|loaded)")

    def __init__(self, label: str, every: float, stream=None):
        self.label, self.every = label, every
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self.start = self.last_print = time.time()
        self.latest = "starting"
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._tick, daemon=True)
        self._thread.start()

    def line(self, text: str):
        text = text.strip()
        if text and self.PATTERN.search(text):
            self.latest = re.sub(r"^.*?\| INFO \| [\w.]+ \| ", "", text)
            if self.tty:
                self._show()

    def _show(self):
        with self._lock:
            now = time.time()
            msg = f"  {self.label} [{now - self.start:4.0f} s] {self.latest}"
            if self.tty:
                width = shutil.get_terminal_size((120, 20)).columns - 1
                self.stream.write("\r\033[K" + msg[:width])
            else:
                self.stream.write(msg + "\n")
            self.stream.flush()
            self.last_print = now

    def _tick(self):
        while not self._stop.wait(1.0 if self.tty else min(self.every, 5.0)):
            if self.tty or time.time() - self.last_print >= self.every:
                self._show()

    def done(self):
        self._stop.set()
        self._thread.join()
        if self.tty:
            self.stream.write("\r\033[K")
            self.stream.flush()


def run_stage(stage: Stage, cmd: List[str], log_path: str, progress_every: float) -> str:
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = REPO + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    with open(log_path, "w", encoding="utf-8", buffering=1) as log:  # line-buffered: the log can be followed
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO,
                                bufsize=1)
        progress = Progress(stage.name, progress_every)
        try:
            for line in proc.stdout:
                log.write(line)
                progress.line(line)
            rc = proc.wait()
        except KeyboardInterrupt:
            proc.terminate()
            proc.wait()
            raise
        finally:
            progress.done()
    if rc != 0:
        raise StageFailed(f"stage '{stage.name}' failed (exit status {rc}); its log: {log_path}")
    with open(log_path, encoding="utf-8") as f:
        return f.read()


# -- the table ----------------------------------------------------------------------------------------


def fmt(x, digits=2):
    if x is None:
        return "—"
    if isinstance(x, str):
        return x
    return f"{x:,.{digits}f}" if abs(x) >= 100 else f"{x:.{3 if abs(x) < 10 else digits}f}"


def table_rows(results: List[dict], comparable: bool) -> List[List[str]]:
    """Rows of the table; ``comparable`` is False at tiny scale (no published figure applies)."""
    rows = []
    for r in results:
        published = fmt(r["published"]) if r["published"] is not None else "—"
        if not comparable:
            published = "n/a at tiny scale"
        diff = "—"
        if comparable and r.get("ours") is not None and r["published"] is not None:
            diff = f"{r['ours'] - r['published']:+.3f}" if r["metric"] == "bpc" else f"{r['ours'] - r['published']:+.2f}"
        ours = r["note"] if r["status"] == "skipped" else fmt(r.get("ours"))
        metric = r["metric"] if r["kind"] != "prepare" else ""
        rows.append([r["stage"], metric, published, ours, diff, f"{r['wall_s']:.0f} s" if r.get("wall_s") else "—",
                     fmt(r.get("tokens_per_s"), 0) if r.get("tokens_per_s") else "—"])
    return rows


def header(fixed: bool) -> List[str]:
    return ["stage", "metric", "expected" if fixed else "published", "ours", "difference", "wall time", "tokens/s"]


def text_table(head: List[str], rows: List[List[str]]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(head, *rows)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(head), line(["-" * w for w in widths])] + [line(r) for r in rows])


def markdown_table(head: List[str], rows: List[List[str]]) -> str:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


# -- main ---------------------------------------------------------------------------------------------


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog=PROG, description="Run a published pipeline end to end (prepare, train, finetune, evaluate) and print "
        "each stage's published figure next to ours.",
        epilog="Example: awd-reproduce awd-lstm-ptb --scale tiny --work repro/awd-lstm-ptb-tiny")
    parser.add_argument("name", nargs="?", help="pipeline name (see --list)")
    parser.add_argument("--list", action="store_true", help="list the pipelines and their stages, then exit")
    parser.add_argument("--scale", choices=["tiny", "full"], default="full",
                        help="full: the published configuration (GPU-sized); tiny: every stage and flag, a tiny "
                        "model on a corpus slice, minutes on a CPU (default full)")
    parser.add_argument("--gpus", type=int, default=None,
                        help="GPUs for --scale full (default: as published; 0 = CPU). With fewer than published, "
                        "--update-freq keeps the global batch")
    parser.add_argument("--work", default=None, help="working folder for data, checkpoints, logs and results "
                        "(default repro/NAME-SCALE); rerunning with the same folder resumes")
    parser.add_argument("--data-root", default=None,
                        help="local copies of the corpora (ptb/, wikitext-2/, wikitext-103/, enwik8.zip) instead "
                        "of downloading; at tiny scale PTB/WikiText-2 are sliced from it")
    parser.add_argument("--progress-every", type=float, default=15.0,
                        help="seconds between progress lines when the output is not a terminal (default 15)")
    return parser, parser.parse_args(argv)


def main(argv=None) -> int:
    parser, args = parse_args(argv)
    if args.list:
        for name in pipelines.names():
            s = pipelines.summary(name)
            print(f"{name:20s} {s['title']}\n{'':20s} stages: {s['stages']}\n{'':20s} published: {s['source']}")
        return 0
    if not args.name:
        parser.error("give a pipeline NAME (or --list)")
    if args.name not in pipelines.names():
        parser.error(f"unknown pipeline {args.name!r}; choose one of: {', '.join(pipelines.names())}")
    if args.gpus is not None and args.gpus < 0:
        parser.error("--gpus must be ≥ 0")
    if args.data_root and not os.path.isdir(args.data_root):
        parser.error(f"--data-root {args.data_root} is not a folder")
    work = os.path.abspath(args.work or os.path.join("repro", f"{args.name}-{args.scale}"))
    probe = pipelines.build(args.name, Paths(work, None, args.scale, 1))
    gpus = args.gpus if args.gpus is not None else (0 if args.scale == "tiny" else probe.gpus)
    paths = Paths(work, os.path.abspath(args.data_root) if args.data_root else None, args.scale, gpus)
    pipe = pipelines.build(args.name, paths)

    settings = {"name": args.name, "scale": args.scale, "gpus": gpus,
                "data_root": paths.data_root}
    settings_path = os.path.join(work, "settings.json")
    if os.path.exists(settings_path):
        with open(settings_path, encoding="utf-8") as f:
            before = json.load(f)
        if before != settings:
            parser.error(f"{work} holds a run with other settings ({before}); give another --work")
    elif os.path.isdir(work) and os.listdir(work):
        parser.error(f"{work} exists and is not a run of {PROG}; give another --work")
    write_atomic(settings_path, json.dumps(settings, indent=1))

    print(f"{PROG}: {pipe.title} ({args.name}), {'a fixed amount of work' if pipe.fixed else 'scale ' + args.scale}, "
          f"{'CPU' if gpus == 0 else f'{gpus} GPU(s)'}; working folder {work}")
    results = []
    for i, stage in enumerate(pipe.stages, 1):
        record_path = os.path.join(work, "stages", slug(stage.name) + ".json")
        log_path = os.path.join(work, "logs", slug(stage.name) + ".log")
        head = f"[{i}/{len(pipe.stages)}] {stage.name}"
        if os.path.exists(record_path):
            with open(record_path, encoding="utf-8") as f:
                record = json.load(f)
            record["published"] = stage.published  # the figure of this version of the pipeline
            print(f"{head}: done earlier ({fmt(record.get('ours')) if record['status'] == 'done' else record['note']})")
            results.append(record)
            continue
        record = {"stage": stage.name, "kind": stage.kind, "metric": stage.metric, "published": stage.published,
                  "ours": None, "wall_s": None, "tokens_per_s": None, "status": "done", "note": stage.note,
                  "log": log_path}
        if stage.needs_task_option and not task_has_option(stage.needs_task_option):
            record.update(status="skipped",
                          note=f"not available (the task has no --{stage.needs_task_option.replace('_', '-')})")
            print(f"{head}: skipped, {record['note']}")
        else:
            cmd = command(stage)
            print(f"{head}: {' '.join(os.path.basename(c) if j == 0 else c for j, c in enumerate(cmd[:2]))} ... "
                  f"(log: {show(log_path)})", flush=True)
            start = time.time()
            try:
                if stage.kind == "prepare" and args.scale == "tiny" and not pipe.fixed:
                    write_tiny_slice(pipe.corpus, paths)
                log = run_stage(stage, cmd, log_path, args.progress_every)
            except StageFailed as e:
                print(f"{PROG}: error: {e}", file=sys.stderr, flush=True)
                return 1
            record["wall_s"] = time.time() - start
            if stage.kind == "train":
                record.update(parse_train(log, stage.metric))
            elif stage.kind == "eval":
                record.update(parse_eval(log, stage.metric))
                if record["ours"] is None:
                    print(f"{PROG}: error: stage '{stage.name}' printed no loss; its log: {log_path}", file=sys.stderr)
                    return 1
            print(f"    {fmt(record['ours']) + ' ' + stage.metric if record['ours'] is not None else 'done'} "
                  f"in {record['wall_s']:.0f} s", flush=True)
        write_atomic(record_path, json.dumps(record, indent=1))
        results.append(record)

    comparable = args.scale == "full" or pipe.fixed
    rows, head = table_rows(results, comparable), header(pipe.fixed)
    title = f"{pipe.title} — {args.name}" + ("" if pipe.fixed else f", scale {args.scale}")
    if pipe.fixed:
        source = f"Expected: {pipe.source}."
    elif comparable:
        source = f"Published figures: {pipe.source}."
    else:
        source = "Tiny scale: a tiny model on a corpus slice; figures are not comparable with the published ones."
    print(f"\n{title}\n{text_table(head, rows)}\n{source}")
    if pipe.fixed:  # the demo: a fixed amount of work gives the expected figures on any machine
        for r in results:
            if r.get("ours") is not None and r["published"] and \
                    abs(r["ours"] - r["published"]) > pipelines.DEMO_TOLERANCE * r["published"]:
                print(f"note: {r['stage']} is {r['ours']:.2f}, more than {pipelines.DEMO_TOLERANCE:.0%} from the "
                      f"expected {r['published']:.2f} (another torch version or CPU kernel?)")
    write_atomic(os.path.join(work, "results.md"), f"## {title}\n\n{markdown_table(head, rows)}\n\n{source}\n")
    write_atomic(os.path.join(work, "results.json"),
                 json.dumps({"pipeline": args.name, "title": pipe.title, "scale": args.scale, "gpus": gpus,
                             "source": pipe.source, "stages": results}, indent=1))
    print(f"(also {show(os.path.join(work, 'results.md'))} and results.json)")
    return 0


def cli_main():
    sys.exit(main())


if __name__ == "__main__":
    cli_main()
