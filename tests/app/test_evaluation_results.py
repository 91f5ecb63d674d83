"""The evaluation's results travel as numbers: the eval stage stores a numeric table and structured metrics,
and only the Maps page and the CLI printer turn them into labelled cells (with the flags noted there)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import select
from streamlit.testing.v1 import AppTest

from alignment.model_comparison import GAIN_CI_INCLUDES_ZERO, NORMALISED_ABOVE_CEILING, ResultRow
from app import map_cache
from app.results_display import display_table, metric_columns
from db.engine import Database
from db.models import RunStatus, Trial, TripletLevel
from db.runs import create_run, finish_run, get_run
from tests.support.map_fixtures import make_fake_runs
from workflows.pipeline import execute, queue_action
from workflows.pipeline.evaluation import read_results

MAPS_PAGE = str(Path(__file__).resolve().parents[2] / "app" / "views" / "maps.py")
LEVELS = (TripletLevel.BETWEEN_CLASS, TripletLevel.WITHIN_CLASS, TripletLevel.CLASS_BORDER)


@pytest.fixture
def evaluated(app_home):
    """An eval run over the fake study's planted before/after representations (every trial given a level)."""
    db = Database.from_url()
    fake = make_fake_runs(db, app_home)
    with db.write() as session:
        for trial in session.scalars(select(Trial)):
            trial.level = LEVELS[trial.trial_index % 3]
    run_id = queue_action(
        db,
        "eval",
        "fake-study",
        {"representations": [str(fake.before_run), str(fake.after_run)], "labels": ["before", "after"]},
    )
    assert execute(db, run_id) == RunStatus.SUCCEEDED, get_run(db, run_id).error
    yield db, fake, get_run(db, run_id)
    db.dispose()


def test_the_eval_stage_stores_numbers_and_structured_metrics(evaluated):
    _, _, run = evaluated
    results = read_results(run)
    assert list(results.columns) == list(ResultRow.__dataclass_fields__)
    assert list(results["level"].unique()) == ["between_class", "class_border", "within_class", "overall"]
    assert list(results["model"][:2]) == ["before", "after"]
    rows = results.set_index(["level", "model"])
    after = rows.loc[("overall", "after")]
    assert after["n_judgments"] == 300 and after["ci_low"] <= after["accuracy"] <= after["ci_high"]
    assert after["accuracy"] > 0.9  # the judgments follow the after representation (cosine; eval: dot)
    assert after["gain"] == pytest.approx(after["accuracy"] - rows.loc[("overall", "before"), "accuracy"])
    assert after["gain_ci_low"] > 0 and after["flags"] == ()
    assert np.isnan(rows.loc[("overall", "before"), "gain"])
    assert run.metrics["accuracy"] == {
        "before": round(rows.loc[("overall", "before"), "accuracy"], 4),
        "after": round(after["accuracy"], 4),
    }
    assert set(run.metrics["gain"]) == {"after"}  # the baseline has no gain over itself
    assert run.metrics["gain"]["after"]["overall"] == round(after["gain"], 4)
    assert run.metrics["gain_ci_low"]["after"]["overall"] == round(after["gain_ci_low"], 4)
    assert set(run.metrics["gain_ci_high"]["after"]) == {
        "between_class",
        "class_border",
        "within_class",
        "overall",
    }


def test_the_cli_printer_formats_the_stored_numbers(evaluated, capsys):
    from app.cli.align_commands import print_eval_table

    _, _, run = evaluated
    print_eval_table(run)
    printed = capsys.readouterr().out
    after = read_results(run).set_index(["level", "model"]).loc[("overall", "after")]
    assert f"{after['accuracy']:.3f} [{after['ci_low']:.3f}, {after['ci_high']:.3f}]" in printed
    assert f"{after['gain']:+.3f} [{after['gain_ci_low']:+.3f}, {after['gain_ci_high']:+.3f}]" in printed
    assert "ECE" in printed and "ρ(H,entropy)" in printed


def test_a_flag_is_shown_in_the_cell_of_the_number_it_qualifies(evaluated):
    _, _, run = evaluated
    results = read_results(run)
    results.loc[0, "flags"] = (GAIN_CI_INCLUDES_ZERO,)
    shown = display_table(results)
    assert shown.loc[0, "gain [95% CI]"].endswith("(CI includes 0)")
    assert not shown.loc[1:, "gain [95% CI]"].str.contains("CI includes 0").any()
    assert shown["normalised"].eq("").all()  # no repeated triplets in the fake study: no noise ceiling


def test_maps_page_shows_the_latest_loops_table_from_its_numbers(evaluated):
    db, fake, run = evaluated
    loop = create_run(db, "align", {"study": "fake-study"})
    finish_run(
        db,
        loop,
        {
            **run.metrics,
            "teacher_run": fake.before_run,
            "alignet_run": fake.after_run,
            "eval_run": run.id,
            "unseen_note": "unseen-image accuracy not measured: (the split's reason)",
            "subject_note": "unseen-subject accuracy not measured: (the split's reason)",
        },
        run.artifacts,
    )
    for cached in (map_cache.representations, map_cache.figures, map_cache.map_bundle):
        cached.clear()
    at = AppTest.from_file(MAPS_PAGE, default_timeout=120)
    at.session_state["map_method"] = "pca"
    at.run()
    assert not at.exception, at.exception
    table = at.dataframe[-1].value
    assert list(table.columns) == [
        "held out",
        "level",
        "representation",
        "n",
        "images",
        "accuracy [95% CI]",
        "gain [95% CI]",
        "normalised",
        "ρ(H,RT)",
    ]
    assert len(table) == 8 and table.iloc[0]["gain [95% CI]"] == ""  # the baseline's row
    assert (table["held out"] == "odd-one-out · all judgments").all() and (table["images"] > 0).all()
    warnings = [w.value for w in at.warning]
    assert "unseen-image accuracy not measured: (the split's reason)" in warnings
    assert "unseen-subject accuracy not measured: (the split's reason)" in warnings
    overall = read_results(run).set_index(["level", "model"]).loc[("overall", "after")]
    shown = table.set_index(["level", "representation"]).loc[("overall", "after")]
    assert shown["gain [95% CI]"] == f"{overall['gain']:+.3f} [{overall['gain_ci_low']:+.3f}, " + (
        f"{overall['gain_ci_high']:+.3f}]"
    )


def test_seen_and_unseen_blocks_are_labelled_and_a_score_above_the_ceiling_is_not_shown_as_real(evaluated):
    _, _, run = evaluated
    results = read_results(run)
    unseen = results.assign(held_out="unseen", n_images=7)
    people = results.assign(held_out="unseen_subjects")
    both = pd.concat([results, unseen, people], ignore_index=True)
    both.loc[len(results), ["normalised", "noise_ceiling"]] = (1.7, 0.55)
    both["flags"] = [
        (NORMALISED_ABOVE_CEILING,) if i == len(results) else f for i, f in enumerate(both["flags"])
    ]
    shown = display_table(both, detail=True)
    assert list(shown["held out"].unique()) == [
        "odd-one-out · all judgments",
        "odd-one-out · unseen images",
        "odd-one-out · unseen subjects",
    ]
    assert (shown["images"].iloc[len(results) : 2 * len(results)] == 7).all()
    assert (
        shown.loc[len(results), "normalised"] == "> 1 (above the measured ceiling 0.550: ceiling unreliable)"
    )
    assert "1.70" not in shown["normalised"].tolist()


def test_a_run_without_a_results_table_is_refused_with_what_to_do(app_home):
    db = Database.from_url()
    old = create_run(db, "eval", {"study": "x"})
    finish_run(db, old, {}, {"table": "runs/1/eval_table.csv"})
    with pytest.raises(ValueError, match=r"no evaluation results table .*'table'.*alignlab align"):
        read_results(get_run(db, old))
    db.dispose()


def test_nested_run_metrics_become_one_labelled_column_each():
    metrics = {"accuracy": {"base": 0.5}, "gain": {"AligNet": {"overall": 0.1}}, "reused_steps": ["eval"]}
    assert metric_columns(metrics) == {
        "accuracy · base": 0.5,
        "gain · AligNet · overall": 0.1,
        "reused_steps": ["eval"],
    }
