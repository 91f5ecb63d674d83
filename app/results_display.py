"""The evaluation table as people read it: the stored numbers (workflows.pipeline.evaluation.read_results)
turned into labelled cells such as "0.812 [0.780, 0.840]", with each flag noted in the cell whose number it
qualifies. Shared by the Maps page and the CLI printer; the only place the table's labels live. Also the
runs table's columns for nested run metrics, and a loop's caveats as lines (workflows/pipeline/caveats.py)."""

from __future__ import annotations

import math

import pandas as pd

from alignment.model_comparison import (
    CEILING_FROM_FEW_TRIPLETS,
    GAIN_CI_INCLUDES_ZERO,
    MIN_CEILING_TRIPLETS,
    NORMALISED_ABOVE_CEILING,
)

TASK_LABELS = {"odd_one_out": "odd-one-out", "anchor": "anchor (close vs far)"}
HELD_OUT_LABELS = {
    "seen": "seen images",
    "unseen": "unseen images",
    "unseen_subjects": "unseen subjects",
    "all": "all judgments",
}


def interval(value: float, low: float, high: float, *, signed: bool = False, digits: int = 3) -> str:
    """`0.812 [0.780, 0.840]` (`+0.012 [-0.010, +0.034]` when signed); empty when the value is undefined."""
    if not math.isfinite(value):
        return ""
    number = f"{{:{'+' if signed else ''}.{digits}f}}".format
    return f"{number(value)} [{number(low)}, {number(high)}]"


def _plain(value: float, digits: int) -> str:
    return f"{value:.{digits}f}" if math.isfinite(value) else ""


def _gain_cell(row) -> str:
    cell = interval(row.gain, row.gain_ci_low, row.gain_ci_high, signed=True)
    return f"{cell} (CI includes 0)" if GAIN_CI_INCLUDES_ZERO in row.flags else cell


def _normalised_cell(row) -> str:
    if NORMALISED_ABOVE_CEILING in row.flags:  # not a real score above 1: the ceiling is underestimated
        return f"> 1 (above the measured ceiling {row.noise_ceiling:.3f}: ceiling unreliable)"
    cell = _plain(row.normalised, 2)
    if CEILING_FROM_FEW_TRIPLETS in row.flags:
        return f"{cell} (ceiling from {row.ceiling_triplets} triplets)"
    return cell


def _ceiling_cell(row) -> str:
    cell = interval(row.noise_ceiling, row.ceiling_ci_low, row.ceiling_ci_high)
    return f"{cell} ({row.ceiling_triplets} triplets)" if cell and row.ceiling_triplets else cell


def held_out_label(task: str, held_out: str) -> str:
    """e.g. "odd-one-out · unseen images": which judgments a row is scored on."""
    return f"{TASK_LABELS.get(task, task)} · {HELD_OUT_LABELS.get(held_out, held_out)}"


def display_table(results: pd.DataFrame, *, detail: bool = False) -> pd.DataFrame:
    """One row per test block, level and representation (seen- and unseen-image blocks side by side);
    `detail` adds the columns the CLI shows (similarity, distinct triplets, noise ceiling with its CI, ρ with
    human choice entropy, ECE)."""
    rows = []
    for row in results.itertuples(index=False):
        cells = {
            "held out": held_out_label(row.task, row.held_out),
            "level": row.level,
            "representation": row.model,
            "n": int(row.n_judgments),
            "images": int(row.n_images),
            "accuracy [95% CI]": interval(row.accuracy, row.ci_low, row.ci_high),
            "gain [95% CI]": _gain_cell(row),
            "normalised": _normalised_cell(row),
            "ρ(H,RT)": _plain(row.rho_rt, 2),
        }
        if detail:
            cells |= {
                "similarity": row.similarity,
                "triplets": int(row.n_triplets),
                "ceiling [95% CI]": _ceiling_cell(row),
                "ρ(H,entropy)": _plain(row.rho_human_entropy, 2),
                "ECE": _plain(row.ece, 3),
            }
        rows.append(cells)
    return pd.DataFrame(rows)


def metric_columns(metrics: dict, prefix: str = "") -> dict:
    """Nested run metrics as one column each, e.g. {"gain": {"AligNet": {"overall": 0.1}}} -> a column
    "gain · AligNet · overall"."""
    columns = {}
    for key, value in metrics.items():
        label = f"{prefix} · {key}" if prefix else str(key)
        columns |= metric_columns(value, label) if isinstance(value, dict) else {label: value}
    return columns


def live_agreement_display(table: pd.DataFrame) -> pd.DataFrame:
    """`workflows.live_agreement.live_agreement` as cells: each model's agreement and the human ceiling as
    "0.612 [0.580, 0.640]", the ceiling with the number of triplets it rests on."""
    shown = table.copy()
    for column in shown.columns:
        if column in ("level", "answers", "triplets", "ceiling triplets"):
            continue
        shown[column] = shown[column].map(lambda cell: interval(*cell))
    shown["human ceiling"] = [
        f"{cell} ({n} triplets{FEW_CEILING_TRIPLETS if n < MIN_CEILING_TRIPLETS else ''})" if cell else ""
        for cell, n in zip(shown["human ceiling"], table["ceiling triplets"], strict=True)
    ]
    return shown.drop(columns="ceiling triplets")


FEW_CEILING_TRIPLETS = ": too few to be a ceiling"
LIVE_AGREEMENT_NOT_HELD_OUT = (
    "Not a held-out score: a teacher was fitted on part of these answers, so its agreement here is "
    "optimistic; the held-out evaluation (seen and unseen images) is on the Maps page and in the run."
)


def caveat_lines(metrics: dict) -> list[str]:
    """A run's caveats (results that mean nothing), one line each: the reason, then what would help."""
    return [f"{c['reason']} — would help: {c['help']}" for c in metrics.get("caveats") or []]
