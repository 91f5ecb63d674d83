"""THINGS scale: time and peak memory from a study's judgments in the database to a fitted teacher.

Synthetic data with a planted model (``alignment.synthetic``): 1,854 images (THINGS' object count), a
human similarity space that an affine map of the features recovers, and judgments with a THINGS-like
repeat structure: most triplets are answered once, 2 % of the judgments fall on 1,000 shared triplets
answered by many participants (the noise-ceiling set) and 1 % are a participant repeating a triplet.
Each participant answers 100 trials.

Every size runs in two fresh processes: one writes the database (not timed as part of the path), one
measures the path the teacher stage takes -- load the judgments, split them (20 % of triplets held
out), per-triplet statistics, stimulus ids to rows, fit (default ``TeacherConfig``: L-BFGS, the
regulariser chosen from its grid by 5 object-disjoint image folds, strongest weight first with warm
starts, the folds fitted side by side in threads, ``cv_workers``) -- stage by stage, wall and CPU seconds
(the machine is shared: CPU time is what compares across loads; with parallel folds a quiet machine takes
fewer wall than CPU seconds), with the peak RSS of that process (``ru_maxrss``). Accuracy: the teacher and
the planted model on the held-out judgments.

Torch runs on one thread per fit by default (``--threads 0``: torch's own default, all cores, and then the
folds one at a time): on the shared 2-core machine two threads took 2.5x the CPU time and 3x the wall time
of one per step (their small element-wise ops wait on each other); the cores are used by fitting the
independent folds at once instead (``--cv-workers``, default as many as the cores).

    python -m bench.teacher_scale [--sizes 10000 100000 1000000 5000000] [--dim 512] [--threads 1]
        [--cv-workers N] [--reg-weight W]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

N_IMAGES = 1854
TRIALS_PER_PARTICIPANT = 100
SHARED_TRIPLETS = 1000
SHARED_SHARE = 0.02
WITHIN_REPEAT_SHARE = 0.01
SLUG = "things-scale"


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _planted(dim: int, seed: int):
    from alignment.synthetic import planted_triplets

    return planted_triplets(N_IMAGES, dim, 1, latent_dim=8, nuisance_decay=1.0, seed=seed)


def _judgment_triplets(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """[n, 3] image rows in presentation order and [n] participant numbers, THINGS-like repeats."""

    def random_triplets(count: int) -> np.ndarray:
        t = rng.integers(0, N_IMAGES, size=(count, 3))
        while True:
            clash = (t[:, 0] == t[:, 1]) | (t[:, 0] == t[:, 2]) | (t[:, 1] == t[:, 2])
            if not clash.any():
                return t
            t[clash] = rng.integers(0, N_IMAGES, size=(int(clash.sum()), 3))

    triplets = random_triplets(n)
    shared = random_triplets(SHARED_TRIPLETS)
    on_shared = rng.random(n) < SHARED_SHARE
    triplets[on_shared] = shared[rng.integers(0, SHARED_TRIPLETS, int(on_shared.sum()))]
    participant = np.arange(n) // TRIALS_PER_PARTICIPANT
    repeat = np.flatnonzero(
        (rng.random(n) < WITHIN_REPEAT_SHARE) & (np.arange(n) % TRIALS_PER_PARTICIPANT > 0)
    )
    earlier = repeat - 1 - rng.integers(0, repeat % TRIALS_PER_PARTICIPANT)  # same participant, earlier
    triplets[repeat] = rng.permuted(triplets[earlier], axis=1)
    return triplets.astype(np.int32), participant


def write_database(path: Path, n: int, dim: int, seed: int) -> None:
    """The study as a SQLite file: stimuli, one list and participant per 100 judgments, trials, responses."""
    from alignment.conventions import pair_similarities, triplet_probabilities
    from db.engine import Database
    from db.models import Base, Study, StudyStatus
    from study.config import StudyConfig
    from tests.support.analysis_helpers import placeholder_stimuli, stimulus_set_id

    planted = _planted(dim, seed)
    np.savez(path.with_suffix(".npz"), features=planted.features, human=planted.human_embedding)
    db = Database.from_url(f"sqlite:///{path}")
    Base.metadata.create_all(db.engine)
    placeholder_stimuli(db, "things-like", N_IMAGES, ".jpg")
    set_id = stimulus_set_id(db, "things-like")
    with db.write() as session:
        session.add(
            Study(
                slug=SLUG,
                stimulus_set_id=set_id,
                status=StudyStatus.CLOSED,
                salt="0" * 32,
                config=StudyConfig().to_dict(),
                imported=True,
            )
        )
    db.dispose()
    rng = np.random.default_rng(seed + 1)
    triplets, participant = _judgment_triplets(n, rng)
    probs = triplet_probabilities(pair_similarities(planted.human_embedding, triplets), planted.temperature)
    pair = (rng.random(n)[:, None] > np.cumsum(probs, axis=1)).sum(axis=1).clip(0, 2)
    odd_position = np.array([2, 1, 0])[pair]  # the item not in the chosen pair
    ids = triplets.astype(np.int64) + 1  # stimulus ids are rows + 1 (inserted in order)
    rt = rng.lognormal(7.0, 0.4, n)
    _insert_rows(path, ids, odd_position, participant, rt)


def _insert_rows(path: Path, ids, odd_position, participant, rt) -> None:
    n_participants = int(participant.max()) + 1
    keys = ["-".join(map(str, row)) for row in np.sort(ids, axis=1).tolist()]
    trial_index = np.arange(len(ids)) % TRIALS_PER_PARTICIPANT
    now = "2026-01-01 00:00:00.000000"
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=OFF")
        conn.executemany(
            "INSERT INTO triplet_lists (id, study_id, list_index) VALUES (?, 1, ?)",
            ((p + 1, p) for p in range(n_participants)),
        )
        conn.executemany(
            "INSERT INTO participants (id, study_id, external_id, source, is_simulated, list_id, status, "
            "demographics, browser, flow_state, started_at, last_seen_at, excluded, payment_status, consent) "
            "VALUES (?, 1, ?, 'imported', 1, ?, 'completed', '{}', '{}', '{}', ?, ?, 0, 'pending', 1)",
            ((p + 1, f"w{p}", p + 1, now, now) for p in range(n_participants)),
        )
        conn.executemany(
            "INSERT INTO trials (id, list_id, trial_index, block, stim0_id, stim1_id, stim2_id, odd_known, "
            "kind, triplet_key) VALUES (?, ?, ?, 0, ?, ?, ?, 0, 'experimental', ?)",
            zip(
                range(1, len(ids) + 1),
                (participant + 1).tolist(),
                trial_index.tolist(),
                *ids.T.tolist(),
                keys,
                strict=True,
            ),
        )
        chosen = ids[np.arange(len(ids)), odd_position]
        conn.executemany(
            "INSERT INTO responses (participant_id, trial_index, trial_id, shown_left_id, shown_middle_id, "
            "shown_right_id, chosen_position, chosen_stimulus_id, rt_ms, server_received_at, input_modality, "
            "timed_out) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'keyboard', 0)",
            zip(
                (participant + 1).tolist(),
                trial_index.tolist(),
                range(1, len(ids) + 1),
                *ids.T.tolist(),
                odd_position.tolist(),
                chosen.tolist(),
                rt.tolist(),
                [now] * len(ids),
                strict=True,
            ),
        )


def measure(path: Path, threads: int | None, reg_weight: float | None, cv_workers: int | None = None) -> dict:
    """The teacher stage's path from the database, timed stage by stage (run in a fresh process)."""
    os.environ["ALIGNLAB_HOME"] = str(path.parent)
    from alignment.conventions import correct_choices, pair_similarities
    from alignment.teacher import TeacherConfig, fit_teacher
    from db.engine import Database
    from study.judgments import load_judgments, split_judgments
    from workflows.pipeline.data import SplitConfig, study_images
    from workflows.pipeline.teacher_stage import training_triplets

    with np.load(path.with_suffix(".npz")) as data:
        features, human = data["features"], data["human"]
    db = Database.from_url(f"sqlite:///{path}")
    stages, cpu, rss = {}, {}, {}
    clock, cpu_clock = time.perf_counter(), time.process_time()

    def lap(name: str) -> None:
        nonlocal clock, cpu_clock
        now, cpu_now = time.perf_counter(), time.process_time()
        stages[name], rss[name] = round(now - clock, 2), round(_peak_rss_mb())
        cpu[name] = round(cpu_now - cpu_clock, 2)
        clock, cpu_clock = now, cpu_now

    judgments = load_judgments(db, SLUG)
    images = study_images(db, SLUG)
    lap("load")
    split = SplitConfig()
    train, test = split_judgments(judgments, split.by, split.test_fraction, split.seed)
    lap("split")
    triplets, probs = training_triplets(train, images)
    lap("stats")
    teacher = fit_teacher(
        features,
        triplets,
        choice_probs=probs,
        # threads 0: torch's default
        config=TeacherConfig(reg_weight=reg_weight, num_threads=threads or None, cv_workers=cv_workers),
    )
    lap("fit")
    held_out = images.rows(test[["stim0", "stim1", "stim2"]].to_numpy())
    teacher_accuracy = correct_choices(pair_similarities(teacher.transform(features), held_out)).mean()
    planted_accuracy = correct_choices(pair_similarities(human, held_out)).mean()
    return {
        "judgments": len(judgments),
        "train_triplets": len(triplets),
        "seconds": stages,
        "total_s": round(sum(stages.values()), 1),
        "cpu_s": cpu,  # process CPU time (all threads): comparable across machine loads, unlike wall time
        "total_cpu_s": round(sum(cpu.values()), 1),
        "peak_rss_mb_after": rss,
        "optimiser_s": teacher.summary["fit_seconds"],
        "cv_s": teacher.summary["cv_seconds"],
        "cv_cpu_s": teacher.summary["cv_cpu_seconds"],
        "final_cpu_s": round(teacher.summary["fit_cpu_seconds"] - teacher.summary["cv_cpu_seconds"], 2),
        "reg_weight": teacher.summary["reg_weight"],
        "selection": _selection(teacher.summary),
        "teacher_acc": round(float(teacher_accuracy), 4),
        "planted_acc": round(float(planted_accuracy), 4),
        "n_test": len(held_out),
    }


def _selection(summary: dict) -> str:
    """How the regulariser was chosen, e.g. "image_cv k=5 (2 at once), 3 weights"."""
    selection = summary.get("selection", {})
    method = selection.get("method", "?")
    folds = f" k={selection['folds']} ({selection['workers']} at once)" if method == "image_cv" else ""
    return f"{method}{folds}, {len(summary.get('reg_weight_val_loss', {}))} weights"


def _run_size(n: int, dim: int, options: list[str], workdir: Path) -> dict:
    path = workdir / f"things_{n}.sqlite"
    start = time.perf_counter()
    _child(["--write", str(path), "--n", str(n), "--dim", str(dim)])
    write_s = time.perf_counter() - start
    load = os.getloadavg()[0]
    result = json.loads(_child(["--measure", str(path), *options]))
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return {"n": n, "write_db_s": round(write_s, 1), "load_avg_1min": round(load, 2), **result}


def _child(args: list[str]) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "bench.teacher_scale", *args], capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    return done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""


def _table(results: list[dict]) -> str:
    header = (
        "| judgments | train triplets | load | split | stats | fit: CV + final | total | peak RSS | "
        "teacher acc | planted acc | reg (selection) | load avg |"
    )
    lines = ["stages: wall s (CPU s)", header, "|" + "---|" * 12]
    for r in results:
        s, c = r["seconds"], r["cpu_s"]
        lines.append(
            f"| {r['judgments']:,} | {r['train_triplets']:,} | {s['load']} ({c['load']}) | "
            f"{s['split']} ({c['split']}) | {s['stats']} ({c['stats']}) | {s['fit']} ({c['fit']}): "
            f"{r['cv_s']:.1f} ({r['cv_cpu_s']:.1f}) + "
            f"{r['optimiser_s'] - r['cv_s']:.1f} ({r['final_cpu_s']:.1f}) | "
            f"{r['total_s']} ({r['total_cpu_s']}) | "
            f"{r['peak_rss_mb_after']['fit'] / 1024:.2f} GB | {r['teacher_acc']:.4f} | "
            f"{r['planted_acc']:.4f} | "
            f"{r['reg_weight']} ({r['selection']}) | {r['load_avg_1min']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000, 5_000_000])
    parser.add_argument("--dim", type=int, default=512, help="feature dimension of the synthetic backbone")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads while fitting (0: torch's default, all cores)"
    )
    parser.add_argument(
        "--reg-weight", type=float, default=None, help="a fixed regulariser weight (default: the grid search)"
    )
    parser.add_argument(
        "--cv-workers", type=int, default=None, help="folds fitted at once (default: as many as the cores)"
    )
    parser.add_argument("--write", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.write:
        write_database(args.write, args.n, args.dim, seed=0)
        return
    if args.measure:
        print(json.dumps(measure(args.measure, args.threads, args.reg_weight, args.cv_workers)))
        return
    print(f"{os.cpu_count()} CPUs; 1-minute load average at start {os.getloadavg()[0]:.2f}", flush=True)
    options = ["--threads", str(args.threads)]
    options += ["--reg-weight", str(args.reg_weight)] if args.reg_weight is not None else []
    options += ["--cv-workers", str(args.cv_workers)] if args.cv_workers is not None else []
    results = []
    with tempfile.TemporaryDirectory(prefix="teacher_scale_") as workdir:
        for n in args.sizes:
            results.append(_run_size(n, args.dim, options, Path(workdir)))
            print(json.dumps(results[-1]), flush=True)
    print(_table(results))


if __name__ == "__main__":
    main()
