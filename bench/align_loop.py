"""The default closed loop as a user runs it (`alignlab align --study S`, nothing configured), timed step by
step from its child runs: on the built-in demo (target <= 90 s on a 2-core machine) and on a generated
1,000-image / 10,000-judgment study (target <= 5 minutes).

The large study: 1,000 synthetic images (100 categories x 10, each category its own colour and stripe
pattern, per-image noise) and 10,000 odd-one-out judgments by 100 subjects, imported without Levels types
(as `alignlab judgments import` would); 40 % of the triplets hold two images of one category (whose third
image is then the odd one out), the rest are three categories judged by a planted 2-d category space with
noise. Every run starts from a cold feature cache in a fresh ALIGNLAB_HOME (the demo's images and weights
are built there first, not timed).

    python -m bench.align_loop [--skip-demo] [--skip-large] [--images 1000] [--judgments 10000]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def _load() -> str:
    return "load average " + " ".join(f"{x:.1f}" for x in os.getloadavg()) + f" on {os.cpu_count()} cores"


def timed_loop(slug: str) -> dict:
    """Run the default loop on ``slug`` in this process; seconds per step (from the child runs) and total."""
    from db.engine import Database
    from db.runs import get_run, list_runs
    from workflows import pipeline
    from workflows.pipeline.data import judgments_snapshot

    db = Database.from_url()
    started = time.perf_counter()
    with judgments_snapshot():
        run_id = pipeline.queue_action(db, "align", slug, {})
        pipeline.execute(db, run_id)
    total = time.perf_counter() - started
    run = get_run(db, run_id)
    if run.error:
        raise RuntimeError(f"the loop failed: {run.error}")
    steps = {
        child.name.split(" (")[0]: (child.finished_at - child.started_at).total_seconds()
        for child in sorted(list_runs(db), key=lambda r: r.id)
        if child.parent_run_id == run_id and child.started_at and child.finished_at
    }
    students = {name: get_run(db, run.metrics[key]).metrics for name, key in (("AligNet", "alignet_run"),)}
    return {"total": total, "steps": steps, "metrics": run.metrics, "students": students}


def report(title: str, result: dict) -> None:
    print(f"\n## {title} ({_load()})")
    for name, seconds in result["steps"].items():
        print(f"{name:<28}{seconds:>8.1f} s")
    other = result["total"] - sum(result["steps"].values())
    print(f"{'checks, caveats, bookkeeping':<28}{other:>8.1f} s")
    print(f"{'total':<28}{result['total']:>8.1f} s")
    metrics = result["metrics"]
    print("accuracy:", metrics.get("accuracy"), "| held out:", metrics.get("held_out"))
    for name, student in result["students"].items():
        print(
            f"{name}: {student.get('steps')} steps, {student.get('triplets_per_s', 0):.0f} triplets/s, "
            f"agreement with its teacher {student.get('teacher_agreement_start', float('nan')):.3f} -> "
            f"{student.get('teacher_agreement_end', float('nan')):.3f}"
        )
    print("caveats:", [c["reason"] for c in metrics.get("caveats", [])] or "none")


def demo() -> dict:
    from db.engine import Database
    from workflows.demo import DEMO_SLUG, ensure_demo

    ensure_demo(Database.from_url(), report=lambda message: None)
    return timed_loop(DEMO_SLUG)


def _write_images(folder: Path, n_images: int, per_category: int, rng: np.random.Generator) -> None:
    from PIL import Image

    for c in range(n_images // per_category):
        colour, period = rng.uniform(30, 225, 3), int(rng.integers(4, 24))
        stripes = (np.arange(96) // period % 2)[None, :, None] * rng.uniform(-60, 60, 3)
        category = folder / f"group{c // 10:02d}" / f"cat{c:03d}"
        category.mkdir(parents=True)
        for i in range(per_category):
            pixels = colour + stripes + rng.normal(0, 20, (96, 96, 3))
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(category / f"{i}.png")


def _write_judgments(path: Path, names, categories, n_judgments: int, rng: np.random.Generator) -> None:
    codes, category_ids = np.unique(categories, return_inverse=True)
    space = rng.standard_normal((len(codes), 2))
    members = [np.flatnonzero(category_ids == c) for c in range(len(codes))]
    lines = ["image1,image2,image3,odd_one_out,subject_id,rt"]
    for j in range(n_judgments):
        if rng.random() < 0.4:
            same, other = rng.choice(len(codes), 2, replace=False)
            pair = rng.choice(members[same], 2, replace=False)
            trio = np.array([*pair, rng.choice(members[other])])
            odd = trio[2]
        else:
            trio = np.array([rng.choice(members[c]) for c in rng.choice(len(codes), 3, replace=False)])
            points = space[category_ids[trio]] + rng.normal(0, 0.3, (3, 2))
            distance = np.linalg.norm(points[:, None] - points[None], axis=2).sum(axis=1)
            odd = trio[int(np.argmax(distance))]
        rng.shuffle(trio)
        rt = int(rng.uniform(800, 3000))
        lines.append(",".join([*names[trio], names[odd], f"s{j % 100:03d}", str(rt)]))
    path.write_text("\n".join(lines) + "\n")


def large(n_images: int, n_judgments: int, work: Path) -> dict:
    from db.engine import Database
    from study.judgments import load_stimuli
    from study.judgments_import import import_judgments_csv
    from study.stimuli import import_stimulus_set

    rng = np.random.default_rng(0)
    db = Database.from_url()
    _write_images(work / "images", n_images, 10, rng)
    import_stimulus_set(db, work / "images", "bench pool")
    import_judgments_csv(
        db, _first_study_csv(db, work, n_judgments, rng), stimulus_set_name="bench pool", slug="bench"
    )
    assert len(load_stimuli(db, "bench")) == n_images
    return timed_loop("bench")


def _first_study_csv(db, work: Path, n_judgments: int, rng) -> Path:
    from sqlalchemy import select

    from db.models import Stimulus, StimulusSet

    with db.read() as session:
        set_id = session.scalar(select(StimulusSet.id).where(StimulusSet.name == "bench pool"))
        rows = session.execute(
            select(Stimulus.name, Stimulus.category).where(Stimulus.stimulus_set_id == set_id)
        ).all()
    names, categories = np.array([r[0] for r in rows]), np.array([r[1] for r in rows])
    path = work / "judgments.csv"
    _write_judgments(path, names, categories, n_judgments, rng)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-demo", action="store_true")
    parser.add_argument("--skip-large", action="store_true")
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--judgments", type=int, default=10_000)
    args = parser.parse_args()
    from db.migrate import upgrade

    with tempfile.TemporaryDirectory() as home:
        os.environ["ALIGNLAB_HOME"] = home
        os.environ.pop("DATABASE_URL", None)
        upgrade()
        print(f"fresh ALIGNLAB_HOME {home}; {_load()}")
        if not args.skip_demo:
            report("default loop on the demo (target <= 90 s)", demo())
        if not args.skip_large:
            result = large(args.images, args.judgments, Path(home))
            report(
                f"default loop on {args.images} images / {args.judgments} judgments (target <= 300 s)", result
            )


if __name__ == "__main__":
    main()
