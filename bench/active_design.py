"""Replay benchmark for active triplet selection: does asking what the teacher does not know need fewer
answers than asking at random, for the same accuracy on images the teacher never saw?

Two data sets, each replayed as a *pool*: a strategy may only ask candidates that have an answer.

- planted: simulated people judge odd-one-out triplets in a planted similarity space (``alignment.synthetic``:
  the human similarity is the dot product of latent factors weighted by importance, choices are
  softmax(similarity / T) over the three pairs); the backbone features hold the same factors with other
  weights plus nuisance directions. The pool is every candidate triplet of training images; each ask draws a
  fresh answer from the planted choice distribution. Accuracy = expected agreement with a simulated person
  on triplets of unseen images (the planted probability of the pair the teacher predicts; ties count 0).
- zappos: the Zappos shoes' anchor rows (head, close, far) from crowd workers (``bench.teacher_real``'s
  split: 60 training shoes, 25 unseen). The pool is the rows made of training shoes, each answered as
  stored; accuracy = share of rows of unseen shoes with s(head, close) > s(head, far).

Every strategy starts from the same random ``--start`` answers per seed, then asks ``--batch`` at a time up
to ``--budget`` (``alignment.active.select_batch``: the active strategies keep the default 20 % random
share and the decorrelation rule); the teacher is refitted after each batch (``fit_teacher``, fixed
regulariser weight per data set and no cross-validation, so a fit takes about a second: the settings are
printed; early stopping and the temperature use a 10 % hold-out drawn only from the answers asked at random
-- the start and each batch's random share -- since actively chosen answers are a biased validation set;
``--val-from-all`` draws it from every answer instead). Strategies: random; uncertainty (the teacher's
predictive entropy); disagreement (teacher vs raw backbone, Jensen-Shannon divergence, as an adaptive study
uses it); information (BALD over teachers drawn from a Laplace posterior around the fit, no refits:
``alignment.active.laplace_samples``); optionally bald (``--strategies ... bald``: BALD over ``--members``
bootstrap teachers, ``--members`` extra fits per batch). Printed:
accuracy vs answers, mean and 95 % t-interval over seeds; and the answers each strategy needs to reach
the accuracy random reaches with the full budget (the first crossing of the mean curve, linearly
interpolated, by the same rule for random itself; "> budget" when it never does).

    python -m bench.active_design [ZAPPOS_FOLDER] [--seeds 5] [--only planted|zappos] ...

Measured 2026-12-02 (README, "Adaptive designs"; 2 cores shared with other work, load 2.3-4.0): on the
planted model, refitting every 50 answers (``--batch 50``, the default, as an adaptive study's
``refit_every``), information needs 0.49x random's answers and uncertainty 0.51x over seeds 0-9 (0.50x
and 0.51x on seeds 0-4); every 100 answers 0.57x and 0.55x; every 225-300 answers 0.61-0.67x (seeds 0-4). On
Zappos no strategy differs from random at 1,000 answers (uncertainty +0.005 [-0.008, +0.019],
information +0.008 [-0.007, +0.023]). Margin, EPIG and expected-gradient-length scoring were tried and did
worse (0.57x, 0.54x, 0.62x), and so did greedy batches that add each pick's Fisher information to the
Laplace posterior before rescoring (0.55-0.57x against 0.50x for information, seeds 0-4).
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from scipy import stats

from alignment.active import BatchRule, Member, backbone_member, score_pool, select_batch
from alignment.conventions import (
    ODD_ITEM_OF_PAIR,
    PAIRS,
    anchor_similarities,
    correct_choices,
    pair_similarities,
    predicted_pair,
    triplet_probabilities,
)
from alignment.splits import TripletData
from alignment.synthetic import planted_triplets
from alignment.teacher import Teacher, TeacherConfig, fit_teacher

STRATEGIES = ("random", "uncertainty", "disagreement", "information", "bald")


@dataclass
class Replay:
    """One data set as a pool of askable candidates, how a candidate is answered, and the unseen test."""

    name: str
    kind: str  # "triplet" (odd one out last) or "anchor" (head, close, far)
    features: np.ndarray
    pool: np.ndarray  # [m, 3] candidates among training images
    answer: Callable[[np.ndarray, np.random.Generator], np.ndarray]  # pool rows -> answered rows
    accuracy: Callable[[np.ndarray], float]  # aligned embedding -> unseen-image accuracy
    config: TeacherConfig


def _random_triplets(images: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    rows = np.stack([rng.choice(images, size=3, replace=False) for _ in range(n)])
    return np.unique(np.sort(rows, axis=1), axis=0)


def planted_replay(seed: int, args) -> Replay:
    """Simulated people over ``args.planted_images`` images, 2/3 of them for training."""
    data = planted_triplets(
        args.planted_images, args.planted_dim, 1, latent_dim=8, temperature=args.planted_t, seed=seed
    )
    human, rng = data.human_embedding, np.random.default_rng(seed + 1000)
    order = rng.permutation(len(human))
    train, unseen = order[: 2 * len(order) // 3], order[2 * len(order) // 3 :]
    pool = _random_triplets(train, args.pool, rng)
    test = _random_triplets(unseen, args.test, rng)
    test_probs = triplet_probabilities(pair_similarities(human, test), args.planted_t)

    def answer(candidates: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        probs = triplet_probabilities(pair_similarities(human, candidates), args.planted_t)
        chosen = np.minimum((rng.random(len(probs))[:, None] > np.cumsum(probs, axis=1)).sum(axis=1), 2)
        orders = np.array([[a, b, ODD_ITEM_OF_PAIR[c]] for c, (a, b) in enumerate(PAIRS)])
        return np.take_along_axis(candidates, orders[chosen], axis=1)

    def accuracy(embedding: np.ndarray) -> float:
        predicted = predicted_pair(pair_similarities(embedding, test))
        return float(np.where(predicted >= 0, test_probs[np.arange(len(test)), predicted], 0.0).mean())

    config = TeacherConfig(reg_weight=args.planted_reg, cv_folds=0, seed=seed, num_threads=1)
    return Replay("planted", "triplet", data.features, pool, answer, accuracy, config)


def zappos_replay(seed: int, args, features: np.ndarray, rows: np.ndarray) -> Replay:
    from bench.teacher_real import shoe_split

    train, test, _ = shoe_split(rows, len(features), seed)

    def accuracy(embedding: np.ndarray) -> float:
        return float(correct_choices(anchor_similarities(embedding, test)).mean())

    config = TeacherConfig(reg_weight=args.zappos_reg, cv_folds=0, seed=seed, num_threads=1)
    return Replay("zappos", "anchor", features, train, lambda c, rng: c, accuracy, config)


def _data(replay: Replay, rows: np.ndarray) -> TripletData:
    return TripletData(anchors=rows) if replay.kind == "anchor" else TripletData(triplets=rows)


def _fit(replay: Replay, answered: np.ndarray, seed: int, from_random: np.ndarray | None = None) -> Teacher:
    """Fit on the answers. With ``from_random`` (which answers were drawn at random: the start and each
    batch's random share), the ``val_fraction`` of answers that early stopping and the temperature use is
    drawn from those only -- actively chosen answers are the teacher's hardest cases, a biased validation
    set -- and the rest trains; without it, a random ``val_fraction`` of all answers."""
    config = replace(replay.config, seed=seed)
    if from_random is None or from_random.all():  # all random: the ordinary hold-out is the same thing
        judgments = _data(replay, answered)
        return fit_teacher(replay.features, judgments.triplets, anchors=judgments.anchors, config=config)
    n_val = min(int(round(config.val_fraction * len(answered))), int(from_random.sum()))
    val = np.random.default_rng(seed).choice(np.flatnonzero(from_random), size=n_val, replace=False)
    train = np.ones(len(answered), dtype=bool)
    train[val] = False
    data, val_data = _data(replay, answered[train]), _data(replay, answered[val])
    return fit_teacher(replay.features, data.triplets, anchors=data.anchors, config=config, val=val_data)


def _member(replay: Replay, teacher: Teacher) -> Member:
    return Member(teacher.transform(replay.features), teacher.temperature)


def _members(replay: Replay, teacher: Teacher, answered: np.ndarray, strategy: str, args, rng) -> list:
    """The scorers: the teacher; beside it the raw backbone (disagreement, as a study uses it) or, for
    "bald", ``--members`` teachers fitted on bootstrap resamples of the answers instead."""
    member = _member(replay, teacher)
    if strategy == "disagreement":
        return [member, backbone_member(member, replay.features, replay.pool, replay.kind)]
    if strategy != "bald":
        return [member]
    members = []
    for b in range(args.members):
        resample = answered[rng.integers(0, len(answered), len(answered))]
        members.append(_member(replay, _fit(replay, resample, seed=1 + b)))
    return members


def run_strategy(replay: Replay, strategy: str, seed: int, args) -> list[float]:
    """Unseen-image accuracy after each batch: at start, start + batch, ..., budget answers."""
    rng = np.random.default_rng(seed)
    asked = np.zeros(len(replay.pool), dtype=bool)
    start = rng.choice(len(replay.pool), size=args.start, replace=False)  # the same for every strategy
    asked[start] = True
    answered = replay.answer(replay.pool[start], np.random.default_rng(seed + 1))
    from_random = np.ones(len(answered), dtype=bool)
    answer_rng = np.random.default_rng([seed, STRATEGIES.index(strategy)])
    curve = []
    while True:
        teacher = _fit(replay, answered, seed, from_random if args.val_from_random else None)
        curve.append(replay.accuracy(teacher.transform(replay.features)))
        if len(answered) >= args.budget:
            return curve
        candidates = np.flatnonzero(~asked)
        members = _members(replay, teacher, answered, strategy, args, answer_rng)
        scoring = "disagreement" if strategy == "bald" else strategy
        scores = score_pool(scoring, replay.pool[candidates], members, replay.kind, asked=answered)
        chosen = select_batch(
            replay.pool[candidates],
            scores,
            args.batch,
            strategy=strategy,
            rng=answer_rng,
            rule=BatchRule(random_share=args.random_share, max_direction_overlap=args.max_overlap),
            embedding=members[0].embedding,
            teacher_run=f"{strategy}-{len(answered)}",
        )
        rows = candidates[[c.pool_index for c in chosen]]
        asked[rows] = True
        answered = np.concatenate([answered, replay.answer(replay.pool[rows], answer_rng)])
        from_random = np.concatenate([from_random, [c.strategy == "random" for c in chosen]])


def _interval(values: np.ndarray) -> tuple[float, float]:
    """95 % t-interval half width's bounds of the mean over seeds."""
    mean = values.mean()
    if len(values) < 2:
        return mean, mean
    half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
    return mean - half, mean + half


def answers_to_reach(budgets: np.ndarray, curve: np.ndarray, goal: float) -> float:
    """First answer count where the (mean) curve reaches ``goal``, linearly interpolated; inf if never."""
    above = np.flatnonzero(curve >= goal)
    if not above.size:
        return float("inf")
    i = above[0]
    if i == 0:
        return float(budgets[0])
    fraction = (goal - curve[i - 1]) / (curve[i] - curve[i - 1])
    return float(budgets[i - 1] + fraction * (budgets[i] - budgets[i - 1]))


def _per_seed_ratio(budgets: np.ndarray, values: np.ndarray, random: np.ndarray) -> str:
    """Paired per seed: the answers a strategy's curve needs to reach that seed's random accuracy at the full
    budget, as a share of the budget; mean and 95 % t-interval over seeds, and how many never reach it."""
    ratios = np.array(
        [answers_to_reach(budgets, curve, goal) for curve, goal in zip(values, random[:, -1], strict=True)]
    )
    ratios = ratios / budgets[-1]
    finite = ratios[np.isfinite(ratios)]
    never = f"; {len(ratios) - len(finite)} of {len(ratios)} seeds never" if len(finite) < len(ratios) else ""
    if not len(finite):
        return "> 1" + never
    low, high = _interval(finite)
    return f"{finite.mean():.2f} [{low:.2f}, {high:.2f}]{never}"


def report(name: str, curves: dict[str, np.ndarray], budgets: np.ndarray, seconds: dict[str, float]) -> str:
    """Accuracy table (mean [95 % CI] per strategy and answer count) and answers needed to match random."""
    lines = [
        f"\n## {name}: unseen-image accuracy vs answers (mean [95% CI] over {len(curves['random'])} seeds)\n"
    ]
    lines.append("| answers | " + " | ".join(curves) + " |")
    lines.append("|---|" + "---|" * len(curves))
    for j, budget in enumerate(budgets):
        cells = []
        for values in curves.values():
            low, high = _interval(values[:, j])
            cells.append(f"{values[:, j].mean():.4f} [{low:.4f}, {high:.4f}]")
        lines.append(f"| {budget} | " + " | ".join(cells) + " |")
    goal = curves["random"][:, -1].mean()
    lines.append(f"\nanswers to reach random's accuracy at the full budget ({budgets[-1]}: {goal:.4f}):\n")
    lines.append(
        "| strategy | answers | × random's | × random's per seed, mean [95% CI] | gain over random at full "
        "budget [95% CI, paired] | time |"
    )
    lines.append("|---|---|---|---|---|---|")
    for strategy, values in curves.items():
        needed = answers_to_reach(budgets, values.mean(axis=0), goal)
        ratio = needed / budgets[-1]
        gain = values[:, -1] - curves["random"][:, -1]
        low, high = _interval(gain)
        shown = f"{needed:.0f}" if np.isfinite(needed) else f"> {budgets[-1]}"
        ratio_text = f"{ratio:.2f}" if np.isfinite(ratio) else "> 1"
        lines.append(
            f"| {strategy} | {shown} | {ratio_text} | {_per_seed_ratio(budgets, values, curves['random'])} | "
            f"{gain.mean():+.4f} [{low:+.4f}, {high:+.4f}] | "
            f"{seconds[strategy]:.0f} s |"
        )
    return "\n".join(lines)


def run_dataset(make: Callable[[int], Replay], args) -> str:
    budgets = np.arange(args.start, args.budget + 1, args.batch)
    curves: dict[str, list] = {s: [] for s in args.strategies}
    seconds = dict.fromkeys(args.strategies, 0.0)
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        replay = make(seed)
        for strategy in args.strategies:
            began = time.perf_counter()
            curves[strategy].append(run_strategy(replay, strategy, seed, args))
            seconds[strategy] += time.perf_counter() - began
            print(
                f"  {replay.name} seed {seed} {strategy}: {np.round(curves[strategy][-1], 4).tolist()}",
                flush=True,
            )
    return report(replay.name, {s: np.array(c) for s, c in curves.items()}, budgets, seconds)


def _zappos_maker(args):
    from bench.teacher_real import TRIPLETS_FILE, load_zappos, source_features

    if not (args.folder / TRIPLETS_FILE).is_file():
        print(f"zappos skipped: no Zappos data at {args.folder} (expected {TRIPLETS_FILE} and images/)")
        return None
    paths, rows = load_zappos(args.folder)
    features = source_features(args.backbone, paths, args.cache)
    return lambda seed: zappos_replay(seed, args, features, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", type=Path, default=Path("../shared/data/zappos"))
    parser.add_argument("--only", choices=("planted", "zappos"))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument(
        "--first-seed", type=int, default=0, help="seeds first-seed .. first-seed + seeds - 1"
    )
    parser.add_argument("--start", type=int, default=100, help="random answers every strategy starts from")
    parser.add_argument(
        "--batch", type=int, default=50, help="answers between refits (an adaptive study's refit_every)"
    )
    parser.add_argument("--budget", type=int, default=1000)
    parser.add_argument("--members", type=int, default=4, help="bootstrap teachers for disagreement")
    parser.add_argument(
        "--strategies", nargs="+", choices=STRATEGIES, default=["random", "uncertainty", "information"]
    )
    parser.add_argument(
        "--val-from-all",
        dest="val_from_random",
        action="store_false",
        help="validate the teacher on a random share of all answers, chosen ones too (default: only on the "
        "answers drawn at random)",
    )
    parser.add_argument(
        "--max-overlap",
        type=float,
        default=BatchRule().max_direction_overlap,
        help="decorrelation: the largest plane overlap allowed between two triplets of a batch",
    )
    parser.add_argument(
        "--random-share",
        type=float,
        default=BatchRule().random_share,
        help="share of each active batch drawn at random (an adaptive study's unbiased evaluation set)",
    )
    parser.add_argument("--planted-reg", type=float, default=0.1, help="the teacher's fixed reg_weight")
    parser.add_argument("--zappos-reg", type=float, default=1.0, help="(0.1 gave unstable small fits)")
    parser.add_argument("--pool", type=int, default=20000, help="planted: candidate triplets")
    parser.add_argument("--test", type=int, default=5000, help="planted: unseen test triplets")
    parser.add_argument("--planted-images", type=int, default=150)
    parser.add_argument("--planted-dim", type=int, default=32)
    parser.add_argument("--planted-t", type=float, default=1.0)
    parser.add_argument("--backbone", default="timm:tf_efficientnet_lite0")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "alignlab")
    args = parser.parse_args()
    if args.batch < 1 or args.budget <= args.start or (args.budget - args.start) % args.batch:
        parser.error(
            f"--budget minus --start must be a positive multiple of --batch (the curve is read after each "
            f"batch); got budget {args.budget}, start {args.start}, batch {args.batch}"
        )
    print(f"settings: {vars(args)}; load {os.getloadavg()}", flush=True)
    began = time.perf_counter()
    if args.only != "zappos":
        print(run_dataset(lambda seed: planted_replay(seed, args), args), flush=True)
    if args.only != "planted":
        make = _zappos_maker(args)
        if make is not None:
            print(run_dataset(make, args), flush=True)
    print(f"\ntotal {time.perf_counter() - began:.0f} s; load {os.getloadavg()}")


if __name__ == "__main__":
    main()
