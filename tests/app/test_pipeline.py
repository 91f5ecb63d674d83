"""The closed loop (teacher -> pseudo-labels -> students -> evaluation) on a small study: clear errors before
long computations, every step recorded as a run, unchanged steps reused, new judgments refit the teacher."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from db.models import RunStatus, StudyStatus
from db.runs import create_run, fail_run, get_run
from study.design import DesignConfig, create_study_from_design
from study.simulate import simulate_participants
from study.studies import set_study_status
from workflows.pipeline import execute, queue_action
from workflows.pipeline.evaluation import read_results

FAST = {
    "teacher": {"reg_weight": 1.0},
    "pseudo": {
        "n_triplets": 512,
        "n_clusters": 6,
        "clusters_per_group": 4,
        "images_per_cluster": 4,
        "triplets_per_group": 64,
    },
    "student": {"image_size": 64, "epochs": 1.0, "min_triplets": 16, "head_dim": 64},
}


@pytest.fixture
def small_study(stimulus_set):
    return _study(stimulus_set, "small", 12)


def _study(db, slug: str, n_lists: int):
    design = DesignConfig(
        n_lists=n_lists,
        n_between_class=4,
        n_within_class=4,
        n_class_border=4,
        n_blocks=1,
        catch_per_block=1,
        n_practice=0,
        n_shared=4,
    )
    create_study_from_design(db, slug, 1, design)
    set_study_status(db, slug, StudyStatus.OPEN)
    return db


def test_too_few_judgments_is_refused_before_any_run_is_created(small_study):
    simulate_participants(small_study, "small", 1)
    with pytest.raises(ValueError, match="at least 50 are needed"):
        queue_action(small_study, "align", "small", FAST)


def test_labels_from_a_failed_teacher_run_are_refused_with_the_reason(small_study):
    teacher = create_run(small_study, "teacher", {"study": "small"})
    fail_run(small_study, teacher, "ValueError: something broke")
    labels = create_run(small_study, "pseudo_labels", {"study": "small", "teacher_run": teacher})
    assert execute(small_study, labels) == RunStatus.FAILED
    error = get_run(small_study, labels).error
    assert f"run {teacher}" in error and "'failed'" in error and "something broke" in error


def _count_judgment_reads(monkeypatch) -> list[str]:
    from workflows.pipeline import data

    reads, load = [], data.load_judgments
    monkeypatch.setattr(data, "load_judgments", lambda db, slug: reads.append(slug) or load(db, slug))
    return reads


def test_a_snapshot_reads_the_judgments_once_and_the_digest_follows_them(small_study, monkeypatch):
    from workflows.pipeline.data import judgments_digest, judgments_snapshot, study_judgments

    simulate_participants(small_study, "small", 2)
    reads = _count_judgment_reads(monkeypatch)
    with judgments_snapshot():
        first = study_judgments(small_study, "small")
        assert study_judgments(small_study, "small") is first
    assert reads == ["small"]
    study_judgments(small_study, "small")  # outside a snapshot: always fresh
    assert reads == ["small", "small"]
    digest = judgments_digest(first)
    assert digest == judgments_digest(first.copy()) and len(digest) == 16
    changed = first.copy()
    changed.loc[0, "stim2"], changed.loc[0, "stim1"] = first.loc[0, "stim1"], first.loc[0, "stim2"]
    assert judgments_digest(changed) != digest
    assert judgments_digest(first.iloc[1:]) != digest


@pytest.mark.slow
def test_closed_loop_records_every_step_and_reuses_unchanged_ones(small_study, monkeypatch):
    db = small_study
    simulate_participants(db, "small", 10)
    first = queue_action(db, "align", "small", FAST)
    reads = _count_judgment_reads(monkeypatch)
    assert execute(db, first) == RunStatus.SUCCEEDED, get_run(db, first).error
    assert reads == ["small"]  # checks, digest, teacher split and evaluation share one read
    metrics = get_run(db, first).metrics
    for key in ("teacher_run", "labels_run", "alignet_run", "unalignet_run", "eval_run"):
        assert get_run(db, metrics[key]).status == RunStatus.SUCCEEDED
    assert set(metrics["accuracy"]) == {"base", "teacher", "AligNet", "UnAligNet"}
    assert all(0 <= accuracy <= 1 for accuracy in metrics["accuracy"].values())
    results = read_results(get_run(db, first))
    assert list(results["model"].unique()) == ["base", "teacher", "AligNet", "UnAligNet"]
    assert results.set_index(["level", "model"]).loc[("overall", "AligNet"), "gain"] == pytest.approx(
        metrics["gain"]["AligNet"]["overall"], abs=1e-4
    )

    again = queue_action(db, "align", "small", FAST)
    assert execute(db, again) == RunStatus.SUCCEEDED
    assert get_run(db, again).metrics["reused_steps"] == [
        "teacher",
        "pseudo_labels",
        "student aligned",
        "student untransformed",
        "eval",
    ]

    simulate_participants(db, "small", 2)  # new judgments arrive: the teacher and everything after it rerun
    third = queue_action(db, "align", "small", FAST)
    assert execute(db, third) == RunStatus.SUCCEEDED
    assert get_run(db, third).metrics["reused_steps"] == []
    assert get_run(db, third).metrics["teacher_run"] != metrics["teacher_run"]


def test_bad_representations_for_evaluation_are_refused_with_the_reason(small_study):
    from workflows.pipeline import parse_representation

    db = small_study
    features = create_run(db, "features", {"study": "small"})
    with pytest.raises(ValueError, match="not RUN or RUN:ARTIFACT"):
        parse_representation(db, "latest")
    with pytest.raises(LookupError, match="no run with id 999"):
        parse_representation(db, "999")
    with pytest.raises(ValueError, match="status 'queued'"):
        parse_representation(db, str(features))
    assert execute(db, features) == RunStatus.SUCCEEDED
    with pytest.raises(ValueError, match="has no 'student' artifact"):
        parse_representation(db, f"{features}:student")
    assert parse_representation(db, str(features)).artifact == "embeddings"


def test_the_teacher_run_reports_seen_and_unseen_images_side_by_side(stimulus_set, monkeypatch):
    from workflows.pipeline import data

    db = _study(stimulus_set, "small", 60)
    simulate_participants(db, "small", 60)
    monkeypatch.setattr(data, "MIN_UNSEEN_JUDGMENTS", 5)  # the small study holds few all-unseen triplets
    monkeypatch.setattr(data, "MIN_SUBJECT_JUDGMENTS", 5)  # and few judgments per subject
    split = data.split_study(db, "small", data.SplitConfig(unseen_fraction=0.35))
    unseen = set(split.unseen_images.tolist())
    assert unseen and not split.unseen.empty and not split.seen.empty and split.unseen_note == ""
    assert not unseen & set(split.train[data.TRIPLET_COLUMNS].to_numpy().ravel().tolist())
    assert not unseen & set(split.seen[data.TRIPLET_COLUMNS].to_numpy().ravel().tolist())
    assert set(split.unseen[data.TRIPLET_COLUMNS].to_numpy().ravel().tolist()) <= unseen
    overrides = {"teacher": {"reg_weight": 1.0}, "split": {"unseen_fraction": 0.35}}
    run = queue_action(db, "teacher", "small", overrides)
    assert execute(db, run) == RunStatus.SUCCEEDED, get_run(db, run).error
    results = read_results(get_run(db, run))
    overall = results[results["level"] == "overall"].set_index(["held_out", "model"])
    blocks = ("seen", "unseen", "unseen_subjects")
    assert set(overall.index) == {(h, m) for h in blocks for m in ("base", "teacher")}
    assert overall.loc[("unseen", "teacher"), "n_images"] <= len(unseen)
    assert overall.loc[("unseen", "teacher"), "n_judgments"] == len(split.unseen)
    assert overall.loc[("unseen_subjects", "teacher"), "n_judgments"] == len(split.subjects)
    metrics = get_run(db, run).metrics
    assert set(metrics["overall_accuracy"]) == {f"odd_one_out {block}" for block in blocks}
    assert metrics["n_unseen_subjects"] == 6 and metrics["subject_note"] == ""  # 10% of 60 subjects


def test_unseen_subjects_are_held_out_entirely_and_scored_on_seen_images(stimulus_set, monkeypatch):
    from workflows.pipeline import data

    db = _study(stimulus_set, "people", 40)
    simulate_participants(db, "people", 40)
    monkeypatch.setattr(data, "MIN_UNSEEN_JUDGMENTS", 5)
    monkeypatch.setattr(data, "MIN_SUBJECT_JUDGMENTS", 5)
    split = data.split_study(db, "people", data.SplitConfig(unseen_fraction=0.35, subject_fraction=0.25))
    people = set(split.unseen_subjects.tolist())
    assert len(people) == 10 and split.subject_note == ""  # 25% of 40 subjects
    assert set(split.subjects["participant_id"]) == people
    assert not people & set(split.train["participant_id"]) and not people & set(split.seen["participant_id"])
    assert not set(split.unseen_images.tolist()) & set(split.subjects[data.TRIPLET_COLUMNS].values.ravel())
    judged = data.study_judgments(db, "people")
    theirs = judged[judged["participant_id"].isin(people)]
    mixed = theirs[data.TRIPLET_COLUMNS].isin(split.unseen_images).any(axis=1)
    assert len(split.subjects) == (~mixed).sum()  # all their judgments without an unseen image
    keys, unseen, subject = split.test_keys()
    assert subject.sum() == len(split.subjects) and not (unseen & subject).any()
    assert len(keys) == len(split.seen) + len(split.unseen) + len(split.subjects)


def test_too_few_subjects_or_a_subject_split_say_why_there_is_no_unseen_subject_test(small_study):
    from workflows.pipeline import data

    simulate_participants(small_study, "small", 9)
    split = data.split_study(small_study, "small", data.SplitConfig())
    assert split.subjects.empty and len(split.unseen_subjects) == 0
    assert split.subject_note.startswith(
        "unseen-subject accuracy not measured: the judgments come from 9 subject(s) (need 10"
    )
    by_subject = data.split_study(small_study, "small", data.SplitConfig(by="subject"))
    assert by_subject.subjects.empty
    assert by_subject.subject_note == "the seen-image test is itself subject-disjoint (split by subject)"


def test_a_study_too_small_for_an_unseen_image_test_says_what_it_would_need(small_study, monkeypatch):
    from workflows.pipeline import data

    simulate_participants(small_study, "small", 10)
    monkeypatch.setattr(data, "MIN_UNSEEN_JUDGMENTS", 10**6)
    split = data.split_study(small_study, "small", data.SplitConfig())
    assert split.unseen.empty and len(split.unseen_images) == 0
    assert split.unseen_note.startswith("unseen-image accuracy not measured")
    assert "held-out images would do" in split.unseen_note


def test_backbone_means_the_whole_loop(small_study):
    simulate_participants(small_study, "small", 10)
    other = {**FAST, "student": {**FAST["student"], "backbone": "timm:mobilenetv2_100"}}
    with pytest.raises(ValueError, match="student.backbone 'timm:mobilenetv2_100' differs from the loop's"):
        queue_action(small_study, "align", "small", other)
    weights = {**FAST, "student": {**FAST["student"], "weights": "random"}}
    with pytest.raises(ValueError, match="student.weights is not used by the loop"):
        queue_action(small_study, "align", "small", weights)
    same = {**FAST, "backbone": "timm:mobilenetv2_100", "student": {"backbone": "timm:mobilenetv2_100"}}
    queue_action(small_study, "align", "small", same)  # agreeing settings are fine


def test_the_student_stage_trains_the_backbone_its_labels_were_made_from():
    from workflows.pipeline.distillation import student_config

    meta = {"backbone": "timm:tf_efficientnet_lite2"}
    assert student_config({}, meta, 7).backbone == "timm:tf_efficientnet_lite2"
    assert student_config({"epochs": 2.0}, meta, 7).epochs == 2.0
    with pytest.raises(
        ValueError, match=r"pseudo-labels of run 7 were made from \('timm:tf_efficientnet_lite2'\)"
    ):
        student_config({"backbone": "timm:tf_efficientnet_lite0"}, meta, 7)


def test_pseudo_label_settings_the_pool_cannot_meet_are_refused_up_front(small_study):
    simulate_participants(small_study, "small", 10)
    too_many = {**FAST, "pseudo": {"n_triplets": 10**6}}
    with pytest.raises(
        ValueError, match="24 images in 4 clusters allow 1080 distinct cluster_border triplets"
    ):
        queue_action(small_study, "align", "small", too_many)


def test_alignment_reads_the_original_files_not_the_serving_copies(small_study):
    import hashlib

    from workflows.pipeline.data import study_images

    images = study_images(small_study, "small")
    hashes = images.table["content_hash"].tolist()
    assert [hashlib.sha256(path.read_bytes()).hexdigest() for path in images.paths] == hashes
    assert all(path.parent.name == "originals" for path in images.paths)


def test_align_reuses_a_teacher_fit_on_the_same_judgments_and_config(small_study):
    from dataclasses import asdict

    from workflows.pipeline.data import SplitConfig, study_digest
    from workflows.pipeline.loop import _reusable
    from workflows.pipeline.teacher_stage import TeacherStageConfig

    simulate_participants(small_study, "small", 10)
    fitted = queue_action(small_study, "teacher", "small", {"teacher": FAST["teacher"]})
    assert execute(small_study, fitted) == RunStatus.SUCCEEDED, get_run(small_study, fitted).error
    loop_step = TeacherStageConfig(  # what `align` asks for, built as the loop builds it
        "small",
        split=SplitConfig(),
        teacher=FAST["teacher"],
        judgments_digest=study_digest(small_study, "small"),
    )
    assert _reusable(small_study, "teacher", asdict(loop_step)) == fitted
    simulate_participants(small_study, "small", 2)  # new judgments: the fit no longer matches
    changed = TeacherStageConfig(
        "small",
        split=SplitConfig(),
        teacher=FAST["teacher"],
        judgments_digest=study_digest(small_study, "small"),
    )
    assert _reusable(small_study, "teacher", asdict(changed)) is None


def test_a_fitted_run_embeds_other_images_as_it_embedded_its_own(small_study, tmp_path, capsys):
    """Two backbones combined: three of the study's images embedded on their own (standardised with the
    fitted images' scales, not their own) match the run's stored rows, from Python and from the CLI."""
    from app.cli import main
    from workflows.embedding import load_run
    from workflows.pipeline.data import load_embeddings, study_images

    simulate_participants(small_study, "small", 10)
    spec = "timm:tf_efficientnet_lite0+timm:mobilenetv2_100"
    run = queue_action(small_study, "teacher", "small", {"teacher": FAST["teacher"], "backbone": spec})
    assert execute(small_study, run) == RunStatus.SUCCEEDED, get_run(small_study, run).error
    stored, ids = load_embeddings(get_run(small_study, run))
    images = study_images(small_study, "small")
    assert stored.shape[1] == 1280 + 1280 and len(get_run(small_study, run).metrics["feature_scales"]) == 2
    np.testing.assert_allclose(load_run(run, small_study).embed(images.paths[:3]), stored[:3], atol=1e-4)
    listing = tmp_path / "three.txt"
    listing.write_text("\n".join(str(p) for p in images.paths[:3]))
    assert (
        main(["embed", "--run", str(run), "--images", str(listing), "--out", str(tmp_path / "e.parquet")])
        == 0
    )
    table = pd.read_parquet(tmp_path / "e.parquet")
    assert table["name"].tolist() == [str(p) for p in images.paths[:3]]
    np.testing.assert_allclose(table.drop(columns="name").to_numpy(), stored[:3], atol=1e-4)
    assert (
        main(["embed", "--run", str(run), "--images", "no such set", "--out", str(tmp_path / "x.npz")]) == 2
    )
    assert "neither a folder" in capsys.readouterr().err
