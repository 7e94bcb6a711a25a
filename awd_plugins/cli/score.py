"""Score raw text with a trained model: log-probability, token count and perplexity per line.

    awd-score --path ckpt.pt --data data-bin/mine lines.txt            # or lines on standard input
    awd-score --path ckpt.pt --data data-bin/mine --state carry --pointer-window 500 < document.txt
    awd-score ... --format json --per-token --output scores.jsonl

Each input line (raw UTF-8) is tokenized the way the data-bin's corpus was (the
tokenizer recorded in ``DATA/tokenizer.json`` by ``preprocess/prepare_text.py``, see
``awd_plugins.cli.detokenize``; data-bins without one are read as space-separated
words, or bytes when the dictionary is bytes), mapped to the dictionary (unknown
words → ``<unk>``) and ended with ``</s>``, the corpus' line end, which is scored as
a token of the line, as ``fairseq-eval-lm`` scores it.

* ``--state reset`` (default): every line from a fresh state after a ``</s>``; lines
  are scored ``--batch-size`` at a time, right-padded (a recurrent model never looks
  at later positions, and padded targets are left out), so the result does not
  depend on the batch size.
* ``--state carry``: the lines are one stream ``</s> line₁ </s> line₂ </s> …``,
  scored in windows of ``--bptt`` tokens with the state carried, exactly as
  ``fairseq-eval-lm`` scores a split (over a split's own lines the sum equals its
  total); the cache pointer (``--pointer-window``) and dynamic evaluation
  (``--dynamic-eval``) work here, as in ``fairseq-eval-lm``.

Output, one record per input line in input order: ``--format tsv`` (a header, then
``logprob``, ``logprob_base2``, ``tokens``, ``ppl``; with ``--per-token`` also the
token symbols and their log-probs, space-separated) or ``--format json`` (one object
per line). Log-probabilities are natural logs unless named ``base2``.
"""

import argparse
import json
import logging
import math
import os
import sys
import time
from dataclasses import fields
from typing import Iterable, Iterator, List, Optional

import torch

logger = logging.getLogger("awd_plugins.cli.score")

# task options a user may give here too (same names, defaults and help as fairseq-eval-lm's)
POINTER_OPTIONS = ["pointer_window", "pointer_theta", "pointer_lambda"]
DYNAMIC_OPTIONS = ["dynamic_eval", "dynamic_eval_lr", "dynamic_eval_decay", "dynamic_eval_bptt",
                   "dynamic_eval_epsilon", "dynamic_eval_stats_batches", "dynamic_eval_stats_bsz"]


def add_task_options(parser: argparse.ArgumentParser, names: List[str], title: str):
    """Add the ``awd_language_modeling`` options ``names`` to ``parser`` with the task's defaults and help."""
    from awd_plugins.tasks.awd_language_modeling import AwdLanguageModelingConfig

    group = parser.add_argument_group(title)
    by_name = {f.name: f for f in fields(AwdLanguageModelingConfig)}
    for name in names:
        f = by_name[name]
        kwargs = {"default": f.default, "help": f.metadata.get("help")}
        if name == "dynamic_eval":
            kwargs["choices"] = ["sgd", "rms"]
        elif f.default is not None:
            kwargs["type"] = type(f.default)
        else:
            kwargs["type"] = int
        group.add_argument("--" + name.replace("_", "-"), **kwargs)


def load_model(path: str, data: str, cpu: bool = False, overrides: Optional[dict] = None):
    """(model in eval mode, task) from a checkpoint and the data-bin it was trained on."""
    import awd_plugins  # noqa: F401  (registers the task and models)
    from fairseq import checkpoint_utils

    from awd_plugins.errors import AwdUserError, user_error_in_chain

    if not os.path.isfile(path):
        raise AwdUserError(f"checkpoint not found: {path}")
    if not os.path.isdir(data):
        raise AwdUserError(f"data directory not found: {data}")
    try:
        models, _, task = checkpoint_utils.load_model_ensemble_and_task(
            [path], arg_overrides={"data": data, **(overrides or {})}
        )
    except Exception as e:  # an untrusted file: one line, not a traceback
        if user_error_in_chain(e) is not None:
            raise
        raise AwdUserError(f"cannot load checkpoint {path}: {type(e).__name__}: {e}") from None
    model = models[0].eval()
    if not hasattr(model, "decoder") or not hasattr(model.decoder, "init_state"):
        raise AwdUserError(f"{path} does not hold an awd_plugins recurrent model")
    if torch.cuda.is_available() and not cpu:
        model.cuda()
    return model, task


def positional_scores(model, batches: Iterable[dict], dictionary) -> Iterator[torch.Tensor]:
    """log p(target) (B×T, after the pointer when set) of each window, as fairseq-eval-lm computes it."""
    from fairseq import utils
    from fairseq.sequence_scorer import SequenceScorer

    scorer = SequenceScorer(dictionary)
    device = next(model.parameters()).device
    it = iter(batches)
    try:
        for sample in it:
            on_device = utils.move_to_cuda(sample, device=device) if device.type == "cuda" else sample
            hypos = scorer.generate([model], on_device)
            # evaluation windows hold no padding: each row keeps all T positions
            yield torch.stack([h[0]["positional_scores"].float().cpu() for h in hypos])
    finally:
        if hasattr(it, "close"):
            it.close()  # a dynamic evaluation's iterator restores the decoder


def encode_lines(lines: List[str], data: str, dictionary, tokenizer: str = "auto") -> List[torch.Tensor]:
    """Raw lines → id tensors (without the final ``</s>``), tokenized as the data-bin's corpus."""
    from awd_plugins.cli.detokenize import Detokenizer, DetokenizerError, load_detokenizer
    from awd_plugins.errors import AwdUserError

    try:
        tok = load_detokenizer(data) if tokenizer == "auto" else Detokenizer(tokenizer)
    except (DetokenizerError, ImportError) as e:
        raise AwdUserError(str(e))
    return [dictionary.encode_line(tok.encode(line), add_if_not_exist=False, append_eos=False).long()
            for line in lines]


@torch.no_grad()
def score_reset(model, lines: List[torch.Tensor], bsz: int, eos: int, pad: int) -> List[torch.Tensor]:
    """log p of each line's tokens and its ``</s>``, every line from a fresh state after ``</s>``."""
    decoder = model.decoder
    device = next(model.parameters()).device
    out: List[torch.Tensor] = [None] * len(lines)
    # longest lines first: batches of similar lengths waste less on padding
    order = sorted(range(len(lines)), key=lambda i: -lines[i].numel())
    for b0 in range(0, len(order), bsz):
        idx = order[b0 : b0 + bsz]
        width = max(lines[i].numel() for i in idx) + 1
        src = torch.full((len(idx), width), pad, dtype=torch.long)
        tgt = torch.full((len(idx), width), pad, dtype=torch.long)
        for row, i in enumerate(idx):
            n = lines[i].numel()
            src[row, 0], src[row, 1 : n + 1] = eos, lines[i]
            tgt[row, :n], tgt[row, n] = lines[i], eos
        features, _ = decoder(src.to(device), features_only=True)  # fresh state: no carry key
        logp = -decoder.nll(features, tgt.to(device)).view(len(idx), width).float().cpu()
        for row, i in enumerate(idx):
            out[i] = logp[row, : lines[i].numel() + 1]
    return out


def score_carry(model, task, lines: List[torch.Tensor], bptt: int, evaluator=None, seg_len=None,
                log_every: float = 30.0) -> List[torch.Tensor]:
    """log p of each line's tokens and ``</s>`` in the stream ``</s> line₁ </s> line₂ …``, state carried."""
    from awd_plugins.data.stream_dataset import StreamDataset, evaluation_windows

    eos = task.target_dictionary.eos()
    stream = torch.cat([torch.tensor([eos])] + [torch.cat([ids, torch.tensor([eos])]) for ids in lines])
    streams = StreamDataset(stream.view(1, -1), carry_key="awd-score")
    batches = [streams.collater(list(cols)) for cols in evaluation_windows(streams.length, bptt)]
    if evaluator is not None:
        batches = evaluator.wrap(model, batches, seg_len, bptt)
    model.reset_carried_state()
    scores, done, last = [], 0, time.time()
    for window in positional_scores(model, batches, task.target_dictionary):
        scores.append(window[0])
        done += window.numel()
        if time.time() - last > log_every:
            logger.info(f"scored {done:,} / {stream.numel() - 1:,} tokens")
            last = time.time()
    flat = torch.cat(scores) if scores else torch.zeros(0)
    return list(torch.split(flat, [ids.numel() + 1 for ids in lines]))


def read_lines(path: Optional[str]) -> List[str]:
    from awd_plugins.errors import AwdUserError

    try:
        data = sys.stdin.buffer.read() if path in (None, "-") else open(path, "rb").read()
    except OSError as e:
        raise AwdUserError(f"cannot read {path}: {e.strerror}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise AwdUserError(f"{path or 'standard input'} is not UTF-8 text (byte {e.start})")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline ends the last line, it does not start an empty one
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def records(lines: List[torch.Tensor], logps: List[torch.Tensor], dictionary, per_token: bool) -> Iterator[dict]:
    for i, (ids, lp) in enumerate(zip(lines, logps)):
        total = lp.double().sum().item()
        rec = {"line": i + 1, "logprob": total, "logprob_base2": total / math.log(2), "tokens": lp.numel(),
               "ppl": math.exp(-total / lp.numel())}
        if per_token:
            rec["token_symbols"] = [dictionary[t] for t in ids.tolist()] + ["</s>"]
            rec["token_logprobs"] = lp.tolist()
        yield rec


def format_record(rec: dict, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(rec, ensure_ascii=False)
    cols = [f"{rec['logprob']:.6f}", f"{rec['logprob_base2']:.6f}", str(rec["tokens"]), f"{rec['ppl']:.4f}"]
    if "token_logprobs" in rec:
        cols += [" ".join(rec["token_symbols"]), " ".join(f"{x:.4f}" for x in rec["token_logprobs"])]
    return "\t".join(cols)


def tsv_header(per_token: bool) -> str:
    return "\t".join(["logprob", "logprob_base2", "tokens", "ppl"] + (["symbols", "token_logprobs"] if per_token else []))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="awd-score", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Lines are tokenized like the corpus; </s> ends every line and is scored.",
    )
    parser.add_argument("input", nargs="?", help="UTF-8 text file, one item per line (default: standard input)")
    parser.add_argument("--path", required=True, help="checkpoint (e.g. checkpoints/checkpoint_best.pt)")
    parser.add_argument("--data", required=True, help="the data-bin the model was trained on")
    parser.add_argument("--tokenizer", choices=["auto", "words", "bytes"], default="auto",
                        help="auto: as DATA/tokenizer.json records (default); words: the input is already "
                        "space-tokenized; bytes: one token per UTF-8 byte")
    parser.add_argument("--state", choices=["reset", "carry"], default="reset",
                        help="reset: each line from a fresh state (default); carry: one stream, state carried")
    parser.add_argument("--format", choices=["tsv", "json"], default="tsv", help="output format (default tsv)")
    parser.add_argument("--per-token", action="store_true", help="add each token and its log-probability")
    parser.add_argument("--batch-size", type=int, default=32, help="lines per batch with --state reset (default 32)")
    parser.add_argument("--bptt", type=int, default=None,
                        help="window length with --state carry (default: the checkpoint's --bptt)")
    parser.add_argument("--output", "-o", help="write here (atomically) instead of standard output")
    parser.add_argument("--cpu", action="store_true", help="stay on the CPU even when CUDA is available")
    add_task_options(parser, POINTER_OPTIONS, "cache pointer (--state carry)")
    add_task_options(parser, DYNAMIC_OPTIONS, "dynamic evaluation (--state carry)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(format="%(asctime)s | %(levelname)s | %(name)s | %(message)s", level=logging.INFO,
                        stream=sys.stderr)
    from awd_plugins import dynamic_eval
    from awd_plugins.errors import AwdUserError

    if args.batch_size < 1:
        raise AwdUserError(f"--batch-size must be positive, got {args.batch_size}")
    if args.bptt is not None and args.bptt < 1:
        raise AwdUserError(f"--bptt must be positive, got {args.bptt}")
    if args.state == "reset" and (args.pointer_window > 0 or args.dynamic_eval):
        raise AwdUserError("the cache pointer and dynamic evaluation need --state carry")
    if args.output and os.path.exists(args.output):
        raise AwdUserError(f"--output {args.output} already exists: choose a new name (nothing is overwritten)")
    if args.dynamic_eval:
        dynamic_eval.check_options(args.dynamic_eval, args.dynamic_eval_lr, args.dynamic_eval_decay,
                                   args.dynamic_eval_bptt, args.dynamic_eval_epsilon)
    text = read_lines(args.input)
    overrides = {name: getattr(args, name) for name in POINTER_OPTIONS + DYNAMIC_OPTIONS}
    model, task = load_model(args.path, args.data, args.cpu, overrides)
    dictionary = task.target_dictionary
    lines = encode_lines(text, args.data, dictionary, args.tokenizer)
    logger.info(f"scoring {len(lines):,} lines, {sum(x.numel() + 1 for x in lines):,} tokens, state {args.state}")
    if not lines:
        logps = []
    elif args.state == "reset":
        logps = score_reset(model, lines, args.batch_size, dictionary.eos(), dictionary.pad())
    else:
        bptt = args.bptt or task.cfg.bptt
        evaluator = dynamic_eval.from_task(task, model) if args.dynamic_eval else None
        logps = score_carry(model, task, lines, bptt, evaluator, args.dynamic_eval_bptt)
    out_lines = ([tsv_header(args.per_token)] if args.format == "tsv" else [])
    out_lines += [format_record(r, args.format) for r in records(lines, logps, dictionary, args.per_token)]
    if args.output:
        from awd_plugins.cli.atomic import atomic_file

        with atomic_file(args.output) as f:
            f.write("".join(line + "\n" for line in out_lines))
    else:
        sys.stdout.write("".join(line + "\n" for line in out_lines))
    return logps


def cli_main():
    from awd_plugins.cli.atomic import run_command

    run_command("awd-score", main)


if __name__ == "__main__":
    cli_main()
