"""Stage `eval`: the before/after table. Every representation (raw backbone, teacher, students) is scored
on the same held-out human judgments, per Levels type, with one stated similarity, noise-ceiling-normalised
accuracy, and the correlation of model entropy with human RT and choice entropy."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from alignment.conventions import Similarity
from db.engine import Database
from db.models import Run
from db.settings import data_home
from workflows.artifacts import read_split
from workflows.jobs import Progress, StageResult, run_dir
from workflows.pipeline.data import finished_run, load_embeddings, study_images, study_judgments

RESULTS_ARTIFACT = "results"
RESULTS_FORMAT = 2  # part of each loop's eval config: an eval run stored in an older form is not reused


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


def held_out_judgments(db: Database, slug: str, split_run_id: int | None) -> pd.DataFrame:
    """The judgments a split run held out (all judgments when no split run is given)."""
    judgments = study_judgments(db, slug)
    if split_run_id is None:
        return judgments
    run = finished_run(db, split_run_id)
    if "split" not in run.artifacts:
        raise ValueError(f"run {split_run_id} ({run.kind}) holds out no judgments; give a teacher run")
    split = read_split(data_home() / run.artifacts["split"], f"run {split_run_id} ({run.kind})")
    test_keys = pd.MultiIndex.from_arrays(split.T)
    keys = pd.MultiIndex.from_arrays(
        [judgments["participant_id"].to_numpy(np.int64), judgments["trial_index"].to_numpy(np.int64)]
    )
    return judgments[keys.isin(test_keys)]


def human_uncertainty(all_judgments: pd.DataFrame, test: pd.DataFrame) -> np.ndarray:
    """Per test judgment, the choice entropy of its triplet over all responses (NaN with fewer than 2)."""
    from study.reliability import triplet_human_stats

    stats = triplet_human_stats(all_judgments, min_responses=2).set_index("triplet_key")["entropy"]
    return test["triplet_key"].map(stats).to_numpy(np.float64)


def noise_ceilings(all_judgments: pd.DataFrame) -> tuple[dict[str, float], dict[str, int]]:
    """Levels leave-one-out ceiling per level and overall, and the number of repeated triplets each was
    measured on, for levels with repeated triplets whose humans agree above chance (at or below 1/3,
    (acc - 1/3)/(ceiling - 1/3) is undefined: reported as NaN)."""
    from study.reliability import levels_noise_ceiling

    table = levels_noise_ceiling(all_judgments)
    usable = [row for row in table.itertuples() if row.n_triplets > 0 and row.ceiling > 1 / 3 + 1e-9]
    return {row.level: float(row.ceiling) for row in usable}, {
        row.level: int(row.n_triplets) for row in usable
    }


def evaluate_representations(
    db: Database,
    slug: str,
    representations: list[Representation],
    split_run_id: int | None,
    *,
    similarity: Similarity = "dot",
    n_boot: int = 1000,
):
    """A `BeforeAfter` (alignment.model_comparison) over the study's held-out judgments that have a Levels
    type."""
    from alignment.model_comparison import compare_models

    all_judgments = study_judgments(db, slug)
    test = held_out_judgments(db, slug, split_run_id)
    test = test[test["level"].notna()]
    if test.empty:
        raise ValueError(f"study {slug!r} has no held-out judgments with a Levels type to evaluate on")
    images = study_images(db, slug)
    embeddings = {rep.label: _in_study_order(db, rep, images.stimulus_ids) for rep in representations}
    ceilings, ceiling_triplets = noise_ceilings(all_judgments)
    return compare_models(
        embeddings,
        images.rows(test[["stim0", "stim1", "stim2"]].to_numpy()),
        levels=test["level"].tolist(),
        human_rt=test["rt_ms"].to_numpy(np.float64),
        human_entropy=human_uncertainty(all_judgments, test),
        noise_ceiling=ceilings or None,
        ceiling_triplets=ceiling_triplets,
        similarity=similarity,
        groups=test["triplet_key"].tolist(),
        n_boot=n_boot,
    )


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
    result = evaluate_representations(
        db,
        run.config["study"],
        reps,
        run.config.get("split_run"),
        similarity=run.config.get("similarity", "dot"),
    )
    results = result.results_table()
    path = run_dir(run.id) / "eval_results.parquet"
    results.to_parquet(path, index=False)
    return StageResult(evaluation_metrics(results), {RESULTS_ARTIFACT: str(path.relative_to(data_home()))})


def evaluation_metrics(results: pd.DataFrame) -> dict[str, dict]:
    """The run's headline numbers, keyed by measure, then model (then level): overall accuracy per model,
    and each non-baseline model's gain over the baseline with its paired 95% CI per level."""
    overall = results[results["level"] == "overall"].set_index("model")["accuracy"]
    metrics: dict[str, dict] = {"accuracy": {model: _number(value) for model, value in overall.items()}}
    gained = results[results["gain"].notna()]
    for measure in ("gain", "gain_ci_low", "gain_ci_high"):
        metrics[measure] = {
            model: {level: _number(value) for level, value in rows.set_index("level")[measure].items()}
            for model, rows in gained.groupby("model", sort=False)
        }
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
