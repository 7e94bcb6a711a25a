"""Tune dynamic evaluation's (learning rate, decay) on validation, then report test.

    python -m awd_plugins.cli.dynamic_eval_search DATA --path CKPT [--rule rms] \\
        [--lrs 3e-5,5e-5,1e-4] [--decays 0.001,0.002,0.005] [--bptt 5] [--stats-batches K]

Every grid point is a full dynamic evaluation of the validation split (batch 1,
state carried, segments of ``--bptt`` tokens, exactly what ``fairseq-eval-lm
--dynamic-eval RULE --dynamic-eval-lr η --dynamic-eval-decay λ`` computes),
starting from the trained weights; the gradient statistics of the ``rms`` rule are
collected once. ``--max-valid-tokens`` searches on the first N validation tokens
only (the authors' ``--gridfast``). A table of all points with the seconds each
took is printed, then the best pair and the test perplexity with it.

The default grid is the authors' (dynamiceval.py ``--grid``, rms rule), scaled by
``bptt/5`` as theirs is; for ``sgd`` it is a coarse grid of our own.
"""

import argparse
import logging
import math
import time
from typing import List, Optional, Tuple

import torch

from awd_plugins.cli._common import parse_search_args, search_parser
from awd_plugins.cli.pointer_search import floats

logger = logging.getLogger("awd_plugins.cli.dynamic_eval_search")

AUTHORS_LRS = [3e-5, 4e-5, 5e-5, 6e-5, 7e-5, 1e-4]  # dynamiceval.py lrlist (rms, bptt 5)
AUTHORS_DECAYS = [0.001, 0.002, 0.003, 0.005]  # dynamiceval.py lamblist
SGD_LRS = [0.003, 0.01, 0.03, 0.1, 0.3]
SGD_DECAYS = [0.0, 0.001, 0.01]


def evaluate(model, task, split: str, evaluator=None, seg_len: Optional[int] = None, max_tokens: int = 0,
             progress: bool = False) -> Tuple[float, int]:
    """(Σ −log p, number of targets) of ``split`` as ``fairseq-eval-lm`` scores it, batch 1.

    With an ``evaluator`` (:class:`~awd_plugins.dynamic_eval.DynamicEvaluator`) the
    model adapts segment by segment; the caller resets it afterwards.
    """
    from awd_plugins.cli.score import positional_scores

    if split not in task.datasets:
        task.load_dataset(split)
    model.reset_carried_state()
    batches = task.eval_lm_dataloader(task.dataset(split), batch_size=1, num_workers=0)
    if evaluator is not None:
        batches = evaluator.wrap(model, batches, seg_len, task.cfg.bptt)
    total, count, start, last = 0.0, 0, time.time(), time.time()
    scores = positional_scores(model, batches, task.target_dictionary)
    try:
        for window in scores:
            if max_tokens:
                window = window.reshape(-1)[: max_tokens - count]  # exactly the first N targets (batch 1)
            total -= window.double().sum().item()
            count += window.numel()
            if max_tokens and count >= max_tokens:
                break
            if progress and time.time() - last > 30:
                logger.info(f"  {split}: {count:,} tokens, ppl {math.exp(total / count):.2f} ({time.time() - start:.0f}s)")
                last = time.time()
    finally:
        scores.close()  # ends the adapting iterator now (it restores the decoder's run)
    return total, count


def main(argv=None):
    parser = search_parser("awd-dynamic-eval-search", __doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rule", choices=["sgd", "rms"], default="rms", help="update rule (default rms)")
    parser.add_argument("--lrs", type=floats, default=None, help="learning rates η to try (comma-separated)")
    parser.add_argument("--decays", type=floats, default=None, help="decays λ to try (comma-separated)")
    parser.add_argument("--bptt", type=int, default=5, help="segment length: one update per segment (default 5)")
    parser.add_argument("--epsilon", type=float, default=2e-5, help="rms rule: ε added to the gradient RMS")
    parser.add_argument("--stats-batches", type=int, default=0,
                        help="rms rule: training batches for the gradient statistics (0 = whole split)")
    parser.add_argument("--stats-bsz", type=int, default=100, help="rms rule: streams per statistics batch")
    parser.add_argument("--max-valid-tokens", type=int, default=0,
                        help="search on the first N validation tokens only (0 = all)")
    parser.add_argument("--pointer-window", type=int, default=0, help="also mix the cache pointer (0 = off)")
    parser.add_argument("--pointer-theta", type=float, default=1.0)
    parser.add_argument("--pointer-lambda", type=float, default=0.1)
    args = parse_search_args(parser, argv)

    import awd_plugins  # noqa: F401  (registers the task and models)
    from awd_plugins.dynamic_eval import DynamicEvaluator, check_options
    from awd_plugins.errors import AwdUserError
    from awd_plugins.cli.score import load_model

    lrs = args.lrs or ([x * args.bptt / 5.0 for x in AUTHORS_LRS] if args.rule == "rms" else SGD_LRS)
    decays = args.decays or ([x * args.bptt / 5.0 for x in AUTHORS_DECAYS] if args.rule == "rms" else SGD_DECAYS)
    for lr in lrs:
        for decay in decays:
            check_options(args.rule, lr, decay, args.bptt, args.epsilon)
    model, task = load_model(args.path, args.data, cpu=args.cpu)
    if args.pointer_window > 0:
        model.set_pointer(args.pointer_window, args.pointer_theta, args.pointer_lambda)
    evaluator = DynamicEvaluator(model, args.rule, lrs[0], decays[0], args.epsilon)
    if args.rule == "rms":
        task.load_dataset(task.cfg.train_subset)
        t0 = time.time()
        evaluator.collect_statistics(model.decoder, task.dataset(task.cfg.train_subset).stream, args.stats_bsz,
                                     args.bptt, args.stats_batches)
        print(f"gradient statistics: {time.time() - t0:.1f}s")
    base, n = evaluate(model, task, args.valid_subset, max_tokens=args.max_valid_tokens)
    if n == 0:
        raise AwdUserError(f"split {args.valid_subset!r} has no tokens to score")
    print(f"\n{args.valid_subset} without dynamic evaluation: ppl {math.exp(base / n):.2f} ({n:,} tokens)")
    print(f"{'lr':>10} {'decay':>10} {'ppl':>10} {'seconds':>9}")
    rows: List[Tuple[float, float, float]] = []
    for lr in lrs:
        for decay in decays:
            evaluator.lr, evaluator.decay = lr, decay
            t0 = time.time()
            total, count = evaluate(model, task, args.valid_subset, evaluator, args.bptt, args.max_valid_tokens)
            evaluator.reset()
            rows.append((lr, decay, total / count))
            print(f"{lr:>10.3g} {decay:>10.3g} {math.exp(total / count):>10.2f} {time.time() - t0:>9.1f}", flush=True)
    lr, decay, loss = min(rows, key=lambda r: r[2])
    print(f"\nbest on {args.valid_subset}: --dynamic-eval {args.rule} --dynamic-eval-lr {lr:g} "
          f"--dynamic-eval-decay {decay:g} --dynamic-eval-bptt {args.bptt}  (ppl {math.exp(loss):.2f}, "
          f"without {math.exp(base / n):.2f})")
    if args.test_subset:
        plain, m = evaluate(model, task, args.test_subset)
        evaluator.lr, evaluator.decay = lr, decay
        total, count = evaluate(model, task, args.test_subset, evaluator, args.bptt, progress=True)
        evaluator.reset()
        print(f"{args.test_subset} with it: ppl {math.exp(total / count):.2f} (without {math.exp(plain / m):.2f})")
    return lr, decay, loss


def cli_main():
    from awd_plugins.cli.atomic import run_command

    run_command("awd-dynamic-eval-search", main)


if __name__ == "__main__":
    cli_main()
