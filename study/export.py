"""Study exports: THINGS-compatible triplets, a jsPsych-like long CSV (one row per trial), and Parquet.

Only consenting participants are exported (see `load_responses`). Each trial row has an `outcome`:
answered, timed_out, or unavailable (an image the server could not serve; such rows are no judgments and
are not in the THINGS table). Participant ids are pseudonymised with the study's salt (HMAC-SHA256, see `study.judgments.pseudonymise`)
unless raw ids are asked for; excluded participants are left out unless asked for; simulated participants
are labelled (`is_simulated`) in every format. Both CSV formats read back with
`study.judgments_import.import_judgments_csv` as the same judgments.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from common.atomic import atomic_path
from db.engine import Database
from study.judgments import load_anchor_judgments, load_judgments, load_responses, load_stimuli

ExportFormat = Literal["things", "jspsych", "parquet", "anchor"]
FORMATS: tuple[str, ...] = ("things", "jspsych", "parquet", "anchor")


@dataclass(frozen=True)
class ExportSummary:
    path: Path
    format: str
    n_rows: int
    n_participants: int


def things_table(
    db: Database,
    slug: str,
    *,
    include_excluded: bool = False,
    include_simulated: bool = True,
    raw_ids: bool = False,
) -> pd.DataFrame:
    """Answered trials as THINGS triplets: image1..3 are 0-based indices into the stimulus set ordered by
    name, the odd one out last; plus names, RT (ms), subject_id, trial_nr, level, kind, is_simulated."""
    judgments = load_judgments(
        db, slug, include_excluded=include_excluded, include_simulated=include_simulated
    )
    stimuli = load_stimuli(db, slug)
    index = {sid: i for i, sid in enumerate(stimuli.sort_values("name")["id"])}
    names = stimuli.set_index("id")["name"]
    table = pd.DataFrame({f"image{k + 1}": judgments[f"stim{k}"].map(index) for k in range(3)})
    for k in range(3):
        table[f"image{k + 1}_name"] = judgments[f"stim{k}"].map(names)
    table["RT"] = judgments["rt_ms"]
    table["subject_id"] = judgments["external_id" if raw_ids else "subject"]
    table["trial_nr"] = judgments["trial_index"]
    for column in ("level", "kind", "is_simulated"):
        table[column] = judgments[column]
    return table


def anchor_table(
    db: Database,
    slug: str,
    *,
    include_excluded: bool = False,
    include_simulated: bool = True,
    raw_ids: bool = False,
) -> pd.DataFrame:
    """Answered anchor trials (salmon-like): `head, close, far` stimulus names (the head was judged more
    similar to `close`), RT, subject_id, trial_nr, kind, is_simulated; reads back with the importer."""
    judgments = load_anchor_judgments(
        db, slug, include_excluded=include_excluded, include_simulated=include_simulated
    )
    names = load_stimuli(db, slug).set_index("id")["name"]
    table = pd.DataFrame({role: judgments[role].map(names) for role in ("head", "close", "far")})
    table["rt"] = judgments["rt_ms"]
    table["subject_id"] = judgments["external_id" if raw_ids else "subject"]
    table["trial_nr"] = judgments["trial_index"]
    for column in ("kind", "is_simulated"):
        table[column] = judgments[column]
    return table


def trial_table(
    db: Database,
    slug: str,
    *,
    include_excluded: bool = False,
    include_simulated: bool = True,
    raw_ids: bool = False,
) -> pd.DataFrame:
    """One row per stored trial response (timeouts and practice included), jsPsych style: rt, response
    (chosen display position), trial_index, time_elapsed, images in stored order and as shown."""
    responses = load_responses(db, slug)
    keep = pd.Series(True, index=responses.index)
    if not include_excluded:
        keep &= ~responses["excluded"]
    if not include_simulated:
        keep &= ~responses["is_simulated"]
    responses = responses[keep].reset_index(drop=True)
    names = load_stimuli(db, slug).set_index("id")["name"]

    def name(column: str) -> pd.Series:
        return responses[column].map(names)

    return pd.DataFrame(
        {
            "subject_id": responses["external_id" if raw_ids else "subject"],
            "is_simulated": responses["is_simulated"],
            "excluded": responses["excluded"],
            "status": responses["status"],
            "trial_index": responses["trial_index"],
            "trial_type": "odd-one-out",
            "kind": responses["kind"],
            "level": responses["level"],
            "block": responses["block"],
            "rt": responses["rt_ms"],
            "response": responses["chosen_position"].astype("Int64"),
            "timed_out": responses["timed_out"],
            "unavailable": responses["unavailable"],
            "outcome": _outcome(responses),
            "time_elapsed": _time_elapsed(responses),
            "image1": name("stim0"),
            "image2": name("stim1"),
            "image3": name("stim2"),
            "odd_known": responses["odd_known"],
            "shown_left": name("shown_left"),
            "shown_middle": name("shown_middle"),
            "shown_right": name("shown_right"),
            "odd_one_out": name("chosen_stimulus_id"),
            "catch_correct": _catch_correct(responses),
            "input_modality": responses["input_modality"],
            "client_onset_ms": responses["client_onset_ms"],
            "server_received_at": responses["server_received_at"],
            "stim0_id": responses["stim0"],
            "stim1_id": responses["stim1"],
            "stim2_id": responses["stim2"],
            "chosen_stimulus_id": responses["chosen_stimulus_id"].astype("Int64"),
        }
    )


def _outcome(responses: pd.DataFrame) -> pd.Series:
    outcome = np.where(responses["timed_out"], "timed_out", "answered")
    return pd.Series(np.where(responses["unavailable"], "unavailable", outcome), index=responses.index)


def _time_elapsed(responses: pd.DataFrame) -> pd.Series:
    """ms from the participant's first trial onset to this response (server receipt times as a fallback)."""
    onset = responses["client_onset_ms"] + responses["rt_ms"].fillna(0)
    first = responses.groupby("participant_id")["client_onset_ms"].transform("min")
    received = pd.to_datetime(responses["server_received_at"], utc=True)
    fallback = (
        received - received.groupby(responses["participant_id"]).transform("min")
    ).dt.total_seconds() * 1000
    return (onset - first).fillna(fallback).round(1)


def _catch_correct(responses: pd.DataFrame) -> pd.Series:
    known = (responses["kind"] == "catch") & responses["odd_known"]
    correct = (responses["chosen_stimulus_id"] == responses["stim2"]).fillna(False)
    return pd.Series(np.where(known, correct, None), dtype="boolean")


def export_study(
    db: Database,
    slug: str,
    fmt: ExportFormat,
    out_path: str | Path,
    *,
    include_excluded: bool = False,
    include_simulated: bool = True,
    raw_ids: bool = False,
) -> ExportSummary:
    """Write one export file; it appears complete or not at all (written to a temporary file, then renamed)."""
    if fmt not in FORMATS:
        raise ValueError(f"export format {fmt!r} is unknown; expected one of {list(FORMATS)}")
    build = {"things": things_table, "anchor": anchor_table}.get(fmt, trial_table)
    table = build(
        db, slug, include_excluded=include_excluded, include_simulated=include_simulated, raw_ids=raw_ids
    )
    out_path = Path(out_path)
    with atomic_path(out_path) as temporary:
        if fmt == "parquet":
            table.to_parquet(temporary, index=False)
        else:
            table.to_csv(temporary, index=False)
    return ExportSummary(out_path, fmt, len(table), int(table["subject_id"].nunique()))
