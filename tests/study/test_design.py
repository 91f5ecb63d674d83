"""Design generator: level definitions hold for every triplet, balance, reproducibility, repeats, errors."""

from __future__ import annotations

from collections import Counter

import pytest
from sqlalchemy import func, select

from db.models import Study, Trial, TrialKind, TripletLevel, TripletList
from study.design import DesignConfig, create_study_from_design, generate_design
from study.stimuli import StimulusInfo, import_stimulus_set
from study.studies import PRACTICE_BLOCK, triplet_key
from tests.support.stimulus_files import make_layout


def table_for(layout: dict[str, dict[str, int]]) -> list[StimulusInfo]:
    """{superordinate: {category: n_images}} -> stimulus records with ids 1..N."""
    table = []
    for sup, categories in layout.items():
        for cat, n in categories.items():
            for k in range(n):
                table.append(StimulusInfo(len(table) + 1, f"{sup}/{cat}/{k}.jpg", cat, sup))
    return table


BALANCED = {
    sup: {f"{sup}-{c}": 6 for c in range(4)} for sup in ("animal", "vehicle", "tool", "food")
}  # 96 images
CONFIG = DesignConfig(
    n_lists=6,
    n_between_class=12,
    n_within_class=9,
    n_class_border=9,
    n_blocks=3,
    catch_per_block=2,
    n_practice=2,
    within_repeats=4,
    n_shared=6,
    seed=7,
)


def category(info: StimulusInfo) -> tuple[str, str]:
    return info.superordinate, info.category


def assert_definition_holds(trial, info: dict[int, StimulusInfo], within: str) -> None:
    a, b, c = (info[i] for i in trial.stimuli)
    if trial.kind in (TrialKind.CATCH, TrialKind.PRACTICE):
        assert trial.odd_known and trial.level is None
        assert (
            category(a) == category(b) and c.superordinate != a.superordinate
        )  # odd one out last, unambiguous
    elif trial.level == TripletLevel.BETWEEN_CLASS:
        assert len({a.superordinate, b.superordinate, c.superordinate}) == 3 and not trial.odd_known
    elif trial.level == TripletLevel.WITHIN_CLASS:
        key = category if within == "category" else (lambda s: s.superordinate)
        assert key(a) == key(b) == key(c) and not trial.odd_known
    else:
        assert trial.level == TripletLevel.CLASS_BORDER and not trial.odd_known
        assert category(a) == category(b) != category(c) and c.superordinate == a.superordinate


def test_every_generated_triplet_meets_its_level_definition():
    table = table_for(BALANCED)
    info = {s.id: s for s in table}
    design = generate_design(table, CONFIG)
    assert design.within_class_definition == "category" and design.between_class_definition == "superordinate"
    assert len(design.lists) == 6
    for trials in design.lists:
        for trial in trials:
            assert len(set(trial.stimuli)) == 3
            assert_definition_holds(trial, info, design.within_class_definition)


def test_each_list_has_the_designed_counts_blocks_and_interleaved_catches():
    design = generate_design(table_for(BALANCED), CONFIG)
    for trials in design.lists:
        assert len(trials) == 2 + 30 + 4 + 6
        assert [t.block for t in trials[:2]] == [PRACTICE_BLOCK] * 2
        assert all(t.kind == TrialKind.PRACTICE for t in trials[:2])
        levels = Counter(t.level for t in trials if t.kind == TrialKind.EXPERIMENTAL)
        assert levels == {
            TripletLevel.BETWEEN_CLASS: 12,
            TripletLevel.WITHIN_CLASS: 9,
            TripletLevel.CLASS_BORDER: 9,
        }
        assert Counter(t.block for t in trials if t.kind == TrialKind.CATCH) == {0: 2, 1: 2, 2: 2}
        assert Counter(t.block for t in trials if t.kind == TrialKind.EXPERIMENTAL) == {0: 10, 1: 10, 2: 10}
        assert [t.block for t in trials] == sorted(t.block for t in trials)  # blocks in order
        blocks = [[t for t in trials if t.block == b] for b in range(3)]
        assert any(b[-1].kind != TrialKind.CATCH for b in blocks)  # catches spread, not stacked at the end


def test_no_unintended_repeats_and_designed_repeats_come_later():
    design = generate_design(table_for(BALANCED), CONFIG)
    for trials in design.lists:
        keys = [triplet_key(t.stimuli) for t in trials if t.kind != TrialKind.REPEAT]
        assert len(keys) == len(set(keys))
        repeats = [(i, t) for i, t in enumerate(trials) if t.kind == TrialKind.REPEAT]
        assert len(repeats) == 4
        for index, repeat in repeats:
            [original_index] = [
                i
                for i, t in enumerate(trials)
                if t.kind == TrialKind.EXPERIMENTAL and t.stimuli == repeat.stimuli
            ]
            assert original_index < index and trials[original_index].level == repeat.level


def test_shared_triplets_are_in_every_list_and_nothing_else_is():
    design = generate_design(table_for(BALANCED), CONFIG)
    lists_per_key = Counter(
        key
        for trials in design.lists
        for key in {triplet_key(t.stimuli) for t in trials if t.kind != TrialKind.REPEAT}
    )
    shared = [key for key, n in lists_per_key.items() if n > 1]
    assert len(shared) == 6 and all(lists_per_key[k] == 6 for k in shared)
    assert design.n_cross_list_duplicates == 0


def test_image_use_is_balanced_and_reported_correctly():
    config = DesignConfig(n_lists=8, n_between_class=10, n_within_class=10, n_class_border=10, seed=3)
    design = generate_design(table_for(BALANCED), config)
    counted = Counter(
        i for trials in design.lists for t in trials if t.kind != TrialKind.REPEAT for i in t.stimuli
    )
    assert design.n_cross_list_duplicates == 0
    assert design.image_use == {i: counted[i] for i in range(1, 97)}
    total = sum(counted.values())
    assert total == 8 * (30 + 6 + 3) * 3  # 39 distinct triplets per list
    assert design.image_use_max - design.image_use_min <= 1, (design.image_use_min, design.image_use_max)
    assert any("image use" in note and f"min {design.image_use_min}" in note for note in design.notes())


def test_same_seed_same_design_different_seed_different():
    table = table_for(BALANCED)
    assert generate_design(table, CONFIG).lists == generate_design(table, CONFIG).lists
    other = DesignConfig(**{**CONFIG.to_dict(), "seed": 8})
    assert generate_design(table, other).lists != generate_design(table, CONFIG).lists


def test_small_categories_switch_within_class_to_superordinate_and_say_so():
    things_like = table_for({sup: {f"{sup}{c}": 1 for c in range(8)} for sup in ("animal", "tool", "food")})
    config = DesignConfig(
        n_between_class=10, n_within_class=10, n_class_border=0, catch_per_block=0, n_practice=2, seed=1
    )
    design = generate_design(things_like, config)
    info = {s.id: s for s in things_like}
    assert design.within_class_definition == "superordinate" and design.practice_definition == "between_class"
    assert "within_class = three images of one superordinate" in design.notes()
    for trial in design.lists[0]:
        sups = {info[i].superordinate for i in trial.stimuli}
        assert len(sups) == (1 if trial.level == TripletLevel.WITHIN_CLASS else 3)


def test_set_without_superordinates_uses_categories_for_between_class():
    flat = table_for({"": {"dog": 4, "cat": 4, "car": 4}})
    config = DesignConfig(
        n_between_class=5, n_within_class=3, n_class_border=5, catch_per_block=0, n_practice=0
    )
    design = generate_design(flat, config)
    info = {s.id: s for s in flat}
    assert design.between_class_definition == "category" and design.within_class_definition == "category"
    between = [t for t in design.lists[0] if t.level == TripletLevel.BETWEEN_CLASS]
    assert all(len({info[i].category for i in t.stimuli}) == 3 for t in between)


def test_sets_that_cannot_support_the_design_name_what_is_missing():
    one_category_each = table_for({sup: {sup: 3} for sup in ("animal", "tool", "food")})
    with pytest.raises(
        ValueError, match="class_border triplets need a superordinate with at least 2 categories"
    ):
        generate_design(one_category_each, DesignConfig(n_class_border=1))
    flat = table_for({"": {"dog": 3, "cat": 3, "car": 3}})
    with pytest.raises(
        ValueError, match="catch triplets .* need at least 2 superordinates \\(the set has 1\\)"
    ):
        generate_design(flat, DesignConfig(catch_per_block=1))
    small = table_for(
        {"animal": {"dog": 3, "cat": 3}, "tool": {"saw": 3, "axe": 3}, "food": {"egg": 3, "jam": 3}}
    )
    with pytest.raises(
        ValueError, match="allows only 6 distinct within_class triplets but each list needs 7"
    ):
        generate_design(small, DesignConfig(n_within_class=7))
    two_categories = table_for({"": {"dog": 3, "cat": 3}})
    with pytest.raises(
        ValueError, match="between_class triplets need at least 3 categories \\(the set has 2\\)"
    ):
        generate_design(two_categories, DesignConfig(catch_per_block=0, n_practice=0))


def test_design_config_is_validated_and_loads_from_toml(tmp_path):
    with pytest.raises(ValueError, match="n_shared=31 is more than the 30"):
        DesignConfig(n_between_class=10, n_within_class=10, n_class_border=10, n_shared=31)
    with pytest.raises(ValueError, match="within_class_scope must be one of"):
        DesignConfig(within_class_scope="genus")
    with pytest.raises(ValueError, match="n_blocks must be a whole number >= 0"):
        DesignConfig(n_blocks=-1)
    path = tmp_path / "design.toml"
    path.write_text("n_lists = 4\nn_within_class = 5\nseed = 11\n")
    assert DesignConfig.from_file(path) == DesignConfig(n_lists=4, n_within_class=5, seed=11)
    path.write_text("n_list = 4\n")
    with pytest.raises(ValueError, match="unknown DesignConfig key\\(s\\) \\['n_list'\\]; known keys"):
        DesignConfig.from_file(path)


def test_create_study_from_design_stores_lists_and_notes(db, tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGNLAB_HOME", str(tmp_path / "home"))
    layout = {sup: {f"{sup}{c}": 3 for c in range(2)} for sup in ("animal", "tool", "food")}
    report = import_stimulus_set(db, make_layout(tmp_path / "src", layout), "set")
    config = DesignConfig(
        n_lists=3,
        n_between_class=4,
        n_within_class=2,
        n_class_border=4,
        n_blocks=2,
        catch_per_block=1,
        n_practice=1,
        within_repeats=1,
        seed=5,
    )
    study_id, design = create_study_from_design(db, "demo-study", report.stimulus_set_id, config)
    with db.read() as session:
        study = session.get(Study, study_id)
        assert study.config["extra"]["design"]["within_class_definition"] == "category"
        assert study.config["extra"]["design"]["config"]["seed"] == 5
        lists = session.scalars(select(TripletList).where(TripletList.study_id == study_id)).all()
        assert [(tl.list_index, tl.seed, len(tl.trials)) for tl in lists] == [
            (0, 5, 14),
            (1, 5, 14),
            (2, 5, 14),
        ]
        stored = [(t.stim0_id, t.stim1_id, t.stim2_id) for t in lists[1].trials]
        assert stored == [t.stimuli for t in design.lists[1]]
        n_trials = session.scalar(select(func.count()).select_from(Trial))
    with pytest.raises(ValueError, match="slug 'demo-study' already exists"):
        create_study_from_design(db, "demo-study", report.stimulus_set_id, config)
    with db.read() as session:
        assert session.scalar(select(func.count()).select_from(Trial)) == n_trials
        assert session.scalar(select(func.count()).select_from(Study)) == 1
