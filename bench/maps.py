"""Benchmark: the maps page at 1,000 / 10,000 / 50,000 images, and the scalable measures against the exact
n x n ones at 2,000 images.

    .venv/bin/python -m bench.maps                          # 1k, 10k, 50k (UMAP) + the 2k comparison
    .venv/bin/python -m bench.maps --sizes 1000 --method pca --no-accuracy

Data: synthetic clustered embeddings, 768-D float32 (before: clustered by a hidden "colour"; after: by the
category the stimuli are labelled with), n stimuli with 128 px JPEG thumbnails, and a study whose
`--judgments` odd-one-out judgments (default 20,000, RT in 500-3000 ms) were made by simulated people
following the after representation. Every page cell runs in a fresh Python process (AppTest on
app/views/maps.py), after the database was filled by another process, so peak RSS is the page's own.

Columns per size:
- first map: a cold process opens the page (imports, UMAP compilation, neighbour search, both 2-D maps,
  reorganisation and human comparison, figures, the map files); "fits" counts 2-D layouts computed;
  "(its CPU)": the CPU seconds of that process until then (user + system), less sensitive than wall time
  to other work on a shared machine
- warm page: a rerun of the open page (what each click costs)
- restart: a new process opens the page again; neighbours and layouts come from the disk cache
- peak RSS: maximum resident memory of the page process
- payload: what a browser receives for the page: Streamlit's messages (every element's protobuf) plus
  the maps.html the iframe loads; plotly.min.js (a static file, cached by the browser) is listed apart
Growth exponents: log(value ratio) / log(size ratio) between consecutive sizes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DIM = 768
N_CATEGORIES = 20


def synthetic(n: int, seed: int):
    """Two float32 representations of the same n images: clustered by one labelling before, another after."""
    import numpy as np

    rng = np.random.default_rng(seed)
    colour, category = rng.integers(0, N_CATEGORIES, n), rng.integers(0, N_CATEGORIES, n)
    centres = rng.normal(size=(2, N_CATEGORIES, DIM)).astype(np.float32)
    before = 3 * centres[0][colour] + centres[1][category]
    before += rng.standard_normal(size=(n, DIM), dtype=np.float32)
    after = centres[0][colour] + 3 * centres[1][category]
    after += rng.standard_normal(size=(n, DIM), dtype=np.float32)
    return before, after, category


def simulated_judgments(after, n_judgments: int, seed: int):
    """[m, 3] random triplets with the odd one out last, chosen by cosine similarity in `after`, and RTs."""
    import numpy as np

    from alignment.reorganisation import pair_cosine

    rng = np.random.default_rng(seed)
    n = len(after)
    triplets = np.stack([rng.choice(n, 3, replace=False) for _ in range(n_judgments)])
    sims = np.stack(
        [pair_cosine(after, triplets[:, a], triplets[:, b]) for a, b in ((0, 1), (0, 2), (1, 2))], axis=1
    )
    odd = np.array([2, 1, 0])[sims.argmax(axis=1)]  # the item outside the most similar pair
    keep = np.array([[p for p in range(3) if p != o] + [o] for o in range(3)])[odd]
    return np.take_along_axis(triplets, keep, axis=1), rng.uniform(500, 3000, n_judgments)


def fill_cell(n: int, home: str, n_judgments: int) -> dict:
    """In this (fresh) process: n stimuli with thumbnails, two runs with embeddings, a judged study."""
    start = time.perf_counter()
    os.environ["ALIGNLAB_HOME"] = home
    os.environ.pop("DATABASE_URL", None)
    _fill_database(Path(home), n, n_judgments)
    return {"setup": time.perf_counter() - start}


def page_cell(home: str, method: str) -> dict:
    """In this (fresh) process: the maps page on the filled database, first load and a rerun."""
    import resource

    os.environ["ALIGNLAB_HOME"] = home
    os.environ.pop("DATABASE_URL", None)
    start = time.perf_counter()
    from streamlit.testing.v1 import AppTest

    import alignment.maps

    fits = []
    real = alignment.maps.embed_2d
    alignment.maps.embed_2d = lambda x, config, nb=None: (fits.append(1), real(x, config, nb))[1]
    at = AppTest.from_file(str(ROOT / "app" / "views" / "maps.py"), default_timeout=3600)
    at.session_state["map_method"] = method
    at.run()
    first = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_SELF)
    first_cpu = usage.ru_utime + usage.ru_stime
    if at.exception:
        raise RuntimeError(at.exception)
    start = time.perf_counter()
    at.run()
    rerun = time.perf_counter() - start
    if at.exception:
        raise RuntimeError(at.exception)
    from workflows.maps.bundle import bundles_dir
    from workflows.maps.report import plotly_js_file

    src = at.get("iframe")[0].proto.src
    maps_html = (bundles_dir() / src.split("/")[-2] / "maps.html").stat().st_size
    return {
        "first": first,
        "first_cpu": first_cpu,
        "rerun": rerun,
        "fits": len(fits),
        "page_mb": _message_bytes(at) / 1e6,
        "maps_html_mb": maps_html / 1e6,
        "plotly_js_mb": plotly_js_file().stat().st_size / 1e6,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _message_bytes(at) -> int:
    """Serialized size of every element the page sent (AppTest keeps each element's protobuf)."""
    total, stack = 0, [at._tree]
    while stack:
        node = stack.pop()
        proto = getattr(node, "proto", None)
        if proto is not None and hasattr(proto, "ByteSize"):
            total += proto.ByteSize()
        children = getattr(node, "children", None)
        if isinstance(children, dict):
            stack.extend(children.values())
    return total


def accuracy_cell(n: int, n_judgments: int) -> dict:
    """At n images: every measure computed the old way (n x n arrays, exact neighbours) and the scalable
    way (approximate neighbours forced, linear silhouette, RSA over judged pairs), with the CIs stated."""
    import numpy as np
    from scipy.stats import spearmanr
    from sklearn.metrics import silhouette_score

    from alignment.neighbours import nearest_neighbours
    from alignment.reorganisation import (
        category_mean_similarity,
        judged_pairs,
        pair_cosine,
        pair_group_means,
        reorganisation,
        spearman_rsa,
    )

    before, after, category = synthetic(n, 0)
    triplets, _ = simulated_judgments(after, n_judgments, 1)
    levels = {"category": category, "superordinate": category % 4}
    exact = reorganisation(before, after, levels, k=10)
    approximate = tuple(nearest_neighbours(x, 10, exact=False) for x in (before, after))
    approx = reorganisation(before, after, levels, k=10, neighbours=approximate)
    rows = [_row("mean kNN overlap (k=10)", exact.mean_overlap, approx.mean_overlap, approx.mean_overlap_ci)]
    for when, found, truth in (
        ("before", approximate[0], exact.neighbours_before),
        ("after", approximate[1], exact.neighbours_after),
    ):
        true_recall = np.mean(
            [len(np.intersect1d(a, b)) / 10 for a, b in zip(found.first(10), truth, strict=True)]
        )
        rows.append(
            _row(f"neighbour recall {when} (true vs sampled)", true_recall, found.recall, found.recall_ci)
        )
    for level, labels in levels.items():
        for when, x in (("before", before), ("after", after)):
            truth = getattr(exact, f"quality_{when}")[level]
            estimate = getattr(approx, f"quality_{when}")[level]
            rows.append(
                _row(
                    f"{level} kNN purity {when}",
                    truth.knn_purity,
                    estimate.knn_purity,
                    estimate.knn_purity_ci,
                )
            )
            unit = x / np.linalg.norm(x, axis=1, keepdims=True)
            dense = silhouette_score(np.clip(1 - unit @ unit.T, 0, 2), labels, metric="precomputed")
            rows.append(_row(f"{level} silhouette {when}", dense, estimate.silhouette, None))
    pairs = judged_pairs(triplets, n)
    human = np.full((n, n), np.nan)
    human[pairs.first, pairs.second] = pairs.similarity
    upper = np.triu_indices(n, 1)
    known = np.isfinite(human[upper])
    for when, x in (("before", before), ("after", after)):
        unit = x / np.linalg.norm(x, axis=1, keepdims=True)
        dense = spearmanr((unit @ unit.T)[upper][known], human[upper][known]).statistic
        rsa = spearman_rsa(pair_cosine(x, pairs.first, pairs.second), pairs.similarity)
        rows.append(_row(f"Spearman RSA vs humans {when}", dense, rsa.rho, rsa.ci))
        sims = unit @ unit.T
        np.fill_diagonal(sims, np.nan)
        dense_means = np.array(
            [
                [np.nanmean(sims[np.ix_(category == a, category == b)]) for b in range(N_CATEGORIES)]
                for a in range(N_CATEGORIES)
            ]
        )
        names, means = category_mean_similarity(x, category)
        order = np.argsort([int(name) for name in names])
        gap = float(np.abs(means[np.ix_(order, order)] - dense_means).max())
        rows.append(_row(f"category mean similarity {when} (max |diff|)", 0.0, gap, None))
    names, human_means = pair_group_means(pairs, pairs.similarity, category)
    rows.append(_row("human category means (cells)", float(np.isfinite(human_means).sum()), None, None))
    return {"rows": rows}


def _row(measure: str, exact: float, scalable: float | None, ci) -> dict:
    return {"measure": measure, "exact": exact, "scalable": scalable, "ci": ci}


def _fill_database(home: Path, n: int, n_judgments: int) -> None:
    """n stimuli with photo-like 128 px thumbnails, two runs with embeddings artifacts, a judged study."""
    import numpy as np
    from PIL import Image
    from sqlalchemy import insert, select

    from db.engine import Database
    from db.models import (
        Base,
        Participant,
        Response,
        Run,
        RunStatus,
        Stimulus,
        StimulusSet,
        Study,
        Trial,
        TrialKind,
        TripletList,
    )
    from workflows.artifacts import write_embeddings

    db = Database.from_url()
    Base.metadata.create_all(db.engine)
    before, after, category = synthetic(n, 0)
    folder = home / "stimuli" / "bench"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    gradient = np.linspace(0, 255, 128)[None, :, None] * np.ones((128, 1, 3))
    for i in range(n):
        pixels = np.clip(gradient * rng.uniform(0.3, 1, 3) + rng.normal(0, 25, (128, 128, 3)), 0, 255)
        Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i}.jpg", quality=85)
    with db.write() as session:
        stimulus_set = StimulusSet(name="bench")
        session.add(stimulus_set)
        session.flush()
        session.execute(
            insert(Stimulus),
            [
                {
                    "stimulus_set_id": stimulus_set.id,
                    "name": f"c{category[i]}/{i}.jpg",
                    "path": f"stimuli/bench/{i}.jpg",
                    "thumbnail_path": f"stimuli/bench/{i}.jpg",
                    "content_hash": str(i),
                    "category": f"c{category[i]}",
                    "superordinate": f"s{category[i] % 4}",
                    "width": 128,
                    "height": 128,
                    "n_bytes": 1,
                }
                for i in range(n)
            ],
        )
        ids = np.array(session.scalars(select(Stimulus.id).order_by(Stimulus.id)).all())
        study = Study(slug="bench-study", stimulus_set_id=stimulus_set.id, salt="x")
        session.add(study)
        session.flush()
        for name, x in (("base", before), ("aligned", after)):
            path = write_embeddings(home / "runs" / f"{name}.npz", x, ids)
            session.add(
                Run(
                    kind="features",
                    name=name,
                    status=RunStatus.SUCCEEDED,
                    study_id=study.id,
                    artifacts={"embeddings": str(path.relative_to(home))},
                )
            )
        triplet_list = TripletList(study_id=study.id, list_index=0)
        person = Participant(
            study_id=study.id, external_id="sim-1", source="simulated", is_simulated=True, consent=True
        )
        session.add_all([triplet_list, person])
        session.flush()
        triplets, rts = simulated_judgments(after, n_judgments, 1)
        shown = ids[np.sort(triplets, axis=1)]  # shown in index order; the choice is the odd one out
        session.execute(
            insert(Trial),
            [
                {
                    "list_id": triplet_list.id,
                    "trial_index": t,
                    "stim0_id": int(a),
                    "stim1_id": int(b),
                    "stim2_id": int(c),
                    "kind": TrialKind.EXPERIMENTAL,
                    "triplet_key": f"{a}-{b}-{c}",
                }
                for t, (a, b, c) in enumerate(shown)
            ],
        )
        trial_ids = session.scalars(select(Trial.id).order_by(Trial.trial_index)).all()
        odd = ids[triplets[:, 2]]
        session.execute(
            insert(Response),
            [
                {
                    "participant_id": person.id,
                    "trial_index": t,
                    "trial_id": trial_ids[t],
                    "shown_left_id": int(shown[t, 0]),
                    "shown_middle_id": int(shown[t, 1]),
                    "shown_right_id": int(shown[t, 2]),
                    "chosen_stimulus_id": int(odd[t]),
                    "chosen_position": int(list(shown[t]).index(odd[t])),
                    "rt_ms": float(rts[t]),
                }
                for t in range(len(shown))
            ],
        )
    db.dispose()


def _in_fresh_process(call: str) -> dict:
    code = f"import json, sys; import bench.maps as b; print('RESULT' + json.dumps(b.{call}))"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env=env)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT")]
    if done.returncode or not lines:
        raise RuntimeError(f"{call} failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT") :])


def growth(sizes: list[int], values: list[float]) -> list[str]:
    """Exponent b in value ~ size^b between consecutive sizes ('' for the first)."""
    out = [""]
    for i in range(1, len(sizes)):
        (n0, v0), (n1, v1) = (sizes[i - 1], values[i - 1]), (sizes[i], values[i])
        out.append(f"{math.log(v1 / v0) / math.log(n1 / n0):.2f}" if v0 > 0 and v1 > 0 else "-")
    return out


COLUMNS = [
    ("first map", "first", "s"),
    ("(its CPU)", "first_cpu", "s"),
    ("warm page", "rerun", "s"),
    ("restart", "restart", "s"),
    ("peak RSS", "peak_rss_mb", "MB"),
    ("payload", "payload_mb", "MB"),
]


def print_header() -> None:
    titles = " ".join(f"{title:>10}" for title, _, _ in COLUMNS)
    print(
        f"{'images':>7} {'setup':>7} {titles} {'fits':>4} {'(page msgs':>10} {'+ maps.html)':>12}", flush=True
    )


def print_row(n: int, cell: dict) -> None:
    values = " ".join(f"{cell[key]:>8.1f}{unit:<2}" for _, key, unit in COLUMNS)
    print(
        f"{n:>7} {cell['setup']:>6.0f}s {values} {cell['fits']:>4} {cell['page_mb']:>8.2f}MB "
        f"{cell['maps_html_mb']:>10.2f}MB",
        flush=True,
    )


def print_growth(sizes: list[int], cells: list[dict]) -> None:
    exponents = {key: growth(sizes, [cell[key] for cell in cells]) for _, key, _ in COLUMNS}
    for i in range(1, len(sizes)):
        row = " ".join(f"{exponents[key][i]:>10}" for _, key, _ in COLUMNS)
        print(f"{'growth':>7} {sizes[i - 1]:>6}-{sizes[i]:<6} {row}")
    print(f"(plotly.min.js, a static file cached by the browser: {cells[0]['plotly_js_mb']:.1f} MB)")


def print_accuracy(n: int, rows: list[dict]) -> None:
    print(f"\nAt {n:,} images: exact (n x n, exact neighbours) vs scalable (approximate neighbours forced)")
    print(f"{'measure':<46} {'exact':>9} {'scalable':>9}  {'95% CI':<18} within")
    for row in rows:
        scalable, ci = row["scalable"], row["ci"]
        within = "" if ci is None else ("yes" if ci[0] <= row["exact"] <= ci[1] else "NO")
        ci_text = "exact method" if ci is None else f"[{ci[0]:.4f}, {ci[1]:.4f}]"
        shown = "" if scalable is None else f"{scalable:>9.4f}"
        print(f"{row['measure']:<46} {row['exact']:>9.4f} {shown:>9}  {ci_text:<18} {within}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 50000])
    parser.add_argument("--method", default="umap", choices=["umap", "pca"])
    parser.add_argument("--judgments", type=int, default=20000)
    parser.add_argument("--accuracy-size", type=int, default=2000)
    parser.add_argument("--no-accuracy", action="store_true")
    args = parser.parse_args()
    print(f"maps page, {args.method.upper()}, {args.judgments:,} judgments, {os.cpu_count()} CPUs")
    cells = []
    print_header()
    for n in args.sizes:
        home = tempfile.mkdtemp(prefix=f"alignlab-bench-maps-{n}-")
        cell = _in_fresh_process(f"fill_cell({n}, {home!r}, {args.judgments})")
        cell |= _in_fresh_process(f"page_cell({home!r}, {args.method!r})")
        restart = _in_fresh_process(f"page_cell({home!r}, {args.method!r})")
        cell |= {"restart": restart["first"], "restart_fits": restart["fits"]}
        cell["payload_mb"] = cell["page_mb"] + cell["maps_html_mb"]
        cells.append(cell)
        print_row(n, cell)
    print_growth(args.sizes, cells)
    print(
        "(restarts computed 0 layouts: read from the disk cache)"
        if not any(c["restart_fits"] for c in cells)
        else f"restart layouts computed: {[c['restart_fits'] for c in cells]}"
    )
    if not args.no_accuracy:
        accuracy = _in_fresh_process(f"accuracy_cell({args.accuracy_size}, {args.judgments})")
        print_accuracy(args.accuracy_size, accuracy["rows"])


if __name__ == "__main__":
    main()
