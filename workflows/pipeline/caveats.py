"""Caveats: a closed loop's results that mean nothing say so. Each caveat is a dict with `check` (one of
`CHECKS`), `subject` (the model it is about), `reason` (one line: what was measured) and `help` (what would
help); the loop stores them in its metrics (`caveats`), and the CLI and the pages print them
(`app.results_display.caveat_lines`).

The checks and their thresholds:
- a gain over the base whose paired 95% CI includes 0 (the table's `gain_ci_includes_zero` flag, on each
  block's overall row);
- AligNet indistinguishable from UnAligNet: the paired 95% CI of AligNet minus UnAligNet accuracy includes 0
  on a block's overall row (the human-aligned labels made no measurable difference);
- a student that did not learn, measured on all its pseudo-labels before and after training: its loss is
  (near) 0 after (`ZERO_LOSS`: the targets carry nothing to learn), or fell by less than `MIN_LOSS_DROP` of
  its value before, or its agreement with its teacher's labels rose by less than `MIN_AGREEMENT_GAIN` (unless
  it was already `AGREEMENT_ALREADY_HIGH`);
- a collapsed structure: a representation's category silhouette (cosine) below `COLLAPSE_RATIO` of the
  base's, when the base has category structure to lose (silhouette >= `MIN_BASE_SILHOUETTE`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from alignment.model_comparison import GAIN_CI_INCLUDES_ZERO
from db.engine import Database

GAIN_INCLUDES_ZERO = "gain_ci_includes_zero"
CONTROL_INDISTINGUISHABLE = "alignet_indistinguishable_from_unalignet"
DID_NOT_LEARN = "student_did_not_learn"
STRUCTURE_COLLAPSED = "structure_collapsed"
CHECKS = (GAIN_INCLUDES_ZERO, CONTROL_INDISTINGUISHABLE, DID_NOT_LEARN, STRUCTURE_COLLAPSED)

ZERO_LOSS = 1e-4
MIN_LOSS_DROP = 0.05
MIN_AGREEMENT_GAIN = 0.02
AGREEMENT_ALREADY_HIGH = 0.98
COLLAPSE_RATIO = 0.5
MIN_BASE_SILHOUETTE = 0.1
SILHOUETTE_SAMPLE = 2000  # images: the same seeded sample for every representation

BLOCK_LABELS = {
    "seen": "seen images",
    "unseen": "unseen images",
    "unseen_subjects": "unseen subjects",
    "all": "all judgments",
}


def caveat(check: str, subject: str, reason: str, help: str) -> dict[str, str]:
    return {"check": check, "subject": subject, "reason": reason, "help": help}


def _block(row: Any) -> str:
    task = "odd-one-out" if row.task == "odd_one_out" else "anchor"
    return f"{task} · {BLOCK_LABELS.get(row.held_out, row.held_out)}"


def _interval(gain: float, low: float, high: float) -> str:
    return f"{gain:+.3f} [{low:+.3f}, {high:+.3f}]"


CONTROLS = ("UnAligNet",)  # expected to gain nothing: a gain CI that includes 0 is its expected result


def gain_caveats(results: pd.DataFrame, baseline: str = "base") -> list[dict[str, str]]:
    """One caveat per model and block whose overall gain over ``baseline`` has a CI including 0 (not for
    the control, which is meant not to gain: AligNet vs the control is `control_caveats`' check)."""
    overall = results[
        (results["level"] == "overall") & (results["model"] != baseline) & ~results["model"].isin(CONTROLS)
    ]
    return [
        caveat(
            GAIN_INCLUDES_ZERO,
            row.model,
            f"{row.model}'s gain over {baseline} on {_block(row)} is "
            f"{_interval(row.gain, row.gain_ci_low, row.gain_ci_high)}: its 95% CI includes 0, so these "
            f"{row.n_judgments} held-out judgments cannot tell it from {baseline}",
            "more participants (more held-out judgments per triplet) or more images narrow the interval",
        )
        for row in overall.itertuples()
        if GAIN_CI_INCLUDES_ZERO in tuple(row.flags)
    ]


def control_caveats(versus_control: pd.DataFrame) -> list[dict[str, str]]:
    """From a table scoring UnAligNet first and AligNet second (so AligNet's gain is over UnAligNet, paired):
    one caveat per block where the two cannot be told apart."""
    rows = versus_control[(versus_control["level"] == "overall") & (versus_control["model"] == "AligNet")]
    return [
        caveat(
            CONTROL_INDISTINGUISHABLE,
            "AligNet",
            f"AligNet minus UnAligNet on {_block(row)} is "
            f"{_interval(row.gain, row.gain_ci_low, row.gain_ci_high)}: the human-aligned labels made no "
            "measurable difference over the raw backbone's",
            "more judgments (a better-fitted teacher), more images in the pool, or more student steps "
            "(student.epochs)",
        )
        for row in rows.itertuples()
        if row.gain_ci_low <= 0 <= row.gain_ci_high
    ]


def learning_caveats(name: str, metrics: Mapping[str, Any]) -> list[dict[str, str]]:
    """A student run (its metrics) that did not learn: zero or flat loss on its pseudo-labels, or no gain in
    agreement with them, each measured on all its labels before and after training."""
    loss_start, loss_end = _number(metrics, "label_loss_start"), _number(metrics, "label_loss_end")
    before, after = _number(metrics, "teacher_agreement_start"), _number(metrics, "teacher_agreement_end")
    steps = metrics.get("steps")
    more = "more images (more distinct pseudo-labelled triplets) or more steps (student.epochs)"
    if loss_end < ZERO_LOSS:  # NaN (not measured) fails every comparison: nothing is claimed
        return [
            caveat(
                DID_NOT_LEARN,
                name,
                f"{name}'s loss on its pseudo-labels is {loss_end:.2e}, i.e. 0: its targets carry nothing to "
                "learn (near-uniform, or matched before training)",
                "check the teacher's temperature and the spread of the pseudo-labels; " + more,
            )
        ]
    reasons = []
    if loss_end > (1 - MIN_LOSS_DROP) * loss_start:
        reasons.append(f"its loss stayed flat ({loss_start:.4f} -> {loss_end:.4f} over {steps} steps)")
    if after < before + MIN_AGREEMENT_GAIN and before < AGREEMENT_ALREADY_HIGH:
        reasons.append(f"its agreement with its teacher's labels went {before:.3f} -> {after:.3f}")
    if not reasons:
        return []
    return [caveat(DID_NOT_LEARN, name, f"{name} did not learn: " + " and ".join(reasons), more)]


def _number(metrics: Mapping[str, Any], key: str) -> float:
    """A metric as a float; NaN when missing (an older run) or not a number, so no comparison holds."""
    value: Any = metrics.get(key)
    return float(value) if _finite(value) else float("nan")


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def category_silhouettes(
    embeddings: Mapping[str, np.ndarray], categories: np.ndarray, seed: int = 0
) -> dict[str, float]:
    """Cosine silhouette of each representation's images by category (a seeded sample of at most
    ``SILHOUETTE_SAMPLE`` images, the same for every representation); NaN without category structure."""
    from alignment.reorganisation import cosine_silhouette

    categories = np.asarray(categories).astype(str)
    rows = np.arange(len(categories))
    if len(rows) > SILHOUETTE_SAMPLE:
        rows = np.sort(np.random.default_rng(seed).choice(rows, SILHOUETTE_SAMPLE, replace=False))
    return {
        name: cosine_silhouette(np.asarray(values)[rows], categories[rows])
        for name, values in embeddings.items()
    }


def structure_caveats(silhouettes: Mapping[str, float], baseline: str = "base") -> list[dict[str, str]]:
    """Representations whose category structure collapsed relative to ``baseline``."""
    base = silhouettes.get(baseline, float("nan"))
    if not _finite(base) or base < MIN_BASE_SILHOUETTE:
        return []
    return [
        caveat(
            STRUCTURE_COLLAPSED,
            name,
            f"{name}'s map lost its category structure: silhouette {value:.2f} against "
            f"{baseline}'s {base:.2f}",
            "more judgments (a better-constrained teacher), a stronger teacher.reg_weight or fewer student "
            "steps; look at the Maps page before using this model",
        )
        for name, value in silhouettes.items()
        if name != baseline and _finite(value) and value < COLLAPSE_RATIO * base
    ]


def loop_caveats(db: Database, study: str, runs: Mapping[str, int], similarity: str) -> dict[str, Any]:
    """The caveats of a finished loop (its child runs by `loop` metric key) and the category silhouettes
    they rest on: `{"caveats": [...], "category_silhouette": {model: value}}`."""
    from db.runs import get_run
    from workflows.pipeline.data import load_embeddings, study_images
    from workflows.pipeline.evaluation import Representation, evaluate_representations, read_results

    found = gain_caveats(read_results(get_run(db, runs["eval_run"])))
    controls = [
        Representation("UnAligNet", runs["unalignet_run"]),
        Representation("AligNet", runs["alignet_run"]),
    ]
    versus, _ = evaluate_representations(
        db,
        study,
        controls,
        runs["teacher_run"],
        similarity=similarity,  # type: ignore[arg-type]
    )
    found += control_caveats(versus)
    for name, key in (("AligNet", "alignet_run"), ("UnAligNet", "unalignet_run")):
        found += learning_caveats(name, get_run(db, runs[key]).metrics)
    images = study_images(db, study)
    sources = {
        "base": (runs["teacher_run"], "raw_embeddings"),
        "teacher": (runs["teacher_run"], "embeddings"),
        "AligNet": (runs["alignet_run"], "embeddings"),
        "UnAligNet": (runs["unalignet_run"], "embeddings"),
    }
    loaded = {
        name: load_embeddings(get_run(db, run_id), artifact) for name, (run_id, artifact) in sources.items()
    }
    common = images.stimulus_ids  # the stages store study order; rows of images added since are left out
    for _, ids in loaded.values():
        common = np.intersect1d(common, ids)
    embeddings = {name: values[_rows_of(ids, common)] for name, (values, ids) in loaded.items()}
    categories = images.table.set_index("id").loc[common, "category"].to_numpy()
    silhouettes = category_silhouettes(embeddings, categories)
    return {
        "caveats": found + structure_caveats(silhouettes),
        "category_silhouette": {
            name: round(value, 4) for name, value in silhouettes.items() if _finite(value)
        },
    }


def _rows_of(ids: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Row positions of ``wanted`` ids (all present) in ``ids``, whatever their order."""
    order = np.argsort(ids, kind="stable")
    return order[np.searchsorted(ids, wanted, sorter=order)]
