"""Stage `eval`: the before/after table. Every representation (raw backbone, teacher, students) is scored
on the same held-out human judgments, per Levels type, with one stated similarity, noise-ceiling-normalised
accuracy, and the correlation of model entropy with human RT and choice entropy."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from alignment.conventions import Similarity
from common.atomic import atomic_write
from db.engine import Database
from db.models import Run
from db.settings import data_home
from workflows.artifacts import read_split
from workflows.jobs import Progress, StageResult, run_dir
from workflows.pipeline.data import (
    ANCHOR_COLUMNS,
    TRIPLET_COLUMNS,
    StudyImages,
    StudySplit,
    finished_run,
    load_embeddings,
    study_anchor_judgments,
    study_images,
    study_judgments,
)

RESULTS_ARTIFACT = "results"
RESULTS_FORMAT = 3  # part of each loop's eval config: an eval run stored in an older form is not reused


@dataclass(frozen=True)
class Representation:
    """One embedding to evaluate: `RUN` or `RUN:ARTIFACT` (e.g. a teacher run's `raw_embeddings`)."""

    label: str
    run_id: int
    artifact: str = "embeddings"


def parse_representation(db: Database, spec: str, label: str | None = None) -> Representation:
    run_part, _, artifact = str(spec).partition(":")
    if not run_part.isdigit():
        raise ValueError(f"representation {spec!r} is not RUN or RUN:ARTIFACT (e.g. 4 or 4:raw_embeddings)")
    run = finished_run(db, int(run_part))
    artifact = artifact or "embeddings"
    if artifact not in run.artifacts:
        raise ValueError(
            f"run {run.id} ({run.kind}) has no {artifact!r} artifact; it has {sorted(run.artifacts)}"
        )
    return Representation(
        label or f"{run.kind} {run.id}" + (f" {artifact}" if artifact != "embeddings" else ""),
        run.id,
        artifact,
    )


@dataclass(frozen=True)
class HeldOutSet:
    """One block of the evaluation table: a judgment task, which images it is held out on, its judgments."""

    task: str  # odd_one_out | anchor
    held_out: str  # seen | unseen | unseen_subjects | all (alignment.model_comparison.HELD_OUT)
    judgments: pd.DataFrame


BLOCK_ORDER = ("seen", "unseen", "unseen_subjects", "all")


def split_sets(split: StudySplit) -> list[HeldOutSet]:
    """The non-empty test blocks of a split: odd-one-out before anchor, each seen images, unseen images,
    unseen subjects."""
    blocks = [
        HeldOutSet("odd_one_out", "seen", split.seen),
        HeldOutSet("odd_one_out", "unseen", split.unseen),
        HeldOutSet("odd_one_out", "unseen_subjects", split.subjects),
        HeldOutSet("anchor", "seen", split.anchor_seen),
        HeldOutSet("anchor", "unseen", split.anchor_unseen),
        HeldOutSet("anchor", "unseen_subjects", split.anchor_subjects),
    ]
    return [block for block in blocks if not block.judgments.empty]


@dataclass(frozen=True)
class SplitNotes:
    """Why a split has no unseen-image or no unseen-subject test ("" where it has one)."""

    unseen: str = ""
    subjects: str = ""

    def metrics(self) -> dict[str, str]:
        return {"unseen_note": self.unseen, "subject_note": self.subjects}


def held_out_sets(db: Database, slug: str, split_run_id: int | None) -> tuple[list[HeldOutSet], SplitNotes]:
    """The test blocks a split run held out (every judgment, as `all`, when no split run is given) and the
    split's notes on its unseen-image and unseen-subject tests."""
    frames = {"odd_one_out": study_judgments(db, slug), "anchor": study_anchor_judgments(db, slug)}
    if split_run_id is None:
        return [HeldOutSet(task, "all", f) for task, f in frames.items() if not f.empty], SplitNotes()
    run = finished_run(db, split_run_id)
    if "split" not in run.artifacts:
        raise ValueError(f"run {split_run_id} ({run.kind}) holds out no judgments; give a teacher run")
    keys, unseen, subject = read_split(
        data_home() / run.artifacts["split"], f"run {split_run_id} ({run.kind})"
    )
    kinds = {"seen": ~unseen & ~subject, "unseen": unseen, "unseen_subjects": subject}
    blocks = []
    for task, frame in frames.items():
        frame_keys = pd.MultiIndex.from_arrays(
            [frame["participant_id"].to_numpy(np.int64), frame["trial_index"].to_numpy(np.int64)]
        )
        for held_out, chosen_keys in kinds.items():
            chosen = frame[frame_keys.isin(pd.MultiIndex.from_arrays(keys[chosen_keys].T))]
            if not chosen.empty:
                blocks.append(HeldOutSet(task, held_out, chosen))
    blocks.sort(key=lambda block: (block.task != "odd_one_out", BLOCK_ORDER.index(block.held_out)))
    notes = SplitNotes(str(run.metrics.get("unseen_note", "")), str(run.metrics.get("subject_note", "")))
    return blocks, notes


def human_uncertainty(all_judgments: pd.DataFrame, test: pd.DataFrame) -> np.ndarray:
    """Per test judgment, the choice entropy of its triplet over all responses (NaN with fewer than 2)."""
    from study.reliability import triplet_human_stats

    stats = triplet_human_stats(all_judgments, min_responses=2).set_index("triplet_key")["entropy"]
    return test["triplet_key"].map(stats).to_numpy(np.float64)


@dataclass(frozen=True)
class Ceilings:
    """Levels leave-one-out noise ceilings per level (and overall) with their 95% CIs and the number of
    repeated triplets each rests on."""

    value: dict[str, float]
    interval: dict[str, tuple[float, float]]
    triplets: dict[str, int]


def noise_ceilings(all_judgments: pd.DataFrame) -> Ceilings:
    """Ceilings for levels with repeated triplets whose humans agree above chance (at or below 1/3,
    (acc - 1/3)/(ceiling - 1/3) is undefined: reported as NaN)."""
    from study.reliability import levels_noise_ceiling

    if all_judgments.empty:
        return Ceilings({}, {}, {})
    table = levels_noise_ceiling(all_judgments)
    usable = [row for row in table.itertuples() if row.n_triplets > 0 and row.ceiling > 1 / 3 + 1e-9]
    return Ceilings(
        {row.level: float(row.ceiling) for row in usable},
        {row.level: (float(row.ci_low), float(row.ci_high)) for row in usable},
        {row.level: int(row.n_triplets) for row in usable},
    )


def score_held_out(
    blocks: list[HeldOutSet],
    embeddings: dict[str, np.ndarray],
    images: StudyImages,
    all_judgments: pd.DataFrame,
    *,
    similarity: Similarity = "dot",
    n_boot: int = 1000,
) -> pd.DataFrame:
    """The results table (``alignment.model_comparison.ResultRow`` columns) of every representation on every
    block, blocks in the given order."""
    from alignment.model_comparison import compare_models

    if not blocks:
        raise ValueError("no held-out judgments to evaluate on")
    ceilings = noise_ceilings(all_judgments) if any(b.task == "odd_one_out" for b in blocks) else None
    tables = []
    for block in blocks:
        test = block.judgments
        groups, human_rt = test["triplet_key"].tolist(), test["rt_ms"].to_numpy(np.float64)
        if block.task == "anchor" or ceilings is None:
            result = compare_models(
                embeddings,
                images.rows(test[ANCHOR_COLUMNS].to_numpy()),
                task="anchor",
                held_out=block.held_out,
                similarity=similarity,
                groups=groups,
                human_rt=human_rt,
                n_boot=n_boot,
            )
        else:
            labelled = test["level"].notna().any()  # unlabelled rows (catch trials) count in `overall` only
            result = compare_models(
                embeddings,
                images.rows(test[TRIPLET_COLUMNS].to_numpy()),
                levels=test["level"].tolist() if labelled else None,
                human_entropy=human_uncertainty(all_judgments, test),
                noise_ceiling=ceilings.value or None,
                ceiling_triplets=ceilings.triplets,
                ceiling_intervals=ceilings.interval,
                held_out=block.held_out,
                similarity=similarity,
                groups=groups,
                human_rt=human_rt,
                n_boot=n_boot,
            )
        tables.append(result.results_table())
    return pd.concat(tables, ignore_index=True)


def evaluate_representations(
    db: Database,
    slug: str,
    representations: list[Representation],
    split_run_id: int | None,
    *,
    similarity: Similarity = "dot",
    n_boot: int = 1000,
) -> tuple[pd.DataFrame, SplitNotes]:
    """The results table over the study's held-out judgments (every judgment without a split run) and the
    split's notes on its unseen-image and unseen-subject tests."""
    blocks, notes = held_out_sets(db, slug, split_run_id)
    images = study_images(db, slug)
    embeddings = {rep.label: _in_study_order(db, rep, images.stimulus_ids) for rep in representations}
    table = score_held_out(
        blocks, embeddings, images, study_judgments(db, slug), similarity=similarity, n_boot=n_boot
    )
    return table, notes


def _in_study_order(db: Database, rep: Representation, stimulus_ids: np.ndarray) -> np.ndarray:
    embeddings, ids = load_embeddings(finished_run(db, rep.run_id), rep.artifact)
    position = {int(s): i for i, s in enumerate(ids)}
    missing = [int(s) for s in stimulus_ids if int(s) not in position]
    if missing:
        raise ValueError(
            f"{rep.label} has no embedding for {len(missing)} of the study's stimuli (e.g. {missing[:3]})"
        )
    return embeddings[[position[int(s)] for s in stimulus_ids]]


def eval_stage(db: Database, run: Run, progress: Progress) -> StageResult:
    labels = run.config.get("labels") or [None] * len(run.config["representations"])
    reps = [
        parse_representation(db, spec, label)
        for spec, label in zip(run.config["representations"], labels, strict=True)
    ]
    progress(0.1, f"evaluating {len(reps)} representations on held-out judgments")
    results, notes = evaluate_representations(
        db,
        run.config["study"],
        reps,
        run.config.get("split_run"),
        similarity=run.config.get("similarity", "dot"),
    )
    return StageResult({**evaluation_metrics(results), **notes.metrics()}, store_results(run.id, results))


def store_results(run_id: int, results: pd.DataFrame) -> dict[str, str]:
    """Write the results table as the run's `results` artifact; returns the artifacts entry."""
    path = run_dir(run_id) / "eval_results.parquet"
    atomic_write(path, lambda handle: results.to_parquet(handle, index=False))
    return {RESULTS_ARTIFACT: str(path.relative_to(data_home()))}


def evaluation_metrics(results: pd.DataFrame) -> dict[str, Any]:
    """The run's headline numbers, keyed by measure, then model (then level), for the first block of the table
    (`held_out` names it, e.g. "odd_one_out seen"): overall accuracy per model, and each non-baseline model's
    gain over the baseline with its paired 95% CI per level; `overall_accuracy` has every block's."""
    blocks = list(dict.fromkeys(zip(results["task"], results["held_out"], strict=True)))
    in_block = {b: (results["task"] == b[0]) & (results["held_out"] == b[1]) for b in blocks}
    first = results[in_block[blocks[0]]]
    overall = first[first["level"] == "overall"].set_index("model")["accuracy"]
    metrics: dict[str, Any] = {"accuracy": {model: _number(value) for model, value in overall.items()}}
    gained = first[first["gain"].notna()]
    for measure in ("gain", "gain_ci_low", "gain_ci_high"):
        metrics[measure] = {
            model: {level: _number(value) for level, value in rows.set_index("level")[measure].items()}
            for model, rows in gained.groupby("model", sort=False)
        }
    metrics["overall_accuracy"] = {
        f"{task} {held_out}": {
            row.model: _number(row.accuracy)
            for row in results[in_block[(task, held_out)] & (results["level"] == "overall")].itertuples()
        }
        for task, held_out in blocks
    }
    metrics["held_out"] = f"{blocks[0][0]} {blocks[0][1]}"
    return metrics


def _number(value: float) -> float | None:
    """Rounded for the run record; NaN (undefined) becomes null, which JSON columns can hold."""
    return round(float(value), 4) if np.isfinite(value) else None


def read_results(run: Run) -> pd.DataFrame:
    """The evaluation table an eval or closed-loop run stored: one row per level and model, the columns of
    ``alignment.model_comparison.ResultRow`` (flags as tuples)."""
    if RESULTS_ARTIFACT not in run.artifacts:
        raise ValueError(
            f"run {run.id} ({run.kind}) has no evaluation results table (its artifacts: "
            f"{sorted(run.artifacts)}); a run stored before results were tables needs its evaluation "
            "again: `alignlab align` or `alignlab eval`"
        )
    table = pd.read_parquet(data_home() / run.artifacts[RESULTS_ARTIFACT])
    table["flags"] = table["flags"].map(tuple)
    return table
