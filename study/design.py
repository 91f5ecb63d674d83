"""Levels-style triplet designs generated from a stimulus set: per-participant lists mixing the three levels,
catch and practice triplets, and within- and between-participant repeats for the noise ceiling.

Level definitions (stated once; `Design.notes()` says which variant a design used):
- between_class: three different categories, from three different superordinates when the set has >= 3;
- within_class: one category, or one superordinate when categories are too small (`within_class_scope`);
- class_border: two images of one category and one of another category in the same superordinate;
- catch: two images of one category and one from a different superordinate (unambiguous answer).
The designed odd one out is stored last; only catch (and catch-like practice) triplets set `odd_known`.
"""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from common.config import LoadableConfig
from db.engine import Database
from db.models import TrialKind, TripletLevel
from study.config import StudyConfig
from study.stimuli import StimulusInfo, load_stimulus_table
from study.studies import PRACTICE_BLOCK, TrialSpec, as_triplet, create_study, triplet_key, validate_slug

WITHIN_SCOPES = ("auto", "category", "superordinate")
DESIGN_MODES = ("fixed", "adaptive")
ADAPTIVE_STRATEGIES = ("uncertainty", "information", "disagreement", "random")  # names as in alignment.active
EXACT_POOL = 64  # pools up to this size are searched exhaustively for the least-used item
POOL_SAMPLE = 32  # larger pools: the least-used of a random sample (keeps big sets fast)
GREEDY_ATTEMPTS = 5  # first tries pick least-used items; later tries pick at random
NEW_TO_DESIGN_ATTEMPTS = 30  # tries for a triplet no other list has, before accepting a cross-list repeat
MAX_ATTEMPTS = 80
LEVEL_FIELDS = {
    TripletLevel.BETWEEN_CLASS: "n_between_class",
    TripletLevel.WITHIN_CLASS: "n_within_class",
    TripletLevel.CLASS_BORDER: "n_class_border",
}
Triplet = tuple[int, int, int]
CategoryKey = tuple[str, str]  # (superordinate, category): "bat" under animal differs from "bat" under sport


def is_adaptive(extra: dict) -> bool:
    """Whether a study config's ``extra`` (StudyConfig.extra, stored as ``Study.config["extra"]``) holds a
    generated design in mode "adaptive" (later lists chosen by the study's latest teacher)."""
    return (extra.get("design") or {}).get("config", {}).get("mode") == "adaptive"


@dataclass(frozen=True)
class DesignConfig(LoadableConfig):
    """How many lists and trials of each kind; the defaults make a short demo study (Levels used 330 + 16
    catch)."""

    SECTION = "design"

    n_lists: int = 1
    n_between_class: int = 20  # experimental triplets per list, by level
    n_within_class: int = 20
    n_class_border: int = 20
    n_blocks: int = 3
    catch_per_block: int = 2
    n_practice: int = 3
    within_repeats: int = 0  # experimental triplets shown again later in the same list (kind=repeat)
    n_shared: int = 0  # experimental triplets every list has (between-participant repeats)
    within_class_scope: str = "auto"  # auto | category | superordinate
    seed: int = 0
    # "fixed": every list generated at creation; "adaptive": the first lists too, later lists chosen from a
    # candidate pool by the study's latest teacher (workflows.adaptive), generated `lists_ahead` ahead
    mode: str = "fixed"
    strategy: str = (
        "uncertainty"  # adaptive: uncertainty | information | disagreement (teacher vs backbone) | random
    )
    random_share: float = 0.2  # adaptive: share of each list's experimental triplets drawn at random
    # adaptive: answers between background teacher refits (never two at once, so a slow fit only stretches
    # it); bench.active_design over 10 seeds: every 50 answers 0.49-0.51x random's answers, every 100
    # 0.55-0.57x, every 225-300 0.61-0.67x (README, "Adaptive designs")
    refit_every: int = 50
    refit_minutes: float = 0.0  # adaptive: also refit when this long passed and new answers arrived (0 = off)
    lists_ahead: int = 2  # adaptive: lists kept ready that no participant holds yet
    pool_per_level: int = 300  # adaptive: candidate triplets drawn per level for each new list

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type == "int" and (not isinstance(value, int) or value < 0):
                raise ValueError(f"design {f.name} must be a whole number >= 0, got {value!r}")
        if self.n_lists < 1 or self.n_blocks < 1:
            raise ValueError("design n_lists and n_blocks must be at least 1")
        if self.n_experimental < 1:
            raise ValueError(
                "a design needs at least one experimental triplet per list "
                "(n_between_class + n_within_class + n_class_border >= 1)"
            )
        for name in ("n_shared", "within_repeats"):
            if getattr(self, name) > self.n_experimental:
                raise ValueError(
                    f"design {name}={getattr(self, name)} is more than the {self.n_experimental} "
                    "experimental triplets per list"
                )
        if self.mode not in DESIGN_MODES or self.strategy not in ADAPTIVE_STRATEGIES:
            raise ValueError(
                f"design mode must be one of {DESIGN_MODES} and strategy one of {ADAPTIVE_STRATEGIES}; got "
                f"{self.mode!r}, {self.strategy!r}"
            )
        if not 0 <= self.random_share <= 1 or self.refit_every < 1 or self.pool_per_level < 1:
            raise ValueError(
                "design random_share must be in [0, 1], refit_every and pool_per_level at least 1; got "
                f"{self.random_share}, {self.refit_every}, {self.pool_per_level}"
            )
        if not isinstance(self.refit_minutes, int | float) or not 0 <= self.refit_minutes < float("inf"):
            raise ValueError(
                f"design refit_minutes must be a number of minutes >= 0 (0 = off), got {self.refit_minutes!r}"
            )
        if self.within_class_scope not in WITHIN_SCOPES:
            raise ValueError(
                f"within_class_scope must be one of {WITHIN_SCOPES}, got {self.within_class_scope!r}"
            )

    @property
    def n_experimental(self) -> int:
        return self.n_between_class + self.n_within_class + self.n_class_border

    def level_counts(self) -> dict[TripletLevel, int]:
        return {level: getattr(self, name) for level, name in LEVEL_FIELDS.items()}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Design:
    """Generated lists (odd one out last where designed) plus the definitions and balance it achieved."""

    config: DesignConfig
    lists: tuple[tuple[TrialSpec, ...], ...]
    within_class_definition: str  # "category" | "superordinate"
    between_class_definition: str  # "superordinate" (three superordinates) | "category"
    practice_definition: str  # "catch" | "between_class"
    image_use: dict[int, int]  # stimulus id -> uses in distinct designed triplets (shared counted once)
    n_cross_list_duplicates: int  # non-shared triplets that two lists happen to share (small sets only)
    shared: tuple[TrialSpec, ...] = ()  # the triplets every list has (between-participant repeats)

    @property
    def image_use_min(self) -> int:
        return min(self.image_use.values())

    @property
    def image_use_max(self) -> int:
        return max(self.image_use.values())

    def notes(self) -> list[str]:
        between = (
            "three different superordinates"
            if self.between_class_definition == "superordinate"
            else "three different categories (fewer than 3 superordinates in the set)"
        )
        return [
            f"between_class = {between}",
            f"within_class = three images of one {self.within_class_definition}",
            "class_border = two images of one category + one of another category in the same superordinate",
            "catch = two images of one category + one from a different superordinate (odd one out last)",
            f"practice = {self.practice_definition}-like triplets in block {PRACTICE_BLOCK}",
            f"image use in distinct designed triplets (shared ones once, repeats not counted): "
            f"min {self.image_use_min}, max {self.image_use_max} ({len(self.image_use)} images)",
            f"unplanned triplets shared by two lists: {self.n_cross_list_duplicates}",
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "within_class_definition": self.within_class_definition,
            "between_class_definition": self.between_class_definition,
            "practice_definition": self.practice_definition,
            "image_use_min": self.image_use_min,
            "image_use_max": self.image_use_max,
            "n_cross_list_duplicates": self.n_cross_list_duplicates,
            "notes": self.notes(),
            # an adaptive study's later lists carry the same shared triplets
            **(
                {"shared": [[*t.stimuli, str(t.level)] for t in self.shared]}
                if self.config.mode == "adaptive"
                else {}
            ),
        }


def generate_design(stimuli: Sequence[StimulusInfo], config: DesignConfig) -> Design:
    """Seeded lists: shared triplets, then each list's own triplets, in blocks, with repeats and catch
    trials."""
    pools = _Pools(stimuli)
    rules = _Rules.for_set(pools, config)
    sampler = _Sampler(pools, rules, random.Random(config.seed))
    shared = sampler.experimental(_shared_counts(config), list_keys=set())
    lists = tuple(_build_list(sampler, shared, config, index) for index in range(config.n_lists))
    return Design(
        config,
        lists,
        rules.within_scope,
        rules.between_scope,
        rules.practice_kind,
        dict(sampler.chooser.use),
        sampler.n_cross_list_duplicates,
        tuple(shared),
    )


def create_study_from_design(
    db: Database,
    slug: str,
    stimulus_set_id: int,
    design_config: DesignConfig,
    study_config: StudyConfig | None = None,
    *,
    title: str = "",
    target_participants: int | None = None,
) -> tuple[int, Design]:
    """Generate a design for the set and store it as a draft study; the design notes go into the config."""
    validate_slug(slug)
    design = generate_design(load_stimulus_table(db, stimulus_set_id), design_config)
    config = study_config or StudyConfig()
    config = replace(config, extra={**config.extra, "design": design.to_dict()})
    lists = design.lists
    if design_config.mode == "adaptive":  # every experimental trial says why it was asked
        from study.adaptive import mark_initial_lists

        lists = mark_initial_lists(design.lists, design.shared)
    study_id = create_study(
        db,
        slug,
        stimulus_set_id,
        lists,
        config,
        title=title,
        target_participants=target_participants,
        seeds=[design_config.seed] * len(design.lists),
    )
    return study_id, design


# ---------------------------------------------------------------- the set's structure


class _Pools:
    """The stimulus set grouped by category and superordinate, with what each level can draw from."""

    def __init__(self, stimuli: Sequence[StimulusInfo]):
        if not stimuli:
            raise ValueError("the stimulus set is empty")
        self.ids = [s.id for s in stimuli]
        self.cats: dict[CategoryKey, list[int]] = defaultdict(list)
        self.sup_images: dict[str, list[int]] = defaultdict(list)
        self.category_of: dict[int, CategoryKey] = {}
        for s in stimuli:
            key = (s.superordinate, s.category)
            self.cats[key].append(s.id)
            self.sup_images[s.superordinate].append(s.id)
            self.category_of[s.id] = key
        self.sup_cats: dict[str, list[CategoryKey]] = defaultdict(list)
        for key in self.cats:
            self.sup_cats[key[0]].append(key)
        self.superordinates = sorted(self.sup_images)
        self.border_pairs = [
            k for k, ids in self.cats.items() if len(ids) >= 2 and len(self.sup_cats[k[0]]) >= 2
        ]
        self.catch_pairs = (
            [k for k, ids in self.cats.items() if len(ids) >= 2] if len(self.superordinates) >= 2 else []
        )

    def categories_with(self, n: int) -> list[CategoryKey]:
        return [k for k, ids in self.cats.items() if len(ids) >= n]

    def superordinates_with(self, n: int) -> list[str]:
        return [s for s in self.superordinates if len(self.sup_images[s]) >= n]

    def describe(self) -> str:
        parts = [
            f"{sup or '(none)'}: {len(self.sup_cats[sup])} category(ies), {len(self.sup_images[sup])} images"
            for sup in self.superordinates
        ]
        return "; ".join(parts)


def _e3(sizes: Sequence[int]) -> int:
    """Number of ways to pick three items from three different groups of the given sizes."""
    e1 = e2 = e3 = 0
    for n in sizes:
        e3 += e2 * n
        e2 += e1 * n
        e1 += n
    return e3


@dataclass(frozen=True)
class _Rules:
    """Which definition each level uses for this set, and how many distinct triplets each allows."""

    between_scope: str
    within_scope: str
    practice_kind: str
    capacity: dict[str, int]

    @classmethod
    def for_set(cls, pools: _Pools, config: DesignConfig) -> _Rules:
        between = "superordinate" if len(pools.superordinates) >= 3 else "category"
        within = _within_scope(pools, config.within_class_scope)
        practice = "catch" if pools.catch_pairs else "between_class"
        rules = cls(between, within, practice, _capacities(pools, between, within))
        rules.check(pools, config)
        return rules

    def check(self, pools: _Pools, config: DesignConfig) -> None:
        """Refuse designs the set cannot support, naming what is missing."""
        n_catch = config.n_blocks * config.catch_per_block + (
            config.n_practice if self.practice_kind == "catch" else 0
        )
        demands = {
            "between_class": config.n_between_class
            + (config.n_practice if self.practice_kind != "catch" else 0),
            "within_class": config.n_within_class,
            "class_border": config.n_class_border,
            "catch": n_catch,
        }
        problems = []
        for kind, demand in demands.items():
            if demand and self.capacity[kind] == 0:
                problems.append(_missing(kind, pools, self.within_scope))
            elif demand > self.capacity[kind]:
                problems.append(
                    f"the set allows only {self.capacity[kind]} distinct {kind} triplets but each list "
                    f"needs {demand}; lower the count or add images"
                )
        if problems:
            raise ValueError(
                "the stimulus set cannot support this design: "
                + "; ".join(problems)
                + f" (set: {pools.describe()})"
            )


def _within_scope(pools: _Pools, requested: str) -> str:
    """auto: one category if every category has >= 3 images (or the set has no superordinates), else one
    superordinate."""
    if requested != "auto":
        return requested
    if all(len(ids) >= 3 for ids in pools.cats.values()) or pools.superordinates == [""]:
        return "category"
    return "superordinate"


def _capacities(pools: _Pools, between: str, within: str) -> dict[str, int]:
    sup_size = {s: len(ids) for s, ids in pools.sup_images.items()}
    groups = sup_size.values() if between == "superordinate" else [len(ids) for ids in pools.cats.values()]
    within_groups = [len(ids) for ids in pools.cats.values()] if within == "category" else sup_size.values()
    pairs = {k: math.comb(len(ids), 2) for k, ids in pools.cats.items()}
    return {
        "between_class": _e3(list(groups)),
        "within_class": sum(math.comb(n, 3) for n in within_groups),
        "class_border": sum(p * (sup_size[k[0]] - len(pools.cats[k])) for k, p in pairs.items()),
        "catch": sum(p * (len(pools.ids) - sup_size[k[0]]) for k, p in pairs.items())
        if pools.catch_pairs
        else 0,
    }


def _missing(kind: str, pools: _Pools, within_scope: str) -> str:
    return {
        "between_class": f"between_class triplets need at least 3 categories (the set has {len(pools.cats)})",
        "within_class": f"within_class triplets (one {within_scope}) need a {within_scope} "
        "with at least 3 images"
        + (" (try within_class_scope='superordinate')" if within_scope == "category" else ""),
        "class_border": "class_border triplets need a superordinate with at least 2 categories, "
        "one of them with at least 2 images",
        "catch": f"catch triplets (and catch-like practice) need at least 2 superordinates (the set has "
        f"{len(pools.superordinates)}) and a category with at least 2 images; or set catch_per_block=0",
    }[kind]


# ---------------------------------------------------------------- drawing balanced triplets


class _Chooser:
    """Balanced choices: the least-used item (ties broken at random) or, when `greedy` is off, any item."""

    def __init__(self, pools: _Pools, rng: random.Random):
        self.pools, self.rng, self.greedy = pools, rng, True
        self.use: Counter[int] = Counter({i: 0 for i in pools.ids})
        self.cat_use: Counter[CategoryKey] = Counter()
        self.sup_use: Counter[str] = Counter()

    def _best(self, options: Sequence, score: Callable[[Any], float], exclude: Sequence = ()):
        if len(options) > EXACT_POOL:
            options = self.rng.sample(options, POOL_SAMPLE)
        options = [o for o in options if o not in exclude]
        if not self.greedy:
            return self.rng.choice(options)
        return min(options, key=lambda o: (score(o), self.rng.random()))

    def image(self, ids: Sequence[int], exclude: Sequence[int] = ()) -> int:
        return self._best(ids, lambda i: self.use[i], exclude)

    def category(self, keys: Sequence[CategoryKey], exclude: Sequence[CategoryKey] = ()) -> CategoryKey:
        return self._best(keys, lambda k: self.cat_use[k] / len(self.pools.cats[k]), exclude)

    def superordinate(self, names: Sequence[str], exclude: Sequence[str] = ()) -> str:
        return self._best(names, lambda s: self.sup_use[s] / len(self.pools.sup_images[s]), exclude)

    def images(self, ids: Sequence[int], n: int) -> list[int]:
        chosen: list[int] = []
        for _ in range(n):
            chosen.append(self.image(ids, chosen))
        return chosen

    def record(self, triplet: Triplet) -> None:
        for i in triplet:
            self.use[i] += 1
            self.cat_use[self.pools.category_of[i]] += 1
            self.sup_use[self.pools.category_of[i][0]] += 1


def _between(ch: _Chooser, pools: _Pools, rules: _Rules) -> Triplet:
    if rules.between_scope == "superordinate":
        sups: list[str] = []
        for _ in range(3):
            sups.append(ch.superordinate(pools.superordinates, sups))
        return as_triplet(ch.image(pools.sup_images[s]) for s in sups)
    cats: list[CategoryKey] = []
    for _ in range(3):
        cats.append(ch.category(list(pools.cats), cats))
    return as_triplet(ch.image(pools.cats[c]) for c in cats)


def _within(ch: _Chooser, pools: _Pools, rules: _Rules) -> Triplet:
    if rules.within_scope == "category":
        ids = pools.cats[ch.category(pools.categories_with(3))]
    else:
        ids = pools.sup_images[ch.superordinate(pools.superordinates_with(3))]
    return as_triplet(ch.images(ids, 3))


def _border(ch: _Chooser, pools: _Pools, rules: _Rules) -> Triplet:
    pair = ch.category(pools.border_pairs)
    other = ch.category(pools.sup_cats[pair[0]], (pair,))
    return as_triplet([*ch.images(pools.cats[pair], 2), ch.image(pools.cats[other])])


def _catch(ch: _Chooser, pools: _Pools, rules: _Rules) -> Triplet:
    pair = ch.category(pools.catch_pairs)
    outsider = ch.superordinate(pools.superordinates, (pair[0],))
    return as_triplet([*ch.images(pools.cats[pair], 2), ch.image(pools.sup_images[outsider])])


DRAWERS = {"between_class": _between, "within_class": _within, "class_border": _border, "catch": _catch}


class _Sampler:
    """Draws triplets new to the list (always) and new to the design (whenever the set allows)."""

    def __init__(self, pools: _Pools, rules: _Rules, rng: random.Random):
        self.pools, self.rules, self.rng = pools, rules, rng
        self.chooser = _Chooser(pools, rng)
        self.design_keys: set[str] = set()
        self.n_cross_list_duplicates = 0

    def draw(self, kind: str, list_keys: set[str]) -> Triplet:
        for attempt in range(MAX_ATTEMPTS):
            self.chooser.greedy = attempt < GREEDY_ATTEMPTS
            triplet = DRAWERS[kind](self.chooser, self.pools, self.rules)
            key = triplet_key(triplet)
            if key in list_keys or (key in self.design_keys and attempt < NEW_TO_DESIGN_ATTEMPTS):
                continue
            self.n_cross_list_duplicates += key in self.design_keys
            self.design_keys.add(key)
            list_keys.add(key)
            self.chooser.record(triplet)
            return triplet
        raise ValueError(
            f"could not find another distinct {kind} triplet after {MAX_ATTEMPTS} tries (the set "
            f"allows {self.rules.capacity[kind]}); lower the number of {kind} triplets or add images"
        )

    def draw_new(self, kind: str, taken: set[str]) -> Triplet:
        """A triplet whose key is not in ``taken`` (added to it); ValueError when none is found."""
        for attempt in range(MAX_ATTEMPTS):
            self.chooser.greedy = attempt < GREEDY_ATTEMPTS
            triplet = DRAWERS[kind](self.chooser, self.pools, self.rules)
            if triplet_key(triplet) not in taken:
                taken.add(triplet_key(triplet))
                self.chooser.record(triplet)
                return triplet
        raise ValueError(f"no new {kind} triplet after {MAX_ATTEMPTS} tries")

    def experimental(self, counts: dict[TripletLevel, int], list_keys: set[str]) -> list[TrialSpec]:
        return [
            TrialSpec(self.draw(level.value, list_keys), TrialKind.EXPERIMENTAL, level)
            for level, n in counts.items()
            for _ in range(n)
        ]


def _shared_counts(config: DesignConfig) -> dict[TripletLevel, int]:
    return split_by_level(config.n_shared, config)


def split_by_level(n: int, config: DesignConfig) -> dict[TripletLevel, int]:
    """Split n triplets over the levels in proportion to the design's counts (largest remainder)."""
    counts = config.level_counts()
    exact = {level: n * k / config.n_experimental for level, k in counts.items()}
    split = {level: int(x) for level, x in exact.items()}
    for level in sorted(exact, key=lambda lv: exact[lv] - split[lv], reverse=True):
        if sum(split.values()) == n:
            break
        split[level] += 1
    return split


# ---------------------------------------------------------------- one list


def _build_list(
    sampler: _Sampler, shared: list[TrialSpec], config: DesignConfig, index: int
) -> tuple[TrialSpec, ...]:
    """Practice first; then experimental triplets shuffled into blocks, repeats later, catch trials
    interleaved."""
    list_keys = {triplet_key(spec.stimuli) for spec in shared}
    shared_counts = Counter(spec.level for spec in shared)
    own_counts = {level: n - shared_counts[level] for level, n in config.level_counts().items()}
    experimental = shared + sampler.experimental(own_counts, list_keys)
    return _arrange(sampler, experimental, list_keys, config)


def _arrange(
    sampler: _Sampler, experimental: list[TrialSpec], list_keys: set[str], config: DesignConfig
) -> tuple[TrialSpec, ...]:
    rng = sampler.rng
    rng.shuffle(experimental)
    blocks = [experimental[b :: config.n_blocks] for b in range(config.n_blocks)]
    _add_repeats(blocks, config.within_repeats, rng)
    for block in blocks:
        catches = [sampler.draw("catch", list_keys) for _ in range(config.catch_per_block)]
        _interleave(block, [TrialSpec(t, TrialKind.CATCH, None, odd_known=True) for t in catches], rng)
    practice = [_practice(sampler, list_keys) for _ in range(config.n_practice)]
    trials = practice + [replace(spec, block=b) for b, block in enumerate(blocks) for spec in block]
    return tuple(trials)


def draw_candidates(
    stimuli: Sequence[StimulusInfo], config: DesignConfig, n_per_level: int, exclude: set[str], seed: int
) -> dict[TripletLevel, list[Triplet]]:
    """Up to ``n_per_level`` distinct triplets of each level the design uses, by the level definitions, none
    of them in ``exclude`` (triplet keys): the candidate pool an adaptive design chooses its lists from."""
    pools = _Pools(stimuli)
    sampler = _Sampler(pools, _Rules.for_set(pools, config), random.Random(seed))
    taken = set(exclude)
    candidates: dict[TripletLevel, list[Triplet]] = {}
    for level, count in config.level_counts().items():
        if not count:
            continue
        candidates[level] = []
        try:
            for _ in range(n_per_level):
                candidates[level].append(sampler.draw_new(level.value, taken))
        except ValueError:  # the set has no more distinct triplets of this level
            pass
    return candidates


def arrange_list(
    stimuli: Sequence[StimulusInfo], config: DesignConfig, experimental: list[TrialSpec], seed: int
) -> tuple[TrialSpec, ...]:
    """A list around given experimental trials, exactly as a fixed design arranges its own: shuffled into
    blocks, within-list repeats, catch trials interleaved, practice first (catch and practice triplets new
    to the list)."""
    pools = _Pools(stimuli)
    sampler = _Sampler(pools, _Rules.for_set(pools, config), random.Random(seed))
    list_keys = {triplet_key(spec.stimuli) for spec in experimental}
    return _arrange(sampler, list(experimental), list_keys, config)


def _practice(sampler: _Sampler, list_keys: set[str]) -> TrialSpec:
    kind = sampler.rules.practice_kind
    triplet = sampler.draw(kind, list_keys)
    return TrialSpec(triplet, TrialKind.PRACTICE, None, block=PRACTICE_BLOCK, odd_known=kind == "catch")


def _add_repeats(blocks: list[list[TrialSpec]], n_repeats: int, rng: random.Random) -> None:
    """Show `n_repeats` experimental triplets again, each in a later block than (or later within) its
    original."""
    positions = [(b, i) for b, block in enumerate(blocks) for i in range(len(block))]
    earlier = [p for p in positions if p[0] < len(blocks) - 1]
    pool = earlier if len(earlier) >= n_repeats else positions
    originals = [blocks[b][i] for b, i in rng.sample(pool, n_repeats)]
    for original in originals:
        b = next(b for b, block in enumerate(blocks) if any(s is original for s in block))
        target = rng.randint(b + 1, len(blocks) - 1) if b < len(blocks) - 1 else b
        after = next(i for i, s in enumerate(blocks[b]) if s is original) + 1 if target == b else 0
        blocks[target].insert(
            rng.randint(after, len(blocks[target])), replace(original, kind=TrialKind.REPEAT)
        )


def _interleave(block: list[TrialSpec], extra: list[TrialSpec], rng: random.Random) -> None:
    """Insert `extra` at random, spread-out positions (one per equal segment of the block)."""
    k = len(extra)
    for j, spec in reversed(list(enumerate(extra))):
        lo, hi = (len(block) * j) // k, (len(block) * (j + 1)) // k
        block.insert(rng.randint(lo, hi), spec)


# ---------------------------------------------------------------- structure for imported designs


@dataclass(frozen=True)
class ImportStructure(LoadableConfig):
    """The structure options a generated design has, for a design read from a file: its experimental
    trials split into blocks (with breaks between them, in the file's order), catch trials drawn from the
    set and spread over each block, practice trials drawn from the set before the first block, and the
    file's left-to-right image order kept instead of shuffled per participant."""

    SECTION = "structure"

    n_blocks: int = 0  # 0: the file's own blocks (its `block` column; one block without it)
    catch_per_block: int = 0
    n_practice: int = 0
    keep_image_order: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("n_blocks", "catch_per_block", "n_practice", "seed"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"structure {name} must be a whole number >= 0, got {value!r}")

    @property
    def adds_trials(self) -> bool:
        return bool(self.n_blocks or self.catch_per_block or self.n_practice)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def structure_lists(
    lists: Sequence[Sequence[TrialSpec]], stimuli: Sequence[StimulusInfo], structure: ImportStructure
) -> list[list[TrialSpec]]:
    """Each list re-blocked and given drawn catch and practice trials as `structure` says (the file's
    practice trials stay first, its trial order within blocks is kept); the drawn triplets are new to
    their list. ValueError, naming what the set lacks, when it cannot supply them."""
    if not structure.adds_trials:
        return [list(specs) for specs in lists]
    pools = _Pools(stimuli)
    between = "superordinate" if len(pools.superordinates) >= 3 else "category"
    within = _within_scope(pools, "auto")
    practice_kind = "catch" if pools.catch_pairs else "between_class"
    rules = _Rules(between, within, practice_kind, _capacities(pools, between, within))
    needs = {"catch": structure.catch_per_block, practice_kind: structure.n_practice}
    missing = [_missing(kind, pools, within) for kind, n in needs.items() if n and rules.capacity[kind] == 0]
    if missing:
        raise ValueError(
            f"the stimulus set cannot supply the added trials: {'; '.join(missing)} (set: {pools.describe()})"
        )
    sampler = _Sampler(pools, rules, random.Random(structure.seed))
    return [_structured(list(specs), sampler, structure) for specs in lists]


def _structured(specs: list[TrialSpec], sampler: _Sampler, structure: ImportStructure) -> list[TrialSpec]:
    list_keys = {triplet_key(spec.stimuli) for spec in specs}
    practice = [spec for spec in specs if spec.kind == TrialKind.PRACTICE]
    main = [spec for spec in specs if spec.kind != TrialKind.PRACTICE]
    if structure.n_blocks:
        n = min(structure.n_blocks, max(len(main), 1))
        bounds = [round(b * len(main) / n) for b in range(n + 1)]
        blocks = [main[bounds[b] : bounds[b + 1]] for b in range(n)]
    else:
        numbers = sorted({spec.block for spec in main})
        blocks = [[spec for spec in main if spec.block == number] for number in numbers] or [[]]
    for block in blocks:
        catches = [sampler.draw("catch", list_keys) for _ in range(structure.catch_per_block)]
        _interleave(
            block, [TrialSpec(t, TrialKind.CATCH, None, odd_known=True) for t in catches], sampler.rng
        )
    practice += [_practice(sampler, list_keys) for _ in range(structure.n_practice)]
    return [replace(spec, block=PRACTICE_BLOCK) for spec in practice] + [
        replace(spec, block=b) for b, block in enumerate(blocks) for spec in block
    ]
