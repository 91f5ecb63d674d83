"""The CLI options that say how integer image indices in an imported file map to a set's images."""

from __future__ import annotations

import argparse


def add_index_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--image-list",
        metavar="FILE",
        help="indices map to images through this file: one image name per line (first line = first index)",
    )
    parser.add_argument(
        "--index-order",
        choices=("natural", "text"),
        help="indices count images in natural ('2.jpg' before '10.jpg') or text name order; without it "
        "(or --image-list) a file whose indices would differ between the two orders is refused",
    )
    parser.add_argument(
        "--index-base", type=int, default=0, choices=(0, 1), help="the first index is 0 (default) or 1"
    )


def index_rule(args: argparse.Namespace):
    from study.stimulus_names import IndexRule

    return IndexRule.from_options(args.index_order, args.image_list, args.index_base)
