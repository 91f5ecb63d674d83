"""The human-aligned teacher: an affine map ``z = W x~ + b`` of standardised backbone features.

``fit_teacher(features, triplets, choice_probs=None, config=TeacherConfig(), val=None) -> Teacher``.
``features`` is float [n, D]; ``triplets`` int [m, 3] row indices into it, the odd one out LAST (so the
human-chosen pair is (0, 1)); ``choice_probs`` optional [m, 3] human choice distributions over pairs
``[p01, p02, p12]`` (several responses per triplet: uncertainty distillation).

x~ = (x - mu) / sigma with *scalar* mu, sigma (gLocal). W starts at a scaled identity chosen so the
initial pair similarities have unit spread. Objective: (1 - a) * [hard NLL or soft KL] + a * gLocal local
term + lambda * (||W - mean(diag W) I||^2 + ||b||^2). Afterwards a temperature is fitted on the validation
triplets (cross-entropy to the human choices by default, or matching the mean human choice entropy) and ECE
is reported.

Speed: a step transforms only the n distinct images, forms one n x n Gram matrix and gathers each
triplet's three similarities by index, so its cost does not grow with per-triplet feature copies; W is
free on the top ``subspace_dim`` principal directions of the training images and a scaled identity on
the rest (exact when the images span fewer directions), see ``teacher_problem``. Full-batch L-BFGS then
needs a few dozen steps.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from alignment.conventions import (
    anchor_similarities,
    check_triplets,
    correct_choices,
    entropy,
    pair_similarities,
    triplet_probabilities,
)
from alignment.splits import (
    TripletData,
    check_choice_probs,
    image_folds,
    object_disjoint_split,
    random_data_split,
)
from alignment.teacher_optimiser import EarlyStopping, adam_rounds, lbfgs_rounds, optimise
from alignment.teacher_problem import (
    AffineTransform,
    ImageSet,
    LocalTerm,
    LowRankAffine,
    Objective,
    principal_basis,
)
from alignment.temperature import cross_entropy, fit_temperature, human_targets
from alignment.triplet_metrics import expected_calibration_error
from common.atomic import atomic_write
from common.config import LoadableConfig

MIN_FOLD_VAL_JUDGMENTS = 30  # below this a fold's validation loss is too noisy to choose a weight on
PROGRESS_SECONDS = 1.0  # how often parallel folds report progress
# a fit holds about this many r x r float32 arrays at its peak (M, its gradient, L-BFGS's 20 pairs of
# history, autograd's and the regulariser's temporaries): measured 52-98 with W free on 1,000-3,000 dims
PARAMETER_COPIES = 100
# and about this many copies of the judged images' features [n, D] (standardised, per-fold, residuals)
FEATURE_COPIES = 8


@dataclass(frozen=True)
class TeacherConfig(LoadableConfig):
    """Teacher fitting settings; saved next to every fitted teacher."""

    SECTION = "teacher"

    loss: str = "auto"  # "hard" (NLL, pair (0,1) is the target), "soft" (KL to choice_probs), "auto"
    # lambda for ||W - mean(diag W) I||^2 + ||b||^2; None = pick from reg_weight_grid by validation loss
    # (image cross-validation, see fit_teacher)
    reg_weight: float | None = None
    reg_weight_grid: tuple[float, ...] = (1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0, 1000.0)
    local_weight: float = 0.0  # alpha for gLocal's local neighbourhood term (0 = off)
    local_tau: float = 1.0
    local_images: int = 1024  # images in the local term (a fixed, seeded subset)
    optimizer: str = "lbfgs"  # "lbfgs" (full batch) or "adam" (full or mini-batch)
    lr: float | None = None  # default: 1.0 for L-BFGS, 0.01 for Adam (W is parametrised relative to its init)
    batch_size: int | None = None  # Adam only: triplets per step; None = full batch
    max_steps: int = 200
    eval_every: int = 5  # steps between validation checks (L-BFGS iterations per check)
    patience: int = 3  # validation checks without improvement before stopping
    min_delta: float = 1e-4
    # folds over images for choosing reg_weight (0 = a held-out val_fraction instead): each fold validates on
    # images no fit in it saw, which is what a teacher is for (a random val split rewards memorising images)
    cv_folds: int = 5
    # the folds are cut from at most this many judgments (seeded sample; None = all): the cross-validation
    # cost stops growing with the study, the final fit still uses every judgment
    cv_max_judgments: int | None = 200_000
    val_fraction: float = (
        0.1  # of judgments; of images when object_disjoint (hold-out selection and fixed weights)
    )
    object_disjoint: bool = False
    # "nll" (= "auto"): minimise the val cross-entropy to the human choices, which matches the teacher's
    # entropy to the humans' in expectation even with one response per triplet; "entropy": match the mean
    # entropy of the given choice_probs directly (biased low when triplets have few responses); "none"
    temperature_fit: str = "auto"
    use_bias: bool = True
    seed: int = 0
    max_full_batch_images: int = 200000
    subspace_dim: int | None = 256  # W free on the top-k principal directions, scaled identity elsewhere
    # torch threads while fitting; None = as is. 1 was fastest at every size measured (bench/teacher_scale,
    # 1M judgments over 1,854 images: fit 54 CPU s on 1 thread, 230 on 2): the fit's many small element-wise
    # ops wait on each other across threads.
    num_threads: int | None = 1
    # image folds fitted at once, each in a thread of its own (the folds are independent fits; the results
    # are the same as one after another). None: as many as the cores allow at num_threads torch threads
    # per fold (one at a time when num_threads is None, torch's default of all cores)
    cv_workers: int | None = None

    def __post_init__(self):
        choices = {
            "loss": ("auto", "hard", "soft"),
            "optimizer": ("lbfgs", "adam"),
            "temperature_fit": ("auto", "nll", "entropy", "none"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(
                    f"TeacherConfig.{name} must be one of {allowed}; got {getattr(self, name)!r}"
                )
        object.__setattr__(self, "reg_weight_grid", tuple(float(w) for w in self.reg_weight_grid))
        weights = self.reg_weight_grid if self.reg_weight is None else (self.reg_weight,)
        if (
            not 0 <= self.local_weight < 1
            or not weights
            or min(weights) < 0
            or not 0 <= self.val_fraction < 1
            or self.cv_folds == 1
            or self.cv_folds < 0
            or (self.cv_workers is not None and self.cv_workers < 1)
        ):
            raise ValueError(
                "TeacherConfig needs 0 <= local_weight < 1, reg weights >= 0 (a non-empty grid when "
                "reg_weight is None), 0 <= val_fraction < 1, cv_folds 0 (off) or >= 2, cv_workers None "
                "or >= 1"
            )


@dataclass(frozen=True, eq=False)
class Teacher:
    """A fitted affine transform (in factors, see ``LowRankAffine``) with its standardisation, temperature,
    config and fit summary."""

    affine: LowRankAffine
    mean: float
    std: float
    temperature: float
    config: TeacherConfig = field(default_factory=TeacherConfig)
    summary: dict = field(default_factory=dict)

    def transform(self, features: np.ndarray) -> np.ndarray:
        """Aligned embeddings float32 [n, D] (use dot products divided by ``temperature``)."""
        features = np.asarray(features, dtype=np.float32)
        if features.ndim != 2 or features.shape[1] != self.affine.dim:
            raise ValueError(f"features must be [n, {self.affine.dim}]; got {features.shape}")
        return self.affine.apply((features - self.mean) / self.std)

    def probabilities(self, features: np.ndarray, triplets: np.ndarray) -> np.ndarray:
        """Calibrated choice distributions [m, 3] over pairs [p01, p02, p12]."""
        z = self.transform(features)
        return triplet_probabilities(pair_similarities(z, check_triplets(triplets, len(z))), self.temperature)

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``teacher.npz``, ``config.json`` and ``summary.json`` into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write(
            directory / "teacher.npz",
            lambda h: np.savez(
                h,
                basis=self.affine.basis,
                core=self.affine.core,
                identity_scale=np.float64(self.affine.identity_scale),
                bias=self.affine.bias,
                mean=np.float64(self.mean),
                std=np.float64(self.std),
                temperature=np.float64(self.temperature),
            ),
        )
        atomic_write(directory / "config.json", json.dumps(asdict(self.config), indent=2).encode())
        atomic_write(directory / "summary.json", json.dumps(self.summary, indent=2).encode())
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike) -> Teacher:
        directory = Path(directory)
        if not (directory / "teacher.npz").is_file():
            raise FileNotFoundError(
                f"no teacher.npz in {directory}; expected a directory written by Teacher.save"
            )
        with np.load(directory / "teacher.npz") as data:
            arrays = {k: data[k] for k in data.files}
        config = TeacherConfig.from_dict(json.loads((directory / "config.json").read_text()))
        summary_path = directory / "summary.json"
        summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
        return cls(
            _saved_affine(arrays),
            float(arrays["mean"]),
            float(arrays["std"]),
            float(arrays["temperature"]),
            config,
            summary,
        )


def _saved_affine(arrays: dict[str, np.ndarray]) -> LowRankAffine:
    """The map of a saved teacher; one saved before the factored form kept the explicit W [D, D] (read as
    W = 0 I + I W I, still correct, as large as it always was)."""
    if "weight" in arrays:
        weight = arrays["weight"]
        return LowRankAffine(np.eye(len(weight), dtype=np.float32), weight, 0.0, arrays["bias"])
    return LowRankAffine(arrays["basis"], arrays["core"], float(arrays["identity_scale"]), arrays["bias"])


@contextmanager
def _torch_threads(count: int | None):
    """Temporarily set torch's intra-op thread count (restored afterwards)."""
    previous = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _standardisation(features: np.ndarray) -> tuple[float, float]:
    mean, std = float(features.mean()), float(features.std())
    if not np.isfinite(std) or std == 0:
        raise ValueError("features have zero or non-finite spread; cannot standardise them")
    return mean, std


def _initial_scale(train: ImageSet, basis: torch.Tensor) -> float:
    """Scale s of W = s I that gives the initial training-pair similarities unit standard deviation."""
    with torch.no_grad():
        spread = float(AffineTransform(basis, 1.0, use_bias=False).pair_values(train).std())
    return 1.0 / np.sqrt(spread) if spread > 0 else 1.0


def _split_data(data: TripletData, n_images: int, val: TripletData | None, config: TeacherConfig):
    if val is not None or config.val_fraction == 0:
        return data, val
    if config.object_disjoint:
        return object_disjoint_split(data, n_images, config.val_fraction, config.seed)
    return random_data_split(data, config.val_fraction, config.seed)


def _validated(features, triplets, choice_probs, anchors) -> tuple[np.ndarray, TripletData]:
    features = np.asarray(features, dtype=np.float32)
    if features.ndim != 2 or not np.isfinite(features).all():
        raise ValueError(f"features must be a finite [n, D] array; got shape {features.shape}")
    triplets = check_triplets(np.empty((0, 3), np.int64) if triplets is None else triplets, len(features))
    anchors = check_triplets(
        np.empty((0, 3), np.int64) if anchors is None else anchors, len(features), "anchor"
    )
    if len(triplets) + len(anchors) == 0:
        raise ValueError(
            "the teacher needs judgments: odd-one-out triplets, anchor rows (head, close, far) or both"
        )
    probs = None if choice_probs is None else check_choice_probs(choice_probs, len(triplets))
    return features, TripletData(triplets, probs, anchors)


@dataclass
class _Problem:
    """What every candidate fit shares: the basis, the training/validation image sets, the local term."""

    basis: torch.Tensor
    scale: float
    train: ImageSet
    val: ImageSet | None
    local: LocalTerm | None


def _build_problem(standardised, train_data, val_data, soft: bool, config: TeacherConfig) -> _Problem:
    train_rows = train_data.images()
    if config.optimizer == "lbfgs" and len(train_rows) > config.max_full_batch_images:
        raise ValueError(
            f"{len(train_rows)} distinct training images exceed max_full_batch_images="
            f"{config.max_full_batch_images} for full-batch L-BFGS; use optimizer='adam' with a batch_size"
        )
    basis = principal_basis(torch.from_numpy(standardised[train_rows]), config.subspace_dim, config.seed)
    train = ImageSet.build(standardised, train_data, basis, soft)
    local = None
    if config.local_weight > 0:
        generator = np.random.default_rng(config.seed)
        picked = generator.choice(train_rows, size=min(config.local_images, len(train_rows)), replace=False)
        local = LocalTerm(torch.from_numpy(standardised[np.sort(picked)]), basis, config.local_tau)
    val = None
    if val_data is not None:
        val = ImageSet.build(standardised, val_data, basis, soft and val_data.choice_probs is not None)
    return _Problem(basis, _initial_scale(train, basis), train, val, local)


@dataclass
class _Candidate:
    """One point of a regularisation path: its weight, validation loss, parameters and val similarities."""

    weight: float
    val_loss: float
    params: list[torch.Tensor]
    history: list[dict]
    val_sims: tuple[np.ndarray, np.ndarray]


class _WarmPath:
    """The regularisation path of one train/val problem, strongest weight first, each fit starting from the
    previous solution: a strongly pulled fit converges in a few steps from the identity, and each weaker one
    in a few steps from its neighbour, so a whole path costs about one cold fit."""

    def __init__(self, problem: _Problem, config: TeacherConfig):
        self.problem, self.config, self.started = problem, config, False
        self.transform = AffineTransform(problem.basis, problem.scale, config.use_bias)

    def fit(self, weight: float, progress, max_steps: int | None = None) -> _Candidate:
        """Fit at ``weight`` from where the path is; a warm start stops at its first flat check (it starts
        near its optimum). ``max_steps``: a fixed budget instead (no validation set needed)."""
        problem, config = self.problem, self.config
        if self.started:
            config = replace(config, patience=1)
        if max_steps is not None:
            config = replace(config, max_steps=max_steps, patience=max_steps + 1)
        self.started = True
        objective = Objective(self.transform, problem.train, weight, config.local_weight, problem.local)
        history = _run(objective, problem.val, config, progress)
        if problem.val is None:
            return _Candidate(weight, float("nan"), [], history, (np.empty((0, 3)), np.empty((0, 2))))
        with torch.no_grad():
            triplet_sims, anchor_sims = self.transform.sims(problem.val)
        return _Candidate(
            weight,
            objective.data_loss(problem.val),
            [p.detach().clone() for p in self.transform.params],
            history,
            (triplet_sims.numpy().astype(np.float64), anchor_sims.numpy().astype(np.float64)),
        )

    def restore(self, candidate: _Candidate) -> None:
        with torch.no_grad():
            for param, value in zip(self.transform.params, candidate.params, strict=True):
                param.copy_(value)


def _strongest_first(config: TeacherConfig) -> list[float]:
    return sorted(config.reg_weight_grid, reverse=True)


def _overall_progress(progress, index: int, count: int):
    """One progress bar across ``count`` fits."""
    if progress is None:
        return None
    return lambda step, total: progress(index * total + step, count * total)


def _select_on_holdout(
    problem: _Problem, config: TeacherConfig, progress
) -> tuple[Objective, list[dict], dict]:
    """Walk the regularisation path on one validation set; stop when the validation loss stops improving."""
    path, weights = _WarmPath(problem, config), _strongest_first(config)
    best = path.fit(weights[0], _overall_progress(progress, 0, len(weights)))
    losses = {best.weight: best.val_loss}
    for index, weight in enumerate(weights[1:], start=1):
        candidate = path.fit(weight, _overall_progress(progress, index, len(weights)))
        losses[weight] = candidate.val_loss
        if not candidate.val_loss < best.val_loss:
            break
        best = candidate
    path.restore(best)
    objective = Objective(path.transform, problem.train, best.weight, config.local_weight, problem.local)
    selection = {"method": "holdout", "path": "strongest first, warm starts, stop when val loss rises"}
    return objective, best.history, _search_summary(best.weight, losses, selection)


def _search_summary(chosen: float, losses: dict[float, float], selection: dict) -> dict:
    return {
        "reg_weight": chosen,
        "reg_weight_val_loss": {str(k): v for k, v in losses.items()},
        "selection": selection,
    }


@dataclass
class _FoldSearch:
    """The outcome of image cross-validation: the chosen weight, mean and per-fold losses, and the pooled
    out-of-fold similarities at the chosen weight (for the temperature and calibration report)."""

    weight: float
    mean_losses: dict[float, float]
    selection: dict
    val: TripletData
    val_sims: tuple[np.ndarray, np.ndarray]
    budgets: dict[float, int]  # the final path: weight -> L-BFGS iterations (mean over folds)


def _fit_path(problem: _Problem, budgets: dict[float, int], config: TeacherConfig, progress):
    """The final fit on every judgment: the folds' path (strongest first, warm starts), each weight for the
    number of iterations the folds' early stopping took there, so no validation set is needed."""
    path, history = _WarmPath(problem, config), []
    for index, (weight, steps) in enumerate(budgets.items()):
        history += path.fit(weight, _overall_progress(progress, index, len(budgets)), max_steps=steps).history
    objective = Objective(path.transform, problem.train, weight, config.local_weight, problem.local)
    return objective, history


def _cv_sample(data: TripletData, config: TeacherConfig) -> TripletData:
    """At most ``cv_max_judgments`` judgments (a seeded random share of each kind) to cut the folds from:
    the folds only choose the weight and the path's iteration counts; the final fit uses every judgment."""
    if config.cv_max_judgments is None or len(data) <= config.cv_max_judgments:
        return data
    rng, share = np.random.default_rng(config.seed), config.cv_max_judgments / len(data)
    rows = [np.sort(rng.permutation(n)[: int(share * n)]) for n in (len(data.triplets), len(data.anchors))]
    return data.subset(*rows)


def _cross_validate(
    standardised: np.ndarray, data: TripletData, soft: bool, config: TeacherConfig, progress
) -> _FoldSearch | str:
    """k object-disjoint image folds; each walks the path (strongest first, warm starts) until its validation
    loss rises, and the weight with the lowest mean validation loss over the weights every fold reached is
    chosen. Returns why not, when the study is too small for folds with at least ``MIN_FOLD_VAL_JUDGMENTS``
    validation judgments each."""
    sample = _cv_sample(data, config)
    try:
        folds = image_folds(sample, len(standardised), config.cv_folds, config.seed)
    except ValueError as error:
        return str(error)
    too_small = _folds_too_small(folds, data, config)
    if too_small:
        return too_small
    walks = _fold_walks(standardised, folds, soft, config, progress)
    per_fold, fold_sims, fold_steps = [w[0] for w in walks], [w[1] for w in walks], [w[2] for w in walks]
    mean_losses, best = _lowest_mean_loss(per_fold, _strongest_first(config))
    budgets = _final_budgets(list(mean_losses), best, fold_steps, config)
    selection = _cv_selection(config, len(sample), folds, per_fold, fold_steps, budgets)
    pooled = (
        np.concatenate([fold[best][0] for fold in fold_sims]),
        np.concatenate([fold[best][1] for fold in fold_sims]),
    )
    return _FoldSearch(best, mean_losses, selection, _pooled_val(folds, data), pooled, budgets)


def _folds_too_small(folds, data: TripletData, config: TeacherConfig) -> str:
    """Why the folds cannot choose the weight (empty when they can): a fold with fewer than
    ``MIN_FOLD_VAL_JUDGMENTS`` validation judgments gives a loss too noisy to rank weights by, and the message
    says roughly how many judged images would be enough."""
    smallest = min(len(val) for _, val, _ in folds)
    if smallest >= MIN_FOLD_VAL_JUDGMENTS:
        return ""
    needed = int(np.ceil(len(data.images()) * (MIN_FOLD_VAL_JUDGMENTS / max(smallest, 1)) ** (1 / 3)))
    return (
        f"{config.cv_folds} image folds leave {smallest} validation judgments in the smallest fold "
        f"(need {MIN_FOLD_VAL_JUDGMENTS}); about {needed} judged images at this density would do"
    )


def _walk_fold(problem: _Problem, progress, config: TeacherConfig) -> _FoldWalk:
    """One fold's regularisation path, strongest first, stopped as soon as its validation loss rises (weaker
    weights only overfit more, and stopping early is what makes k folds cost about k fits). Returns, per
    weight reached, the validation loss, the validation similarities and the iterations taken. ``progress``
    gets (step, total) over the whole path."""
    path, weights = _WarmPath(problem, config), _strongest_first(config)
    losses, sims, steps, best = {}, {}, {}, None
    for index, weight in enumerate(weights):
        candidate = path.fit(weight, _overall_progress(progress, index, len(weights)))
        losses[weight], sims[weight] = candidate.val_loss, candidate.val_sims
        steps[weight] = candidate.history[-1]["step"] if candidate.history else 0
        if best is not None and not candidate.val_loss < losses[best]:
            break  # this fold's validation loss rose: weaker weights only overfit more
        best = weight
    return losses, sims, steps


def fold_workers(config: TeacherConfig) -> int:
    """How many image folds are fitted at once: ``config.cv_workers``, or as many as the cores run side by
    side at ``num_threads`` torch threads each (one when torch may use every core itself)."""
    if config.cv_workers is not None:
        return min(config.cv_workers, config.cv_folds)
    if config.num_threads is None:
        return 1
    return max(1, min(config.cv_folds, (os.cpu_count() or 1) // config.num_threads))


_FoldWalk = tuple[dict, dict, dict]  # one fold's val losses, val similarities and iterations per weight


def _fold_walks(standardised, folds, soft: bool, config: TeacherConfig, progress) -> list[_FoldWalk]:
    """Every fold's regularisation path (``_walk_fold``), in fold order. The folds are independent fits on
    deterministic inputs, so running ``cv_workers`` of them at once in threads (torch releases the GIL in its
    kernels) gives the same results as one after another, in about 1/workers of the wall time when the
    cores are free."""
    n_weights = len(config.reg_weight_grid)
    workers = fold_workers(config)
    if workers == 1:  # one fold's problem in memory at a time
        return [
            _walk_fold(
                _build_problem(standardised, train, val, soft, config),
                _overall_progress(progress, f, len(folds)),
                config,
            )
            for f, (train, val, _) in enumerate(folds)
        ]
    done = [0] * len(folds)  # each fold's progress units (it reports (step, n_weights * max_steps))
    stop = threading.Event()

    def walk(f: int, train: TripletData, val: TripletData) -> _FoldWalk:
        def report(step: int, _total: int) -> None:
            if stop.is_set():
                raise _FoldsStopped
            done[f] = step

        return _walk_fold(_build_problem(standardised, train, val, soft, config), report, config)

    with ThreadPoolExecutor(workers, thread_name_prefix="teacher-fold") as pool:
        futures = [pool.submit(walk, f, train, val) for f, (train, val, _) in enumerate(folds)]
        try:
            _await_folds(futures, progress, done, n_weights * config.max_steps)
        except BaseException:
            stop.set()  # the running folds stop at their next check; the queued ones never start
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    return [future.result() for future in futures]


class _FoldsStopped(Exception):
    """Raised inside a fold thread when the caller gave up (cancelled, or another fold failed)."""


def _await_folds(futures, progress, done: list[int], units_per_fold: int) -> None:
    """Wait for the fold threads, reporting progress from this (the caller's) thread, where a cancellation
    raised by ``progress`` belongs; a fold's error is raised here as soon as it happens."""
    pending = futures
    while pending:
        if progress is not None:
            progress(sum(done), len(done) * units_per_fold)
        finished, pending = wait(futures, timeout=PROGRESS_SECONDS, return_when=FIRST_EXCEPTION)
        errors = [error for future in finished if (error := future.exception()) is not None]
        if errors:
            raise errors[0]


def _lowest_mean_loss(per_fold: list[dict], weights: list[float]) -> tuple[dict[float, float], float]:
    """The mean validation loss of each weight every fold reached (a prefix of the path, so each mean is over
    all folds) and the weight where it is lowest."""
    common = [w for w in weights if all(w in losses for losses in per_fold)]  # a prefix of the path
    mean_losses = {w: float(np.mean([losses[w] for losses in per_fold])) for w in common}
    return mean_losses, min(common, key=mean_losses.__getitem__)


def _final_budgets(common: list[float], best: float, fold_steps: list[dict], config: TeacherConfig):
    """The final fit walks the same path, down to the chosen weight, with the mean iterations the folds
    needed at each weight: the iteration counts are CV-chosen too, so the final fit needs no held-out set."""
    return {
        w: max(config.eval_every, int(round(np.mean([steps[w] for steps in fold_steps]))))
        for w in common[: common.index(best) + 1]
    }


def _pooled_val(folds, data: TripletData) -> TripletData:
    """Every fold's validation judgments together: each was judged on images its fold never trained on, so
    together they calibrate the temperature on unseen images."""
    return TripletData(
        np.concatenate([v.triplets for _, v, _ in folds]),
        None if data.choice_probs is None else np.concatenate([v.choice_probs for _, v, _ in folds]),
        np.concatenate([v.anchors for _, v, _ in folds]),
    )


def _cv_selection(config: TeacherConfig, sampled: int, folds, per_fold, fold_steps, budgets) -> dict:
    """How the weight was chosen, per fold, for ``summary["selection"]``: enough to see whether the folds
    agreed and how long each fit ran."""
    selection = {
        "method": "image_cv",
        "folds": config.cv_folds,
        "path": "strongest first, warm starts, each fold stops when its val loss rises; the weight with the "
        "lowest mean val loss over the weights every fold reached",
        "judgments_sampled": sampled,
        "workers": fold_workers(config),  # folds fitted at once (threads); the results do not depend on it
        "fold_images": [int(len(images)) for _, _, images in folds],
        "fold_train_judgments": [len(train) for train, _, _ in folds],
        "fold_val_judgments": [len(val) for _, val, _ in folds],
        "fold_val_loss": [{str(w): v for w, v in losses.items()} for losses in per_fold],  # per fold
        "fold_steps": [{str(w): v for w, v in steps.items()} for steps in fold_steps],
    }
    selection["final_path_steps"] = {str(w): n for w, n in budgets.items()}
    return selection


def _fit_at(
    problem: _Problem, weight: float, config: TeacherConfig, progress
) -> tuple[Objective, list[dict]]:
    """One fit at a fixed regulariser weight (early stopping on val, or on the training objective)."""
    transform = AffineTransform(problem.basis, problem.scale, config.use_bias)
    objective = Objective(transform, problem.train, weight, config.local_weight, problem.local)
    return objective, _run(objective, problem.val, config, progress)


def _run(objective: Objective, val_images: ImageSet | None, config: TeacherConfig, progress) -> list[dict]:
    """Optimise with early stopping on the validation data loss (training objective if no val set)."""
    params = objective.transform.params
    if config.optimizer == "lbfgs":
        rounds = lbfgs_rounds(params, objective, config.lr or 1.0, config.eval_every)
    else:
        generator = torch.Generator().manual_seed(config.seed)
        n_train = len(objective.train)

        def batch_loss() -> torch.Tensor:
            if config.batch_size is None or config.batch_size >= n_train:
                return objective()
            return objective(
                objective.train.batch(torch.randint(0, n_train, (config.batch_size,), generator=generator))
            )

        rounds = adam_rounds(params, batch_loss, config.lr or 0.01, config.eval_every)

    def check() -> float:
        return objective.data_loss(val_images) if val_images is not None else float(objective().detach())

    stopper = EarlyStopping(params, config.patience, config.min_delta)
    return optimise(rounds, stopper, check, config.max_steps, progress)


def _holdout_sims(standardised, affine: LowRankAffine, val: TripletData) -> tuple[np.ndarray, np.ndarray]:
    """The fitted model's similarities on the val judgments (only the val images are transformed)."""
    rows = val.images()
    z = np.zeros((int(rows.max()) + 1, affine.dim), np.float32)
    z[rows] = affine.apply(standardised[rows])
    return pair_similarities(z, val.triplets), anchor_similarities(z, val.anchors)


def _validation_report(
    sims: np.ndarray, anchor_sims: np.ndarray, val: TripletData, config: TeacherConfig
) -> tuple[float, dict]:
    """Fit the temperature on the val similarities and describe calibration there.

    Odd-one-out figures (val_accuracy, cross-entropy, ECE, entropies) are over the val triplets; anchor rows
    add val_anchor_accuracy (share with s(head, close) > s(head, far)) and share the temperature."""
    if config.temperature_fit == "none":
        return 1.0, {"temperature_method": "none"}
    method = "nll" if config.temperature_fit == "auto" else config.temperature_fit
    temperature = fit_temperature(sims, val.choice_probs, method, anchor_sims)
    report: dict = {"temperature_method": method}
    if len(sims):
        probs = triplet_probabilities(sims, temperature)
        report |= {
            "val_accuracy": float(correct_choices(sims).mean()),
            "val_cross_entropy": cross_entropy(sims, human_targets(len(sims), val.choice_probs), temperature),
            "val_ece": expected_calibration_error(probs),
            "val_model_entropy": float(entropy(probs).mean()),
        }
        if val.choice_probs is not None:
            report["val_human_entropy"] = float(entropy(val.choice_probs).mean())
    if len(anchor_sims):
        report["val_anchor_accuracy"] = float(correct_choices(anchor_sims).mean())
    return temperature, report


def fit_teacher(
    features: np.ndarray,
    triplets: np.ndarray | None,
    *,
    choice_probs: np.ndarray | None = None,
    anchors: np.ndarray | None = None,
    config: TeacherConfig = TeacherConfig(),
    val: TripletData | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Teacher:
    """Fit the affine teacher on human triplets (odd one out last) and/or anchor rows (head, close, far) in
    one likelihood; see the module docstring.

    How the regulariser weight is chosen (``summary["selection"]``): with an explicit ``val``, on it; with a
    fixed ``config.reg_weight``, nothing is chosen and ``val_fraction`` of the judgments is held out for early
    stopping and the temperature; otherwise by ``config.cv_folds`` object-disjoint image folds (the final fit
    uses every judgment, the temperature the pooled out-of-fold similarities), falling back to a held-out
    ``val_fraction`` -- with the reason stated -- when the study is too small for image folds.
    """
    features, data, val, soft = _checked_inputs(features, triplets, choice_probs, anchors, val, config)
    _check_fits_in_memory(features.shape[1], len(data.images()), config)
    mean, std = _standardisation(features)
    standardised = (features - mean) / std
    clock = _Clock()
    with _torch_threads(config.num_threads):
        folds, fallback = _image_cv(standardised, data, val, soft, config, progress)
        cv_seconds = clock.elapsed()
        if folds is not None:
            fit = _fit_after_folds(standardised, data, folds, soft, config)
        else:
            fit = _fit_on_split(standardised, data, val, soft, fallback, config, progress)
    fit_seconds = clock.elapsed()
    affine = fit.objective.transform.factors()
    temperature, report = _calibrate(standardised, affine, fit.val_data, folds, config)
    summary = {
        **_fit_summary(fit, soft, folds is not None),
        **_timings(fit_seconds, cv_seconds),
        "temperature": temperature,
        **report,
        "history": fit.history,
    }
    return Teacher(affine, mean, std, temperature, config, summary)


def _physical_memory_bytes() -> int | None:
    """This machine's memory, or None where the system does not say (``os.sysconf`` is POSIX only)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def _check_fits_in_memory(dim: int, n_images: int, config: TeacherConfig) -> None:
    """Refuse, before any work, a fit that could not fit in this machine's memory: W is free on
    r = min(subspace_dim, images, D) directions (all D when subspace_dim is None), and the fit's memory is
    O(r^2 + n D), so only a large subspace_dim (or None) on wide features gets near it."""
    rank = dim if config.subspace_dim is None else min(config.subspace_dim, n_images, dim)
    needed = 4 * (PARAMETER_COPIES * rank**2 + FEATURE_COPIES * n_images * dim)
    available = _physical_memory_bytes()
    if available is not None and needed > available:
        raise ValueError(
            f"the teacher fit would need about {needed / 2**30:.1f} GB (W free on {rank:,} of {dim:,} "
            f"feature dimensions, {n_images:,} images), more than this machine's "
            f"{available / 2**30:.1f} GB; set subspace_dim (default 256) lower, or use fewer feature sources "
            "or a smaller grid"
        )


def _checked_inputs(
    features, triplets, choice_probs, anchors, val: TripletData | None, config: TeacherConfig
):
    """Validate the judgments (and an explicit ``val``) against the features before any work, and settle the
    loss: 'auto' is soft exactly when choice distributions were given, and 'soft' without them is refused."""
    features, data = _validated(features, triplets, choice_probs, anchors)
    if val is not None:
        val = _validated(features, val.triplets, val.choice_probs, val.anchors)[1]
    soft = config.loss == "soft" or (config.loss == "auto" and data.choice_probs is not None)
    if soft and data.choice_probs is None:
        raise ValueError(
            "TeacherConfig.loss='soft' needs choice_probs (human choice distributions per triplet)"
        )
    return features, data, val, soft


def _image_cv(
    standardised, data: TripletData, val: TripletData | None, soft: bool, config: TeacherConfig, progress
) -> tuple[_FoldSearch | None, str]:
    """Image cross-validation when it is what chooses the weight (no explicit ``val``, no fixed weight, folds
    asked for): the folds, or why the study was too small for them (stated in the summary by the fallback)."""
    if val is None and config.reg_weight is None and config.cv_folds:
        searched = _cross_validate(standardised, data, soft, config, progress)
        if isinstance(searched, str):
            return None, searched
        return searched, ""
    return None, ""


@dataclass
class _FinalFit:
    """The final fit and what it was fitted and validated on, for the temperature and the summary."""

    train_data: TripletData
    val_data: TripletData | None
    objective: Objective
    history: list[dict]
    search: dict


def _fit_after_folds(standardised, data: TripletData, folds: _FoldSearch, soft: bool, config: TeacherConfig):
    """The final fit on every judgment along the folds' path; the pooled out-of-fold judgments stand as its
    validation set (for the temperature only: the model never saw their images in the fold that judged
    them)."""
    problem = _build_problem(standardised, data, None, soft, config)
    objective, history = _fit_path(problem, folds.budgets, config, None)
    search = _search_summary(folds.weight, folds.mean_losses, folds.selection)
    return _FinalFit(data, folds.val, objective, history, search)


def _fit_on_split(
    standardised, data: TripletData, val, soft: bool, fallback: str, config: TeacherConfig, progress
) -> _FinalFit:
    """The fit on a train/val split (an explicit ``val`` or a held-out ``val_fraction``): the weight chosen
    on the held-out judgments (with why image folds were not used, if they were wanted), or fixed."""
    train_data, val_data = _split_data(data, len(standardised), val, config)
    problem = _build_problem(standardised, train_data, val_data, soft, config)
    if config.reg_weight is not None:
        objective, history = _fit_at(problem, config.reg_weight, config, progress)
        fixed = {"reg_weight": config.reg_weight, "selection": {"method": "fixed"}}
        return _FinalFit(train_data, val_data, objective, history, fixed)
    if problem.val is None:
        raise ValueError(
            "choosing reg_weight needs validation judgments: set reg_weight, cv_folds or val_fraction"
        )
    objective, history, search = _select_on_holdout(problem, config, progress)
    if fallback:
        search["selection"]["why_not_image_cv"] = fallback
    return _FinalFit(train_data, val_data, objective, history, search)


def _calibrate(
    standardised, affine: LowRankAffine, val_data, folds: _FoldSearch | None, config: TeacherConfig
):
    """The temperature and calibration report on the validation judgments (1.0 without any): after folds,
    on the out-of-fold similarities already computed; otherwise on the fitted model's held-out ones."""
    if val_data is None:
        return 1.0, {"temperature_method": "none"}
    sims = folds.val_sims if folds is not None else _holdout_sims(standardised, affine, val_data)
    return _validation_report(sims[0], sims[1], val_data, config)


class _Clock:
    """Wall and CPU (all threads of the process) seconds since it started."""

    def __init__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def elapsed(self) -> tuple[float, float]:
        return time.perf_counter() - self.wall, time.process_time() - self.cpu


def _timings(fit: tuple[float, float], cv: tuple[float, float]) -> dict:
    """Wall and CPU seconds of the whole fit and of its cross-validation (choosing the regulariser with the
    image folds; the rest is the final fit). Folds fitted in parallel take more CPU than wall seconds."""
    return {
        "fit_seconds": round(fit[0], 3),
        "fit_cpu_seconds": round(fit[1], 3),
        "cv_seconds": round(cv[0], 3),
        "cv_cpu_seconds": round(cv[1], 3),
    }


def _fit_summary(fit: _FinalFit, soft: bool, from_folds: bool) -> dict:
    """What the fit was trained and validated on, for ``summary`` (the timings, the search and the
    calibration report follow it)."""
    val_data, history = fit.val_data, fit.history
    return {
        "loss": "soft" if soft else "hard",
        "n_train_triplets": len(fit.train_data.triplets),
        "n_train_anchors": len(fit.train_data.anchors),
        "n_train_images": len(fit.objective.train.y),
        "subspace_dim": fit.objective.transform.basis.shape[1],
        "n_val_triplets": 0 if val_data is None else len(val_data.triplets),
        "n_val_anchors": 0 if val_data is None else len(val_data.anchors),
        "val_images": "unseen (out-of-fold)" if from_folds else "held out by the split",
        "steps": history[-1]["step"] if history else 0,
        **fit.search,
    }
