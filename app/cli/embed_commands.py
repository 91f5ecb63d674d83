"""`alignlab embed --run RUN --images PATH_OR_SET --out FILE.npz|.parquet`: a fitted teacher, student or
features run applied to any images (see workflows/embedding.py)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    embed = subparsers.add_parser("embed", help="embed any images with a teacher, student or features run")
    embed.add_argument("--run", type=int, required=True, help="a succeeded teacher, student or features run")
    embed.add_argument(
        "--images",
        required=True,
        help="a folder (every image file below it), a text file listing image paths, or a stimulus set name",
    )
    embed.add_argument("--out", type=Path, required=True, help="FILE.npz (embeddings, names) or FILE.parquet")
    embed.set_defaults(func=_embed)


def _embed(args: argparse.Namespace) -> int:
    from db.engine import Database
    from workflows.embedding import image_files, load_run, write_embedding_file

    if args.out.suffix not in (".npz", ".parquet"):
        raise ValueError(f"--out must end in .npz or .parquet; got {args.out.name}")
    db = Database.from_url()
    fitted = load_run(args.run, db)
    files, names = image_files(args.images, db)
    embeddings = fitted.embed(files)
    out = write_embedding_file(args.out, embeddings, names)
    print(
        f"run {args.run} ({fitted.run.kind}): {len(files)} images -> {out} ({embeddings.shape[1]} dimensions)"
    )
    return 0
