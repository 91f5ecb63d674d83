"""The before/after table (AligNet's core comparison): base backbone vs AligNet vs UnAligNet students on
held-out human triplets, per Levels type, with noise-ceiling-normalised accuracy and entropy–RT correlation.

Every model is scored by ``alignment.triplet_metrics.evaluate_triplets`` on the same triplets with the same similarity
(dot by default: the students are trained on head dot products). Entropy needs a temperature and raw
embeddings have arbitrary scale, so each model gets the temperature at which its mean choice entropy on these
triplets equals the humans' mean choice entropy (or ln(3)/2 when that is unknown); accuracy does not depend on
it, and the Spearman ρ compares the models' *rankings* of uncertainty on a common entropy scale.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from alignment.conventions import check_triplets, pair_similarities
from alignment.pseudolabels import temperature_for_entropy
from alignment.triplet_metrics import EvalReport, bootstrap_interval, evaluate_triplets


@dataclass(frozen=True)
class BeforeAfter:
    """One ``EvalReport`` per model (insertion order = column order, the first model is the baseline)."""

    reports: dict[str, EvalReport]
    temperatures: dict[str, float]

    def table(self):
        """Long pandas table: one row per (model, level) with every metric and its CI."""
        import pandas as pd

        frames = [
            report.table().assign(model=name, temperature=self.temperatures[name])
            for name, report in self.reports.items()
        ]
        return pd.concat(frames, ignore_index=True)

    def summary(self):
        """Wide table for printing: per level, each model's accuracy [95% CI], normalised accuracy and ρ(H, RT)."""
        import pandas as pd

        rows = {}
        for name, report in self.reports.items():
            for row in report.rows:
                cells = rows.setdefault(row["level"], {"level": row["level"], "n": row["n"]})
                cells[f"{name} acc"] = (
                    f"{row['accuracy']:.3f} [{row['accuracy_low']:.3f}, {row['accuracy_high']:.3f}]"
                )
                cells[f"{name} norm"] = f"{row['normalised']:.2f}"
                cells[f"{name} ρ(H,RT)"] = f"{row['rho_entropy_rt']:.2f}"
        for name, per_level in self.gain_intervals().items():
            for level, (gain, low, high) in per_level.items():
                rows[level][f"{name} Δ"] = f"{gain:+.3f} [{low:+.3f}, {high:+.3f}]"
        return pd.DataFrame(list(rows.values()))

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
        result = {}
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
    embeddings: np.ndarray, triplets: np.ndarray, target: float, similarity: str = "dot"
) -> float:
    """Temperature at which the model's mean choice entropy on ``triplets`` equals ``target``."""
    return temperature_for_entropy(
        pair_similarities(np.asarray(embeddings, np.float64), triplets, similarity), target
    )


def compare_models(
    embeddings: Mapping[str, np.ndarray],
    triplets: np.ndarray,
    *,
    levels: Sequence[str] | None = None,
    human_rt: Sequence[float] | None = None,
    human_entropy: Sequence[float] | None = None,
    noise_ceiling: float | Mapping[str, float] | None = None,
    similarity: str = "dot",
    groups: Sequence | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> BeforeAfter:
    """Evaluate each named embedding [n_images, D] (same image rows) on held-out human ``triplets``
    (odd one out last), e.g. ``{"base": features, "AligNet": ..., "UnAligNet": ...}``. ``groups`` (a
    triplet key per judgment): each distinct triplet counts once (see ``alignment.triplet_metrics``)."""
    if not embeddings:
        raise ValueError("compare_models needs at least one named embedding")
    n_images = {len(e) for e in embeddings.values()}
    if len(n_images) != 1:
        raise ValueError(
            f"all embeddings must have one row per image, in the same order; got row counts {n_images}"
        )
    triplets = check_triplets(triplets, n_images.pop())
    known = np.asarray(human_entropy, np.float64) if human_entropy is not None else np.array([np.nan])
    target = float(np.nanmean(known)) if np.isfinite(known).any() else float(np.log(3) / 2)
    target = min(max(target, 1e-3), np.log(3) - 1e-3)
    temperatures, reports = {}, {}
    for name, values in embeddings.items():
        temperatures[name] = entropy_matched_temperature(values, triplets, target, similarity)
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
        )
    return BeforeAfter(reports, temperatures)
