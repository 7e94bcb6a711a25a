"""Export a trained model's inference step to TorchScript or ONNX, to serve it without fairseq.

    awd-export --path checkpoint_best.pt --data data-bin/ptb --format {torchscript,onnx} \\
        --out model.{pt,onnx} [--batch-size 1] [--window 1] [--memory-len N]

The exported model takes ``tokens`` (int64, B×T) followed by the state tensors and
returns ``log_probs`` (B×T×V) followed by the new state, in the same order; start
from zeros of every state input's shape and feed each call's new state to the next
(see :mod:`awd_plugins.inference`). ``model.json`` is written beside it: every input
and output with its name, shape and dtype, the dictionary's symbols and ``eos``.
The export is checked against the PyTorch model (two carried windows, to 1e-4;
for ONNX through onnxruntime) before anything is written.

Attention memories (SHA-RNN with attention, SRU++) are state inputs of a fixed
``memory_len`` rows plus one ``memory_valid`` count (int64, 1×B) of their real rows,
zero at the start (see :mod:`awd_plugins.inference`). ``memory_len`` is the model's
evaluation cap (SHA-RNN ``--memory-len``, SRU++ ``--eval-memory-len``); ``--memory-len N``
here replaces it, and is required for an SRU++ model evaluated with the previous window
as its memory (``--eval-memory-len 0``): N = its evaluation window (``--bptt``).
"""

import argparse
import logging
import os
import sys

logger = logging.getLogger("awd_plugins.cli.export")

FORMATS = {"torchscript": ".pt", "onnx": ".onnx"}


def build_parser():
    p = argparse.ArgumentParser(prog="awd-export", description=__doc__.split("\n\n")[0])
    p.add_argument("--path", required=True, help="checkpoint of an awd-plugins model (fairseq-train's checkpoint_*.pt)")
    p.add_argument("--data", required=True, help="the data-bin the model was trained on (its dict.txt)")
    p.add_argument("--format", choices=sorted(FORMATS), default="torchscript", help="export format")
    p.add_argument("--out", required=True, help="output file (model.pt or model.onnx); model.json goes beside it")
    p.add_argument("--batch-size", type=int, default=1, help="number of streams B of every call (fixed at export)")
    p.add_argument("--window", type=int, default=1, help="tokens T per call (fixed at export; 1 = token by token)")
    p.add_argument("--memory-len", type=int, default=None,
                   help="rows of every attention memory (SHA-RNN, SRU++); default the model's evaluation cap")
    p.add_argument("--force", action="store_true", help="replace existing output files")
    return p


def json_path(out: str) -> str:
    return os.path.splitext(out)[0] + ".json"


def main(argv=None):
    args = build_parser().parse_args(argv)
    from awd_plugins.errors import AwdUserError
    from awd_plugins.modules.fixed_memory import check_memory_len

    if args.batch_size < 1 or args.window < 1:
        raise AwdUserError("--batch-size and --window must be positive")
    check_memory_len(args.memory_len)  # before the checkpoint is loaded
    if not os.path.isfile(args.path):
        raise AwdUserError(f"checkpoint not found: {args.path}")
    out_dir = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(out_dir):
        raise AwdUserError(f"output folder not found: {out_dir}")
    for path in (args.out, json_path(args.out)):
        if os.path.exists(path) and not args.force:
            raise AwdUserError(f"{path} exists: choose another --out or pass --force")

    import torch
    from fairseq import checkpoint_utils

    from awd_plugins import inference
    from awd_plugins.models.recurrent_lm import RecurrentLanguageModel

    try:
        models, model_args, task = checkpoint_utils.load_model_ensemble_and_task([args.path], arg_overrides={"data": args.data})
    except AwdUserError:
        raise
    except Exception as e:  # an unreadable or foreign file: one line, no traceback
        raise AwdUserError(f"cannot load {args.path}: {type(e).__name__}: {e}".splitlines()[0])
    model = models[0]
    if not isinstance(model, RecurrentLanguageModel):
        raise AwdUserError(f"{args.path} holds a {type(model).__name__}, not an awd-plugins recurrent language model")
    model = model.float().cpu().eval()
    vocab = len(task.target_dictionary)
    arch = getattr(getattr(model_args, "model", None), "_name", None) or type(model).__name__

    step = inference.InferenceStep(model, args.batch_size, args.memory_len)
    inference.check_fixed_state_shapes(step, args.window)
    memory = "" if step.memory_len is None else f", attention memories of {step.memory_len} rows"
    logger.info(f"{arch}: {len(step.state_names)} state tensors{memory}, vocabulary {vocab}, "
                f"B={args.batch_size}, T={args.window}")
    if args.format == "torchscript":
        exported = inference.export_torchscript(step, args.window, vocab, args.out)
    else:
        inference.export_onnx(step, args.window, vocab, args.out)
        exported = inference.OnnxStep(args.out, ["tokens", *step.state_names])
    try:
        worst = inference.verify(step, exported, args.window, vocab)
    except AwdUserError:
        os.remove(args.out)  # created above by this command
        raise
    logger.info(f"checked against PyTorch over two carried windows: max |difference| {worst:.1e}")
    description = inference.describe(step, args.window, vocab, args.format, arch, list(task.target_dictionary.symbols),
                                     task.target_dictionary.eos())
    inference.write_json(json_path(args.out), description)
    print(f"wrote {args.out} and {json_path(args.out)}")
    return 0


def cli_main():
    logging.basicConfig(format="%(asctime)s | %(levelname)s | %(name)s | %(message)s", level=logging.INFO, stream=sys.stdout)
    import awd_plugins  # noqa: F401  (registers the models; installs the one-line error hook)

    sys.exit(main())


if __name__ == "__main__":
    cli_main()
