"""Pieces shared by the search commands (``awd-pointer-search``, ``awd-dynamic-eval-search``)."""

import argparse
import logging
import sys


def search_parser(prog: str, description: str, **kwargs) -> argparse.ArgumentParser:
    """A parser with the data-bin and ``--path`` that every search command starts with."""
    parser = argparse.ArgumentParser(prog=prog, description=description, **kwargs)
    parser.add_argument("data", help="the data-bin the model was trained on")
    parser.add_argument("--path", required=True, help="checkpoint (e.g. checkpoints/checkpoint_best.pt)")
    return parser


def parse_search_args(parser: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """Add the split and device options every search command ends with, parse, start logging."""
    parser.add_argument("--valid-subset", default="valid")
    parser.add_argument("--test-subset", default="test", help="'' to skip the test evaluation")
    parser.add_argument("--cpu", action="store_true", help="stay on the CPU even when CUDA is available")
    args = parser.parse_args(argv)
    logging.basicConfig(format="%(asctime)s | %(levelname)s | %(name)s | %(message)s", level=logging.INFO,
                        stream=sys.stdout)
    return args
