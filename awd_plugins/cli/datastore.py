"""Build a kNN-LM datastore: (last-layer output, next token) for every position of a split.

    awd-datastore --path ckpt.pt --data data-bin/X --subset train --out DIR [--index flat|ivf] [--fp16]
    fairseq-eval-lm data-bin/X --user-dir awd_plugins --task awd_language_modeling --path ckpt.pt \\
        --knn-datastore DIR --knn-k 1024 --knn-lambda 0.25 --knn-temperature 1

The model runs over ``--subset`` in ``--batch-size`` contiguous streams with carried
state (windows of ``--bptt``), as evaluation does; keys are streamed to a
memory-mapped file and then indexed with faiss (``flat``: exact search; ``ivf``: an
inverted-file index, approximate, searched in ``--knn-nprobe`` lists; ``--fp16``
stores the keys in half precision). ``DIR`` must not exist: it is built in a
temporary folder beside it and moved into place when complete. See
``awd_plugins/knn.py`` for the interpolation (Khandelwal et al. 2020, eq. 2).
"""

import argparse
import logging
import os
import sys
import time


def main(argv=None):
    parser = argparse.ArgumentParser(prog="awd-datastore", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--path", required=True, help="checkpoint (e.g. checkpoints/checkpoint_best.pt)")
    parser.add_argument("--data", required=True, help="the data-bin the model was trained on")
    parser.add_argument("--subset", default="train", help="split to store (default train)")
    parser.add_argument("--out", required=True, help="datastore folder to create (must not exist)")
    parser.add_argument("--index", choices=["flat", "ivf"], default="flat",
                        help="flat: exact search (default); ivf: approximate inverted-file index")
    parser.add_argument("--nlist", type=int, default=0, help="ivf: number of lists (default 4·sqrt(keys), at most keys/39 and 4096)")
    parser.add_argument("--fp16", action="store_true", help="store keys in half precision (half the memory)")
    parser.add_argument("--batch-size", type=int, default=10, help="contiguous streams run at once (default 10)")
    parser.add_argument("--bptt", type=int, default=None, help="window length (default: the checkpoint's --bptt)")
    parser.add_argument("--cpu", action="store_true", help="stay on the CPU even when CUDA is available")
    args = parser.parse_args(argv)
    logging.basicConfig(format="%(asctime)s | %(levelname)s | %(name)s | %(message)s", level=logging.INFO,
                        stream=sys.stderr)

    from awd_plugins.cli.atomic import atomic_dir
    from awd_plugins.cli.score import load_model
    from awd_plugins.errors import AwdUserError
    from awd_plugins.knn import build_datastore, import_faiss

    import_faiss()  # fail before any work when faiss is missing
    if os.path.exists(args.out):
        raise AwdUserError(f"--out {args.out} already exists: choose a new folder (nothing is overwritten)")
    if args.batch_size < 1 or (args.bptt is not None and args.bptt < 1) or args.nlist < 0:
        raise AwdUserError("--batch-size, --bptt and --nlist must be positive")
    model, task = load_model(args.path, args.data, args.cpu)
    try:
        task.load_dataset(args.subset)
    except FileNotFoundError as e:
        raise AwdUserError(str(e))
    stream = task.dataset(args.subset).stream
    t0 = time.time()
    with atomic_dir(args.out) as tmp:
        meta = build_datastore(model, stream, tmp, args.batch_size, args.bptt or task.cfg.bptt, args.index, args.fp16,
                               args.nlist, len(task.target_dictionary),
                               {"checkpoint": os.path.abspath(args.path), "subset": args.subset})
    print(f"{args.out}: {meta['keys']:,} keys of dimension {meta['dim']}, {meta['index']} index"
          f"{' (fp16)' if meta['fp16'] else ''}, {time.time() - t0:.1f}s")
    return meta


def cli_main():
    from awd_plugins.cli.atomic import run_command

    run_command("awd-datastore", main)


if __name__ == "__main__":
    cli_main()
