"""Benchmark: time to the first before/after map in a cold process vs a warm one vs a cached page rerun,
for UMAP and PCA, and peak memory.

    .venv/bin/python -m bench.maps                 # 500 and 5,000 images, UMAP and PCA (several minutes)
    .venv/bin/python -m bench.maps --sizes 500 --methods pca

Every cell runs in a fresh Python process, so "cold" includes imports and UMAP's numba compilation.
Columns:
- cold first map: new process, import + both 2-D maps (what the first visitor after a restart waits for)
- warm new map: same process, a second pair of maps of other data (UMAP already compiled)
- page first / page rerun: the maps page (AppTest, same data in the database, thumbnails, figures),
  first load and a rerun; "maps computed" counts 2-D embeddings over both (2 = the rerun computed none)
- peak RSS: maximum resident memory of the process running the page
Data: synthetic clustered embeddings, 768-D (before: 20 clusters; after: the same images regrouped).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DIM = 768


def synthetic(n: int, seed: int):
    """Two representations of the same n images: clustered by one labelling before, another after."""
    import numpy as np

    rng = np.random.default_rng(seed)
    colour, category = rng.integers(0, 20, n), rng.integers(0, 20, n)
    centres = rng.normal(size=(2, 20, DIM))
    before = 3 * centres[0][colour] + centres[1][category] + rng.normal(size=(n, DIM))
    after = centres[0][colour] + 3 * centres[1][category] + rng.normal(size=(n, DIM))
    return before.astype(np.float32), after.astype(np.float32), category


def engine_cell(n: int, method: str) -> dict:
    """In this (fresh) process: cold first map, then a warm map of other data."""
    import time

    start = time.perf_counter()
    from alignment.maps import MapConfig, paired_maps

    before, after, _ = synthetic(n, 0)
    paired_maps(before, after, MapConfig(method=method))
    cold = time.perf_counter() - start
    before, after, _ = synthetic(n, 1)
    start = time.perf_counter()
    paired_maps(before, after, MapConfig(method=method))
    return {"cold": cold, "warm": time.perf_counter() - start}


def page_cell(n: int, method: str) -> dict:
    """In this (fresh) process: the maps page on two runs of n images, first load and a rerun."""
    import resource
    import time

    home = Path(tempfile.mkdtemp(prefix="alignlab-bench-maps-"))
    os.environ["ALIGNLAB_HOME"] = str(home)
    os.environ.pop("DATABASE_URL", None)
    _fill_database(home, n)
    from streamlit.testing.v1 import AppTest

    import alignment.maps

    calls = []
    real = alignment.maps.embed_2d
    alignment.maps.embed_2d = lambda x, config: (calls.append(1), real(x, config))[1]
    at = AppTest.from_file(str(ROOT / "app" / "views" / "maps.py"), default_timeout=1800)
    at.session_state["map_method"] = method
    start = time.perf_counter()
    at.run()
    first = time.perf_counter() - start
    start = time.perf_counter()
    at.run()
    rerun = time.perf_counter() - start
    if at.exception:
        raise RuntimeError(at.exception)
    html_mb = len(at.get("iframe")[0].proto.srcdoc) / 1e6
    return {
        "page_first": first,
        "page_rerun": rerun,
        "maps_computed": len(calls),
        "html_mb": html_mb,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _fill_database(home: Path, n: int) -> None:
    """n stimuli with photo-like 128 px thumbnails and two runs with embeddings artifacts."""
    import numpy as np
    from PIL import Image

    from db.engine import Database
    from db.models import Base, Run, RunStatus, Stimulus, StimulusSet
    from workflows.artifacts import write_embeddings

    db = Database.from_url()
    Base.metadata.create_all(db.engine)
    before, after, category = synthetic(n, 0)
    folder = home / "stimuli" / "bench"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    gradient = np.linspace(0, 255, 128)[None, :, None] * np.ones((128, 1, 3))
    with db.write() as session:
        stimulus_set = StimulusSet(name="bench")
        session.add(stimulus_set)
        session.flush()
        rows = []
        for i in range(n):
            pixels = np.clip(gradient * rng.uniform(0.3, 1, 3) + rng.normal(0, 25, (128, 128, 3)), 0, 255)
            Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i}.jpg", quality=85)
            rows.append(
                Stimulus(
                    stimulus_set_id=stimulus_set.id,
                    name=f"c{category[i]}/{i}.jpg",
                    path=f"stimuli/bench/{i}.jpg",
                    thumbnail_path=f"stimuli/bench/{i}.jpg",
                    content_hash=str(i),
                    category=f"c{category[i]}",
                    superordinate=f"s{category[i] % 4}",
                    width=128,
                    height=128,
                    n_bytes=1,
                )
            )
        session.add_all(rows)
        session.flush()
        ids = np.array([row.id for row in rows])
        for name, x in (("base", before), ("aligned", after)):
            path = write_embeddings(home / "runs" / f"{name}.npz", x, ids)
            session.add(
                Run(
                    kind="features",
                    name=name,
                    status=RunStatus.SUCCEEDED,
                    artifacts={"embeddings": str(path.relative_to(home))},
                )
            )
    db.dispose()


def _in_fresh_process(cell: str, n: int, method: str) -> dict:
    code = (
        f"import json, sys; import bench.maps as b; print('RESULT' + json.dumps(b.{cell}({n}, {method!r})))"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env=env)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT")]
    if done.returncode or not lines:
        raise RuntimeError(f"{cell}({n}, {method}) failed:\n{done.stderr[-2000:]}")
    return json.loads(lines[-1][len("RESULT") :])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 5000])
    parser.add_argument("--methods", nargs="+", default=["umap", "pca"], choices=["umap", "pca"])
    args = parser.parse_args()
    print(
        f"{'images':>7} {'method':>6} | {'cold first map':>14} {'warm new map':>12} | {'page first':>10} "
        f"{'page rerun':>10} {'maps computed':>13} {'map html':>8} {'peak RSS':>9}"
    )
    for n in args.sizes:
        for method in args.methods:
            engine = _in_fresh_process("engine_cell", n, method)
            page = _in_fresh_process("page_cell", n, method)
            print(
                f"{n:>7} {method:>6} | {engine['cold']:>13.2f}s {engine['warm']:>11.2f}s | "
                f"{page['page_first']:>9.2f}s {page['page_rerun']:>9.2f}s {page['maps_computed']:>13} "
                f"{page['html_mb']:>6.1f}MB {page['peak_rss_mb']:>7.0f}MB",
                flush=True,
            )


if __name__ == "__main__":
    main()
