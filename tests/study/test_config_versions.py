"""Editing a study: every change a new config version, validated as at creation; participants keep the
version they consented under, and the exports say which."""

from __future__ import annotations

import pandas as pd
import pytest
from sqlalchemy import select

from common.config import ConfigError
from db.models import Study, StudyConfigVersion
from study.config_versions import config_of_version, config_versions, edit_study_config
from study.export import export_study
from study.participation import participant_view
from study.studies import get_study, study_config
from tests.support.analysis_helpers import experimental, make_stimuli, make_study, run_participant

SLUG = "edit-study"


@pytest.fixture
def study_db(db):
    ids = make_stimuli(db)
    trials = [experimental(ids[0], ids[3], ids[6]), experimental(ids[1], ids[4], ids[7])]
    make_study(db, SLUG, [trials], participants_per_list=10, consent_text="Consent, first wording.")
    return db, ids


def test_a_consent_edit_reaches_new_participants_only(study_db, tmp_path):
    db, ids = study_db
    before = run_participant(db, SLUG, "EARLY-1", [ids[6], ids[7]])
    edit = edit_study_config(db, SLUG, {"consent_text": "Consent, second wording."}, note="ethics asked")
    assert (edit.version, edit.changed) == (2, ("consent_text",))
    after = run_participant(db, SLUG, "LATE-1", [ids[6], ids[7]])

    assert participant_view(db, after).config.consent_text == "Consent, second wording."
    assert config_of_version(db, SLUG, 1).consent_text == "Consent, first wording."
    people = pd.read_csv(
        export_study(db, SLUG, "participants", tmp_path / "p.csv", raw_ids=True).path
    ).set_index("subject_id")
    assert people.loc["EARLY-1", "config_version"] == 1 and people.loc["LATE-1", "config_version"] == 2
    trials = pd.read_csv(export_study(db, SLUG, "jspsych", tmp_path / "t.csv", raw_ids=True).path)
    assert trials.groupby("subject_id")["config_version"].unique().map(list).to_dict() == {
        "EARLY-1": [1],
        "LATE-1": [2],
    }
    versions = config_versions(db, SLUG)
    assert versions["version"].tolist() == [1, 2] and versions["note"].tolist() == [
        "as created",
        "ethics asked",
    ]
    assert before != after


def test_an_edit_keeps_every_setting_it_does_not_name(study_db):
    db, _ = study_db
    edit_study_config(db, SLUG, {"completion_code": "C0DE-2"}, target_participants=40)
    with db.read() as session:
        study = get_study(session, SLUG)
        config, target, version = study_config(study), study.target_participants, study.config_version
    assert (config.completion_code, target, version) == ("C0DE-2", 40, 2)
    assert config.consent_text == "Consent, first wording." and config.min_valid_rt_ms == 0


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"completion_url_template": "https://x.org/?cc={cc}"}, "{code} is the only one allowed"),
        ({"completion_url_template": "javascript:alert(1)"}, "not an http or https URL"),
        ({"consent_txt": "typo"}, "unknown StudyConfig key"),
        ({"response_window_ms": "fast"}, "response_window_ms must be a whole number"),
    ],
)
def test_a_bad_edit_is_refused_as_at_creation_and_stores_nothing(study_db, changes, message):
    db, _ = study_db
    with pytest.raises(ConfigError, match=message.replace("{", r"\{").replace("}", r"\}")):
        edit_study_config(db, SLUG, changes)
    with db.read() as session:
        assert session.scalar(select(Study.config_version).where(Study.slug == SLUG)) == 1
        assert len(session.scalars(select(StudyConfigVersion)).all()) == 1


def test_an_edit_that_changes_nothing_stores_no_version(study_db):
    db, _ = study_db
    edit = edit_study_config(db, SLUG, {"consent_text": "Consent, first wording."})
    assert (edit.version, edit.changed) == (1, ())
    assert len(config_versions(db, SLUG)) == 1
