"""The teacher on real human judgments: the Zappos shoes' anchor triplets, scored on shoes no fit saw.

Data (not in the repository; the folder is an argument): ``images/N.jpg`` (85 shoes) and
``deconflicted_triplets.csv.zip`` (283,770 rows ``head,close,far``, a crowd worker judged ``head`` more
similar to ``close`` than to ``far``). A seeded split deals the shoes into 60 training and 25 unseen ones;
the teacher is fitted on the rows made only of training shoes, and every number below is the agreement
(share of rows with s(head, close) > s(head, far), chance 1/2) on the rows made only of unseen shoes, with
a 95% bootstrap CI over distinct (head, {close, far}) triplets. Features come from the original files.

Rows: the raw backbone (dot and cosine), the teacher with the default ``TeacherConfig`` (regulariser chosen
by image cross-validation on the training shoes), and a few other settings. "best" is the setting with the
highest unseen agreement *among those tried*: chosen on the test shoes, so it is optimistic. Each teacher
row also gives its image-CV loss (mean validation loss over folds of the *training* shoes at the chosen
weight; the folds deal the same shoes and judgments for every backbone and layer set, so the losses
compare them), and the row with the lowest is named as the honest choice.

Measured 2026-12-01 (seed 0, 6,590 unseen rows; machine load 11-22 on 2 cores, so fit times are inflated):
tf_efficientnet_lite0 default 0.762; lite0+lite1+lite2 default 0.780 [0.769, 0.790], L2-normalised 0.785
[0.774, 0.794]; lite0+lite1+lite2+mobilenetv2_100 raw cosine 0.736, default 0.778 [0.768, 0.788],
L2-normalised 0.786 [0.776, 0.796].
Intermediate layers (``NAME@k``: the trunk before stage k, averaged over space), default teacher, later the
same day (CV loss on the training shoes in brackets after the CI):
lite0 0.763 [0.752, 0.773] (0.4028); lite0 + lite0@4 + @5 + @6 0.776 [0.766, 0.786] (0.3908; 0.782 in a
second run where the near-tied CV picked reg_weight 0.1 over 1.0); lite0, lite1, lite2 each with @4, @5, @6
0.787 [0.777, 0.797] (0.3602: the CV-chosen setting). Also tried outside this bench, none better: a
diagonal or low-rank (16) + diagonal metric instead of the affine map (lite0: 0.746-0.762), an ensemble of
the five fold teachers with the full one (0.784 vs 0.790 alone), per-source L2 normalisation (0.789, CV
loss 0.3589), per-dimension z-scores from the training shoes (lite0 with layers 0.767, CV loss 0.4600).
Grid sources (``NAME@k:gridG``: the map averaged over each cell of a G x G grid, cells concatenated; the
photos are catalogue shots in one pose, so where heel, toe and shaft are matters), measured 2026-12-02,
load 3.5-4.3 on 2 cores, default teacher, lite0, lite1, lite2 each with the pre-logits and @4, @5, @6 on a
grid: grid2 0.790 [0.780, 0.800] (0.3383, fit 6.8 s); grid3 0.801 [0.791, 0.811] (0.3304, 11.5 s); grid4
0.795 [0.785, 0.805] (0.3274, 20.7 s, 22,784 dimensions, 7.5 GB peak: W is dense D x D); plain + grid2
0.791 (0.3378); plain + grid2 + grid3 0.797 (0.3288); lite0 alone: grid2 0.794 (0.3524), grid3 0.802
[0.792, 0.812] (0.3416). The CV-chosen setting of all these is grid4, 0.795: grid3 beats no grid in every
fold (mean -0.0296, SE 0.0104) but grid4 - grid3 is -0.0030 (SE 0.0027). Target 0.80 not reached by the
CV-chosen setting; the default backbone stays lite0 (the layer sources and the three backbones cost 3x the
feature extraction and cannot be a student's backbone).

    python -m bench.teacher_real [FOLDER] [--backbones timm:tf_efficientnet_lite0 timm:a+timm:b@5:grid3 ...]
        [--settings NAME ...] [--seed 0]
"""

from __future__ import annotations

import argparse
import io
import time
import zipfile
from pathlib import Path

import numpy as np

DEFAULT_FOLDER = Path("../shared/data/zappos")
TRIPLETS_FILE = "deconflicted_triplets.csv.zip"
N_TRAIN_SHOES = 60
# settings tried besides the default: a fixed regulariser weight, or other TeacherConfig fields
SETTINGS = {
    "default (image CV)": {},
    "reg_weight 0.01": {"reg_weight": 0.01},
    "reg_weight 0.1": {"reg_weight": 0.1},
    "reg_weight 1": {"reg_weight": 1.0},
    "no bias": {"use_bias": False},
    "L2-normalised features": {"normalise": True},
    "L2-normalised features, no bias": {"normalise": True, "use_bias": False},
}


def load_zappos(folder: Path) -> tuple[list[Path], np.ndarray]:
    """The image paths in index order (N.jpg is row N) and the anchor rows [m, 3] (head, close, far)."""
    with zipfile.ZipFile(folder / TRIPLETS_FILE) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".csv"))
        rows = np.loadtxt(io.BytesIO(archive.read(name)), delimiter=",", dtype=np.int64)
    n_images = int(rows.max()) + 1
    paths = [folder / "images" / f"{i}.jpg" for i in range(n_images)]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"{folder / 'images'} lacks {len(missing)} images the rows use, e.g. {missing[:3]}"
        )
    return paths, rows


def shoe_split(rows: np.ndarray, n_images: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(training rows, unseen rows, unseen shoes): rows made only of the 60 training shoes, or only of the
    rest."""
    unseen = np.ones(n_images, dtype=bool)
    unseen[np.random.default_rng(seed).permutation(n_images)[:N_TRAIN_SHOES]] = False
    in_unseen = unseen[rows]
    return rows[~in_unseen.any(axis=1)], rows[in_unseen.all(axis=1)], np.flatnonzero(unseen)


def _groups(rows: np.ndarray) -> list[str]:
    pair = np.sort(rows[:, 1:], axis=1)
    return [f"{h}>{a}-{b}" for h, a, b in zip(rows[:, 0], pair[:, 0], pair[:, 1], strict=True)]


def agreement(embeddings: dict[str, np.ndarray], rows: np.ndarray, similarity: str, n_boot: int) -> dict:
    """Per representation: (agreement, CI low, CI high) on anchor rows, paired bootstrap over triplets."""
    from alignment.model_comparison import compare_models

    result = compare_models(
        embeddings,
        rows,
        task="anchor",
        held_out="unseen",
        similarity=similarity,
        groups=_groups(rows),
        n_boot=n_boot,
    )
    return {row.model: (row.accuracy, row.ci_low, row.ci_high, row.n_triplets) for row in result.results()}


def source_features(spec: str, paths, cache: Path) -> np.ndarray:
    """Features of one backbone, or of several joined by "+" (each standardised by its scalar mean and SD,
    then concatenated: ``alignment.features.combine_sources``, as the pipeline does)."""
    from alignment.backbones import source_names
    from alignment.features import combine_sources, extract_source

    return combine_sources(
        [
            extract_source(name, paths, cache_dir=cache / "features", weights_dir=cache / "weights")
            for name in source_names(spec)
        ]
    )[0]


def run_backbone(
    backbone_name: str, paths, rows, seed: int, cache: Path, n_boot: int, settings: list[str]
) -> list[dict]:
    from alignment.teacher import TeacherConfig, fit_teacher

    features = source_features(backbone_name, paths, cache)
    train, test, unseen = shoe_split(rows, len(paths), seed)
    results = []
    raw = (
        agreement({"raw": features}, test, "dot", n_boot)["raw"],
        agreement({"raw": features}, test, "cosine", n_boot)["raw"],
    )
    for similarity, values in zip(("dot", "cosine"), raw, strict=True):
        results.append(
            {"backbone": backbone_name, "model": f"raw ({similarity})", "fit_s": 0.0, "agreement": values}
        )
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    for label in settings:
        overrides = dict(SETTINGS[label])
        inputs = unit if overrides.pop("normalise", False) else features
        start = time.perf_counter()
        teacher = fit_teacher(inputs, None, anchors=train, config=TeacherConfig(seed=seed, **overrides))
        fit_s = time.perf_counter() - start
        values = agreement({"teacher": teacher.transform(inputs)}, test, "dot", n_boot)["teacher"]
        results.append(
            {
                "backbone": backbone_name,
                "model": f"teacher, {label}",
                "fit_s": fit_s,
                "agreement": values,
                "reg_weight": teacher.summary["reg_weight"],
                "selection": teacher.summary.get("selection", {}).get("method", ""),
                "cv_loss": _cv_loss(teacher.summary),
            }
        )
        print(f"  {backbone_name} {label}: {values[0]:.4f} ({fit_s:.1f} s)", flush=True)
    print(
        f"{backbone_name}: {len(train)} training rows over {N_TRAIN_SHOES} shoes, {len(test)} unseen rows "
        "over "
        f"{len(unseen)} shoes ({values[3]} distinct triplets)",
        flush=True,
    )
    return results


def _cv_loss(summary: dict) -> float:
    """The image cross-validation's mean validation loss at the chosen weight (folds of the training shoes
    only; NaN when the weight was not chosen by image CV): comparable across backbones and layer sets,
    because the folds deal the same shoes and judgments."""
    if summary.get("selection", {}).get("method") != "image_cv":
        return float("nan")
    return float(min(summary["reg_weight_val_loss"].values()))


def _table(results: list[dict]) -> str:
    lines = [
        "| backbone | representation | unseen-shoe agreement [95% CI] | triplets | reg_weight | "
        "CV loss (training shoes) | fit |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        acc, low, high, n = r["agreement"]
        reg = f"{r['reg_weight']:g} ({r['selection']})" if "reg_weight" in r else ""
        cv = f"{r['cv_loss']:.4f}" if np.isfinite(r.get("cv_loss", np.nan)) else ""
        lines.append(
            f"| {r['backbone']} | {r['model']} | {acc:.3f} [{low:.3f}, {high:.3f}] | {n} | {reg} | {cv} | "
            f"{r['fit_s']:.1f} s |"
        )
    teachers = [r for r in results if r["model"].startswith("teacher")]
    best = max(teachers, key=lambda r: r["agreement"][0])
    lines.append(
        f"\nbest setting tried (chosen on the unseen shoes, optimistic): {best['backbone']} {best['model']} "
        f"{best['agreement'][0]:.3f}"
    )
    by_cv = [r for r in teachers if np.isfinite(r.get("cv_loss", np.nan))]
    if by_cv:
        chosen = min(by_cv, key=lambda r: r["cv_loss"])
        acc, low, high, _ = chosen["agreement"]
        lines.append(
            f"chosen by the lowest CV loss on the training shoes (honest): {chosen['backbone']} "
            f"{chosen['model']} {acc:.3f} [{low:.3f}, {high:.3f}]"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", type=Path, default=DEFAULT_FOLDER)
    parser.add_argument("--backbones", nargs="+", default=["timm:tf_efficientnet_lite0"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "alignlab-bench")
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    args = parser.parse_args()
    if not (args.folder / TRIPLETS_FILE).is_file():
        print(
            f"skipped: no Zappos data at {args.folder} (expected {TRIPLETS_FILE} and images/); "
            "pass the folder"
        )
        return
    paths, rows = load_zappos(args.folder)
    print(f"{len(rows)} anchor rows over {len(paths)} shoes; seed {args.seed}", flush=True)
    results = []
    for name in args.backbones:
        results += run_backbone(name, paths, rows, args.seed, args.cache, args.n_boot, args.settings)
    print(_table(results))


if __name__ == "__main__":
    main()
