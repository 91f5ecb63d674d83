"""The before/after table (AligNet's core comparison): base backbone vs AligNet vs UnAligNet students on
held-out human triplets, per Levels type, with noise-ceiling-normalised accuracy and entropy–RT correlation.

Every model is scored by ``alignment.triplet_metrics.evaluate_triplets`` on the same triplets with the same
similarity (dot by default: the students are trained on head dot products). Entropy needs a temperature and
raw embeddings have arbitrary scale, so each model gets the temperature at which its mean choice entropy on
these triplets equals the humans' mean choice entropy (or ln(3)/2 when that is unknown); accuracy does not
depend on it, and the Spearman ρ compares the models' *rankings* of uncertainty on a common entropy scale.

``BeforeAfter.results()`` is the table as it is stored and passed on: one ``ResultRow`` of plain numbers and
flags per level and model. Labels, intervals and flag notes are for whoever shows it (the Maps page, the CLI).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields

import numpy as np
from numpy.typing import ArrayLike

from alignment.conventions import Similarity, anchor_similarities, check_triplets, pair_similarities
from alignment.pseudolabels import temperature_for_entropy
from alignment.triplet_metrics import EvalReport, bootstrap_interval, evaluate_triplets

GAIN_CI_INCLUDES_ZERO = "gain_ci_includes_zero"
"""Flag: the paired 95% CI of the accuracy gain over the baseline includes 0 (no clear improvement)."""
CEILING_FROM_FEW_TRIPLETS = "ceiling_from_few_triplets"
"""Flag: the normalised accuracy divides by a noise ceiling measured on fewer than ``MIN_CEILING_TRIPLETS``
repeated triplets, so it is too uncertain to compare models on."""
MIN_CEILING_TRIPLETS = 20  # a mean of 20 leave-one-out scores (SD ~0.3) has a standard error of ~0.07
NORMALISED_ABOVE_CEILING = "normalised_above_ceiling"
"""Flag: the model beats the measured noise ceiling (normalised accuracy > 1), which means the ceiling is
underestimated (too few or unrepresentative repeated triplets), not a super-human model."""
TASKS = ("odd_one_out", "anchor")
HELD_OUT = ("seen", "unseen", "unseen_subjects", "all")
"""Which held-out judgments a row is scored on: ``seen`` images (random held-out judgments of images the
fit also trained on), ``unseen`` images (object-disjoint: no image of these judgments was in training),
``unseen_subjects`` (subject-disjoint: judgments, of seen images, by people none of whose judgments was in
training), ``all`` (whatever the caller passed, e.g. every judgment of a study)."""


@dataclass(frozen=True)
class ResultRow:
    """One model at one Levels type (or ``overall``): plain numbers, NaN where undefined, and flags.

    The stored form of the before/after table; readers format it (labels, intervals, flag notes)."""

    level: str
    model: str
    task: str  # odd_one_out (chance 1/3) or anchor (agreement with s(head, close) > s(head, far), chance 1/2)
    held_out: str  # seen | unseen | unseen_subjects | all (see HELD_OUT)
    similarity: str
    temperature: float
    n_judgments: int
    n_triplets: int  # distinct triplets (= judgments when no groups were given)
    n_images: int  # distinct images in these judgments
    accuracy: float
    ci_low: float
    ci_high: float
    gain: float  # accuracy minus the baseline's; NaN for the baseline
    gain_ci_low: float
    gain_ci_high: float
    noise_ceiling: float
    ceiling_ci_low: float
    ceiling_ci_high: float
    ceiling_triplets: int  # repeated triplets the ceiling was measured on; 0 when unknown
    normalised: float
    normalised_ci_low: float
    normalised_ci_high: float
    rho_rt: float  # Spearman of model choice entropy with the triplet's median human RT
    rho_rt_ci_low: float
    rho_rt_ci_high: float
    rho_human_entropy: float  # ... with the humans' choice entropy
    ece: float
    flags: tuple[str, ...] = ()


@dataclass(frozen=True)
class BeforeAfter:
    """One ``EvalReport`` per model (insertion order = column order, the first model is the baseline)."""

    reports: dict[str, EvalReport]
    temperatures: dict[str, float]
    ceiling_triplets: dict[str, int] = field(default_factory=dict)
    ceiling_intervals: dict[str, tuple[float, float]] = field(default_factory=dict)
    task: str = "odd_one_out"
    held_out: str = "all"

    def results(self) -> list[ResultRow]:
        """The table, level by level (in the reports' level order), each model in insertion order."""
        gains = self.gain_intervals()
        by_model = {name: {row["level"]: row for row in report.rows} for name, report in self.reports.items()}
        levels = [row["level"] for row in next(iter(self.reports.values())).rows]
        return [
            self._result(level, name, by_model[name][level], gains.get(name, {}).get(level))
            for level in levels
            for name in self.reports
        ]

    def results_table(self):
        """``results()`` as a pandas DataFrame, one column per ``ResultRow`` field."""
        import pandas as pd

        return pd.DataFrame(
            [asdict(row) for row in self.results()], columns=[f.name for f in fields(ResultRow)]
        )

    def _result(
        self, level: str, model: str, row: dict, gain: tuple[float, float, float] | None
    ) -> ResultRow:
        nan = float("nan")
        gain_value, gain_low, gain_high = gain if gain is not None else (nan, nan, nan)
        ceiling_triplets = int(self.ceiling_triplets.get(level, 0))
        flags = _flags(gain, row["normalised"], ceiling_triplets)
        ceiling_low, ceiling_high = self.ceiling_intervals.get(level, (nan, nan))
        return ResultRow(
            level=level,
            model=model,
            task=self.task,
            held_out=self.held_out,
            similarity=self.reports[model].similarity,
            temperature=self.temperatures[model],
            n_judgments=int(row["n"]),
            n_triplets=int(row["n_groups"]),
            n_images=int(row["n_images"]),
            accuracy=row["accuracy"],
            ci_low=row["accuracy_low"],
            ci_high=row["accuracy_high"],
            gain=gain_value,
            gain_ci_low=gain_low,
            gain_ci_high=gain_high,
            noise_ceiling=row["noise_ceiling"],
            ceiling_ci_low=ceiling_low,
            ceiling_ci_high=ceiling_high,
            ceiling_triplets=ceiling_triplets,
            normalised=row["normalised"],
            normalised_ci_low=row["normalised_low"],
            normalised_ci_high=row["normalised_high"],
            rho_rt=row["rho_entropy_rt"],
            rho_rt_ci_low=row["rho_entropy_rt_low"],
            rho_rt_ci_high=row["rho_entropy_rt_high"],
            rho_human_entropy=row["rho_entropy_human_entropy"],
            ece=row["ece"],
            flags=flags,
        )

    def gains(self, baseline: str | None = None) -> dict[str, dict[str, float]]:
        """Accuracy minus the baseline's, per model and level (the improvement the table claims)."""
        return {
            name: {level: values[0] for level, values in per_level.items()}
            for name, per_level in self.gain_intervals(baseline).items()
        }

    def gain_intervals(self, baseline: str | None = None) -> dict[str, dict[str, tuple[float, float, float]]]:
        """Per model and level: (accuracy gain over the baseline, 95% CI low, high). The CI is a paired
        bootstrap: every model was scored on the same resamples of the held-out triplets."""
        baseline = baseline or next(iter(self.reports))
        base = self.reports[baseline]
        base_accuracy = {row["level"]: row["accuracy"] for row in base.rows}
        result: dict[str, dict[str, tuple[float, float, float]]] = {}
        for name, report in self.reports.items():
            if name == baseline:
                continue
            result[name] = {}
            for row in report.rows:
                level = row["level"]
                low, high = bootstrap_interval(report.accuracy_samples[level] - base.accuracy_samples[level])
                result[name][level] = (row["accuracy"] - base_accuracy[level], low, high)
        return result


def entropy_matched_temperature(
    embeddings: np.ndarray,
    triplets: np.ndarray,
    target: float,
    similarity: Similarity = "dot",
    task: str = "odd_one_out",
) -> float:
    """Temperature at which the model's mean choice entropy on ``triplets`` (or anchor rows) equals
    ``target``."""
    similarities = anchor_similarities if task == "anchor" else pair_similarities
    return temperature_for_entropy(
        similarities(np.asarray(embeddings, np.float64), triplets, similarity), target
    )


def compare_models(
    embeddings: Mapping[str, np.ndarray],
    triplets: np.ndarray,
    *,
    levels: Sequence[str] | None = None,
    human_rt: ArrayLike | None = None,
    human_entropy: ArrayLike | None = None,
    noise_ceiling: float | Mapping[str, float] | None = None,
    ceiling_triplets: Mapping[str, int] | None = None,
    ceiling_intervals: Mapping[str, tuple[float, float]] | None = None,
    similarity: Similarity = "dot",
    groups: Sequence | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    task: str = "odd_one_out",
    held_out: str = "all",
) -> BeforeAfter:
    """Evaluate each named embedding [n_images, D] (same image rows) on held-out human ``triplets``
    (odd one out last), e.g. ``{"base": features, "AligNet": ..., "UnAligNet": ...}``. ``groups`` (a
    triplet key per judgment): each distinct triplet counts once (see ``alignment.triplet_metrics``).
    ``ceiling_triplets`` (per level name and ``"overall"``): how many repeated triplets each noise ceiling
    was measured on, so a normalised accuracy over too few of them is flagged; ``ceiling_intervals`` their 95%
    CIs. ``task="anchor"``: ``triplets`` are anchor rows (head, close, far); ``held_out`` labels the rows
    (``HELD_OUT``)."""
    triplets = _checked_rows(embeddings, triplets, task, held_out)
    target = _entropy_target(human_entropy, task)
    temperatures: dict[str, float] = {}
    reports: dict[str, EvalReport] = {}
    for name, values in embeddings.items():
        temperatures[name] = entropy_matched_temperature(values, triplets, target, similarity, task)
        reports[name] = evaluate_triplets(
            values,
            triplets,
            levels=levels,
            human_rt=human_rt,
            human_entropy=human_entropy,
            noise_ceiling=noise_ceiling,
            similarity=similarity,
            temperature=temperatures[name],
            groups=groups,
            n_boot=n_boot,
            seed=seed,
            task=task,
        )
    return BeforeAfter(
        reports, temperatures, dict(ceiling_triplets or {}), dict(ceiling_intervals or {}), task, held_out
    )


def _checked_rows(
    embeddings: Mapping[str, np.ndarray], triplets: np.ndarray, task: str, held_out: str
) -> np.ndarray:
    """The held-out rows, checked against the embeddings (one row per image, the same count in each)."""
    if task not in TASKS or held_out not in HELD_OUT:
        raise ValueError(
            f"task must be one of {TASKS} and held_out one of {HELD_OUT}; got {task!r}, {held_out!r}"
        )
    if not embeddings:
        raise ValueError("compare_models needs at least one named embedding")
    n_images = {len(e) for e in embeddings.values()}
    if len(n_images) != 1:
        raise ValueError(
            f"all embeddings must have one row per image, in the same order; got row counts {n_images}"
        )
    return check_triplets(triplets, n_images.pop(), "anchor" if task == "anchor" else "triplet")


def _entropy_target(human_entropy: ArrayLike | None, task: str) -> float:
    """The choice entropy every model's temperature is matched to: the humans' mean where known, else half
    the maximum; kept strictly inside (0, maximum) so that a temperature exists."""
    max_entropy = np.log(2 if task == "anchor" else 3)
    known = np.asarray(human_entropy, np.float64) if human_entropy is not None else np.array([np.nan])
    target = float(np.nanmean(known)) if np.isfinite(known).any() else float(max_entropy / 2)
    return min(max(target, 1e-3), max_entropy - 1e-3)


def _flags(
    gain: tuple[float, float, float] | None, normalised: float, ceiling_triplets: int
) -> tuple[str, ...]:
    """What a reader of the row should know: a gain whose CI includes zero, a normalised accuracy from a
    ceiling measured on too few repeated triplets, or one above the ceiling."""
    flags = []
    if gain is not None and gain[1] <= 0 <= gain[2]:
        flags.append(GAIN_CI_INCLUDES_ZERO)
    if np.isfinite(normalised) and 0 < ceiling_triplets < MIN_CEILING_TRIPLETS:
        flags.append(CEILING_FROM_FEW_TRIPLETS)
    if np.isfinite(normalised) and normalised > 1:
        flags.append(NORMALISED_ABOVE_CEILING)
    return tuple(flags)
