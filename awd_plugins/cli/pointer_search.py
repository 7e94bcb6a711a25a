"""Tune the continuous cache pointer on validation without re-running the network.

    python -m awd_plugins.cli.pointer_search DATA --path CKPT [--bptt 5000] \\
        [--windows 100,500,2000] [--thetas 0.3,0.662,1.0] [--lambdas 0.05,0.1,0.15]

The model runs once over the validation split (batch 1, state carried, windows of
``--bptt`` as ``fairseq-eval-lm`` does) and once over the test split; only each
position's last-layer output and the model's probability of the target are kept
(O(N·H) memory). Every (window, θ) pair then replays the cache over the stored
states (REFERENCE §5.2's exact rule, so results equal ``fairseq-eval-lm
--pointer-window W --pointer-theta θ --pointer-lambda λ`` with the same ``--bptt``),
and every λ costs one more vector operation. A table of all grid points and the
best triple are printed, then the test perplexity with that triple.
"""

import argparse
import itertools
import logging
import math
from typing import List

import torch

from awd_plugins.cli._common import parse_search_args, search_parser

logger = logging.getLogger("awd_plugins.cli.pointer_search")


def floats(text: str) -> List[float]:
    return [float(x) for x in text.split(",") if x]


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def ints(text: str) -> List[int]:
    return [int(x) for x in text.split(",") if x]


@torch.no_grad()
def collect_states(model, task, split: str):
    """One pass over ``split``: last-layer outputs, targets and log p_vocab(target), per window."""
    task.load_dataset(split)
    hidden, targets, log_pv = [], [], []
    for sample in task.eval_lm_dataloader(task.dataset(split), batch_size=1, num_workers=0):
        sample = _to_device(sample, next(model.parameters()).device)
        net_output = model(**sample["net_input"])
        lprobs = model.get_normalized_probs(net_output, log_probs=True)  # no sample: no pointer
        hidden.append(net_output[1]["raw_out"].float())
        targets.append(sample["target"])
        log_pv.append(lprobs.gather(2, sample["target"].unsqueeze(2)).squeeze(2))
    return hidden, targets, torch.cat(log_pv, dim=1)


def _to_device(sample, device):
    from fairseq import utils

    return utils.move_to_cuda(sample, device=device) if device.type == "cuda" else sample


def pointer_losses(states, window: int, theta: float, lambdas: List[float]) -> List[float]:
    """Mean −log p(target) (nats) for each λ with the cache (window, θ) over stored ``states``."""
    from awd_plugins.modules.cache_pointer import ContinuousCachePointer, mix

    hidden, targets, log_pv = states
    pointer = ContinuousCachePointer(window, theta, 0.5)
    p_ptr, used = [], []
    for h, y in zip(hidden, targets):
        p, use = pointer.target_probability(h, y)
        p_ptr.append(p)
        used.append(use.expand_as(y))
    p_ptr, used = torch.cat(p_ptr, dim=1), torch.cat(used, dim=1)
    return [-torch.where(used, mix(log_pv, p_ptr, lam), log_pv).double().mean().item() for lam in lambdas]


def main(argv=None):
    parser = search_parser("awd-pointer-search", __doc__.split("\n\n")[0])
    parser.add_argument("--bptt", type=positive_int, default=5000, help="evaluation window, as fairseq-eval-lm --bptt")
    parser.add_argument("--windows", type=ints, default=[100, 500, 1000, 2000, 3785], help="cache sizes to try")
    parser.add_argument("--thetas", type=floats, default=[0.3, 0.662, 1.0, 1.5], help="inverse temperatures θ")
    parser.add_argument("--lambdas", type=floats, default=[0.05, 0.1, 0.1279, 0.15, 0.2], help="mixing weights λ")
    args = parse_search_args(parser, argv)

    import awd_plugins  # noqa: F401  (registers the task and models)
    from fairseq import checkpoint_utils

    from awd_plugins.errors import AwdUserError

    if any(w <= 0 for w in args.windows) or any(not 0 <= lam <= 1 for lam in args.lambdas):
        raise AwdUserError("windows must be positive and lambdas in [0, 1]")
    models, _, task = checkpoint_utils.load_model_ensemble_and_task([args.path], arg_overrides={"data": args.data})
    model = models[0].eval()
    if torch.cuda.is_available() and not args.cpu:
        model.cuda()
    task.cfg.bptt = args.bptt
    if not hasattr(model, "set_pointer"):
        raise AwdUserError(f"{type(model).__name__} does not expose its last-layer output to a pointer")

    logger.info(f"running the model once over {args.valid_subset} (batch 1, windows of {args.bptt})")
    valid = collect_states(model, task, args.valid_subset)
    base = -valid[2].double().mean().item()
    rows = []
    for window, theta in itertools.product(args.windows, args.thetas):
        for lam, loss in zip(args.lambdas, pointer_losses(valid, window, theta, args.lambdas)):
            rows.append((window, theta, lam, loss))
    rows.sort(key=lambda r: r[3])
    print(f"\n{args.valid_subset} without pointer: ppl {math.exp(base):.2f}")
    print(f"{'window':>8} {'theta':>8} {'lambda':>8} {'ppl':>10}")
    for window, theta, lam, loss in sorted(rows, key=lambda r: (r[0], r[1], r[2])):
        print(f"{window:>8} {theta:>8.4g} {lam:>8.4g} {math.exp(loss):>10.2f}")
    window, theta, lam, loss = rows[0]
    print(f"\nbest on {args.valid_subset}: --pointer-window {window} --pointer-theta {theta} "
          f"--pointer-lambda {lam}  (ppl {math.exp(loss):.2f}, without pointer {math.exp(base):.2f})")
    if args.test_subset:
        test = collect_states(model, task, args.test_subset)
        test_loss = pointer_losses(test, window, theta, [lam])[0]
        print(f"{args.test_subset} with it: ppl {math.exp(test_loss):.2f} "
              f"(without pointer {math.exp(-test[2].double().mean().item()):.2f})")
    return rows[0]


def cli_main():
    main()


if __name__ == "__main__":
    cli_main()
