"""Caveats (workflows/pipeline/caveats.py): each check fires on a forced case, with a reason and what would
help, and stays quiet where the result holds."""

from __future__ import annotations

import numpy as np
import pandas as pd

from alignment.model_comparison import GAIN_CI_INCLUDES_ZERO
from workflows.pipeline.caveats import (
    CONTROL_INDISTINGUISHABLE,
    DID_NOT_LEARN,
    GAIN_INCLUDES_ZERO,
    STRUCTURE_COLLAPSED,
    category_silhouettes,
    control_caveats,
    gain_caveats,
    learning_caveats,
    structure_caveats,
)


def _row(model, gain, low, high, level="overall", held_out="seen"):
    flags = (GAIN_CI_INCLUDES_ZERO,) if low <= 0 <= high else ()
    return dict(
        task="odd_one_out",
        held_out=held_out,
        level=level,
        model=model,
        n_judgments=40,
        gain=gain,
        gain_ci_low=low,
        gain_ci_high=high,
        flags=flags,
    )


def test_a_gain_whose_ci_includes_zero_is_a_caveat_and_a_clear_gain_is_not():
    table = pd.DataFrame(
        [
            _row("base", np.nan, np.nan, np.nan),
            _row("teacher", 0.08, 0.03, 0.13),
            _row("AligNet", 0.01, -0.02, 0.04),
            _row("AligNet", 0.00, -0.05, 0.05, level="within_class"),  # per level: the table's cell says it
            _row("UnAligNet", 0.00, -0.02, 0.02),  # the control is meant not to gain: no caveat
        ]
    )
    found = gain_caveats(table)
    assert [(c["check"], c["subject"]) for c in found] == [(GAIN_INCLUDES_ZERO, "AligNet")]
    assert (
        "+0.010 [-0.020, +0.040]" in found[0]["reason"] and "odd-one-out · seen images" in found[0]["reason"]
    )
    assert "more participants" in found[0]["help"]


def test_alignet_indistinguishable_from_its_control_is_a_caveat():
    same = pd.DataFrame([_row("UnAligNet", np.nan, np.nan, np.nan), _row("AligNet", 0.004, -0.01, 0.02)])
    found = control_caveats(same)
    assert [c["check"] for c in found] == [CONTROL_INDISTINGUISHABLE]
    assert "AligNet minus UnAligNet" in found[0]["reason"] and "+0.004" in found[0]["reason"]
    apart = pd.DataFrame([_row("UnAligNet", np.nan, np.nan, np.nan), _row("AligNet", 0.05, 0.02, 0.08)])
    assert control_caveats(apart) == []


def test_a_student_that_did_not_learn_is_a_caveat():
    learned = dict(
        steps=240,
        label_loss_start=0.12,
        label_loss_end=0.05,
        teacher_agreement_start=0.55,
        teacher_agreement_end=0.85,
    )
    assert learning_caveats("AligNet", learned) == []
    zero = learning_caveats("AligNet", {**learned, "label_loss_end": 0.0, "label_loss_start": 0.0})
    assert [c["check"] for c in zero] == [DID_NOT_LEARN] and "i.e. 0" in zero[0]["reason"]
    flat = learning_caveats("UnAligNet", {**learned, "label_loss_end": 0.118})
    assert "loss stayed flat (0.1200 -> 0.1180 over 240 steps)" in flat[0]["reason"]
    stuck = learning_caveats("AligNet", {**learned, "teacher_agreement_end": 0.56})
    assert "agreement with its teacher's labels went 0.550 -> 0.560" in stuck[0]["reason"]
    assert "student.epochs" in stuck[0]["help"]
    already = {**learned, "teacher_agreement_start": 0.99, "teacher_agreement_end": 0.99}
    assert learning_caveats("UnAligNet", already) == []  # nothing left to learn is not a failure
    assert learning_caveats("AligNet", {}) == []  # an older run without the measures: nothing claimed


def test_a_collapsed_category_structure_is_a_caveat():
    rng = np.random.default_rng(0)
    categories = np.repeat(["cat", "dog", "car"], 12)
    centres = rng.standard_normal((3, 16)) * 4
    structured = centres[np.repeat(np.arange(3), 12)] + rng.standard_normal((36, 16))
    collapsed = rng.standard_normal((36, 16))
    silhouettes = category_silhouettes(
        {"base": structured, "teacher": structured * 2, "AligNet": collapsed}, categories
    )
    assert silhouettes["base"] > 0.3 and abs(silhouettes["AligNet"]) < 0.1
    found = structure_caveats(silhouettes)
    assert [(c["check"], c["subject"]) for c in found] == [(STRUCTURE_COLLAPSED, "AligNet")]
    assert (
        f"silhouette {silhouettes['AligNet']:.2f} against base's {silhouettes['base']:.2f}"
        in found[0]["reason"]
    )
    no_structure = category_silhouettes({"base": collapsed, "AligNet": collapsed[::-1]}, categories)
    assert structure_caveats(no_structure) == []  # nothing to lose: no claim
    assert np.isnan(category_silhouettes({"base": structured}, np.repeat(["x"], 36))["base"])


def test_the_collapse_threshold_is_half_the_base_silhouette():
    # issue 14's case: category silhouette 0.45 -> 0.12
    found = structure_caveats({"base": 0.45, "teacher": 0.5, "AligNet": 0.12, "UnAligNet": 0.30})
    assert [c["subject"] for c in found] == ["AligNet"]
    assert "silhouette 0.12 against base's 0.45" in found[0]["reason"]
