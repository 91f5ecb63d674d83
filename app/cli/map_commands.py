"""`alignlab map --before RUN --after RUN --out DIR`: before/after maps, reorganisation figures, HTML report.

A RUN is a run id or a unique run name (its "embeddings" artifact), or RUN:ARTIFACT for another
embeddings artifact of the run, e.g. `--before 7:raw_embeddings --after 7` for a teacher run (see
workflows/maps/data.py). Neighbour searches and 2-D layouts are kept in the data directory's cache/maps, so
mapping a representation again (here or on the Maps page) fits nothing again.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from app.cli import open_database


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "map", help="before/after embedding maps and reorganisation report of two runs"
    )
    parser.add_argument("--before", required=True, help="RUN or RUN:ARTIFACT before alignment")
    parser.add_argument("--after", required=True, help="RUN or RUN:ARTIFACT after alignment")
    parser.add_argument("--out", required=True, type=Path, help="directory for the figures and report.html")
    parser.add_argument(
        "--method", choices=("umap", "pca"), default="umap", help="2-D map method (default umap)"
    )
    parser.add_argument("--colour-by", choices=("category", "superordinate"), default="category")
    parser.add_argument("--k", type=int, default=10, help="neighbours per image for overlap and purity")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-png", action="store_true", help="skip PNG export (needs Chrome/Chromium)")
    parser.set_defaults(func=_map)


def _map(args: argparse.Namespace) -> int:
    from alignment.maps import MapConfig, paired_maps
    from workflows.maps.analysis import analyse_reorganisation, compare_with_humans, representation_neighbours
    from workflows.maps.data import (
        load_human_judgments,
        load_map_inputs,
        map_cache_dir,
        resolve_representation,
    )
    from workflows.maps.report import build_figures, write_map_report

    if args.k < 1:
        raise ValueError(f"--k must be at least 1; got {args.k}")
    db = open_database()
    inputs = load_map_inputs(
        db, resolve_representation(db, args.before), resolve_representation(db, args.after)
    )
    print(
        f"mapping {len(inputs.stimuli)} images: {inputs.before.label} -> {inputs.after.label} ({args.method})"
    )
    neighbours = representation_neighbours(inputs, args.k, cache_dir=map_cache_dir())
    maps = paired_maps(
        inputs.before.embeddings,
        inputs.after.embeddings,
        MapConfig(method=args.method, seed=args.seed),
        neighbours=neighbours,
        cache_dir=map_cache_dir(),
    )
    reorg = analyse_reorganisation(inputs, args.k, neighbours)
    study_id = inputs.after.study_id or inputs.before.study_id
    judgments = load_human_judgments(db, study_id, inputs.before.stimulus_ids)
    humans = compare_with_humans(inputs, judgments) if judgments else None
    figures = build_figures(inputs, maps, reorg, humans, args.colour_by)
    written = write_map_report(args.out, inputs, maps, figures, png=not args.no_png)
    for row in figures.summary:
        print(f"  {row['measure']}: {row['before']:.3f} -> {row['after']:.3f}")
    if humans is None:
        print("  (no human judgments for these images: RSA and entropy-vs-RT figures left out)")
    print(f"wrote {len(written)} files to {args.out}: {', '.join(p.name for p in written)}")
    return 0
