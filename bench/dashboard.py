"""Researcher pages and exports at 10k / 100k / 1M judgments: time and peak memory of one render of each page
(Streamlit AppTest) and of each export, printed as one table.

A Levels-shaped study (20 lists x 330 trials over 300 images, catch and repeat trials included) is filled
with completed Prolific participants answering every trial of their list, written with batched multi-row
inserts (50k rows per transaction), plus two interaction events per participant. Each measurement runs in
a fresh process, so its peak RSS (ru_maxrss) is its own: `base MB` is the process after imports, `peak MB`
after the work. A page is rendered twice: `first s` with empty caches (a freshly started server), `again s`
the next render in the same process (another click or browser session; caches warm, data unchanged). The
on-disk QC cache next to the database is deleted before each measurement, so `first s` is the cold case
(a server started on a database it has never measured).

With `--keep DIR` the databases are built once under `DIR/<judgments>/` and reused by later runs (building
a million judgments takes minutes).

Targets (issue 13): every page render <= 2 s and <= 500 MB at 1M judgments; exports >= 200k rows/s.

    .venv/bin/python -m bench.dashboard [--sizes 10000 100000 1000000] [--keep DIR] [--only ROW ...]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
from sqlalchemy import insert, select

ROOT = Path(__file__).resolve().parents[1]
SLUG = "bench-levels"
N_LISTS, TRIALS_PER_LIST, N_IMAGES = 20, 330, 300
BATCH_ROWS = 50_000
PAGES = {  # label -> (page file, tab to open or None)
    "Home": ("views/home.py", None),
    "Studies": ("views/studies.py", None),
    "Participants · Participants": ("views/participants.py", "Participants"),
    "Participants · Payments": ("views/participants.py", "Payments"),
    "Participants · Agreement": ("views/participants.py", "Agreement"),
    "Participants · Response times": ("views/participants.py", "Response times"),
    "Participants · Export": ("views/participants.py", "Export"),
    "Stimuli": ("views/stimuli.py", None),
    "Alignment runs": ("views/alignment.py", None),
    "Maps": ("views/maps.py", None),
}
EXPORT_FILES = {  # format -> file name
    "things": "things.csv",
    "jspsych": "jspsych.csv",
    "parquet": "trials.parquet",
    "participants": "participants.csv",
    "events": "events.csv",
}


def build_study(home: Path, n_judgments: int) -> None:
    """The benchmark database under `home`: one study whose participants gave `n_judgments` answers."""
    os.environ["ALIGNLAB_HOME"] = str(home)
    from db.engine import Database
    from db.models import (
        Base,
        InteractionEvent,
        Participant,
        ParticipantStatus,
        Response,
        Stimulus,
        StimulusSet,
        StudyStatus,
        Trial,
        TrialKind,
        TripletLevel,
        utcnow,
    )
    from study.config import StudyConfig
    from study.studies import TrialSpec, create_study, get_study

    db = Database.from_url()
    Base.metadata.create_all(db.engine)
    with db.write() as session:
        stimulus_set = StimulusSet(name="bench images")
        session.add(stimulus_set)
        session.flush()
        session.add_all(
            Stimulus(
                stimulus_set_id=stimulus_set.id,
                name=f"s{i // 50}/c{i // 10}/{i}.png",
                path=f"stimuli/{i}.png",
                content_hash=f"{i:064d}",
                category=f"c{i // 10}",
                superordinate=f"s{i // 50}",
                width=1,
                height=1,
                n_bytes=1,
            )
            for i in range(N_IMAGES)
        )
        session.flush()
        set_id = stimulus_set.id
        ids = np.array(session.scalars(select(Stimulus.id).order_by(Stimulus.id)).all())
    rng = np.random.default_rng(0)
    levels = list(TripletLevel)
    shared = [tuple(int(x) for x in rng.choice(ids, 3, replace=False)) for _ in range(TRIALS_PER_LIST)]

    def trial(index: int) -> TrialSpec:
        if index % 33 == 32:
            return TrialSpec(shared[index], TrialKind.CATCH, odd_known=True)
        return TrialSpec(shared[index], TrialKind.EXPERIMENTAL, levels[index % 3])

    lists = [[trial(i) for i in range(TRIALS_PER_LIST)] for _ in range(N_LISTS)]
    create_study(db, SLUG, set_id, lists, StudyConfig(), status=StudyStatus.OPEN)
    with db.read() as session:
        study = get_study(session, SLUG)
        study_id = study.id
        trials = session.execute(
            select(Trial.id, Trial.list_id, Trial.stim0_id, Trial.stim1_id, Trial.stim2_id)
            .join(Trial.triplet_list)
            .where(Trial.triplet_list.has(study_id=study_id))
            .order_by(Trial.list_id, Trial.trial_index)
        ).all()
    plan = np.array(trials, dtype=np.int64).reshape(N_LISTS, TRIALS_PER_LIST, 5)
    n_people = -(-n_judgments // TRIALS_PER_LIST)
    start = utcnow() - timedelta(days=1)
    with db.write() as session:
        session.execute(
            insert(Participant),
            [
                dict(
                    study_id=study_id,
                    external_id=f"{p:024x}",
                    external_study_id="STUDY",
                    external_session_id=f"session{p}",
                    source="prolific",
                    list_id=int(plan[p % N_LISTS, 0, 1]),
                    status=ParticipantStatus.COMPLETED,
                    consent=True,
                    started_at=start,
                    finished_at=start + timedelta(minutes=30),
                    last_seen_at=start + timedelta(minutes=30),
                    config_version=1,
                )
                for p in range(n_people)
            ],
        )
        people = session.scalars(select(Participant.id).where(Participant.study_id == study_id)).all()
    rows = []
    for p, pid in enumerate(people):
        answers = min(TRIALS_PER_LIST, n_judgments - p * TRIALS_PER_LIST)
        own = plan[p % N_LISTS]
        chosen_position = rng.integers(0, 3, answers)
        rts = rng.gamma(4.0, 400.0, answers)
        for t in range(answers):
            shown = own[t, 2:]
            rows.append(
                dict(
                    participant_id=pid,
                    trial_index=t,
                    trial_id=int(own[t, 0]),
                    shown_left_id=int(shown[0]),
                    shown_middle_id=int(shown[1]),
                    shown_right_id=int(shown[2]),
                    chosen_position=int(chosen_position[t]),
                    chosen_stimulus_id=int(shown[chosen_position[t]]),
                    rt_ms=float(rts[t]),
                    client_onset_ms=1.7e12 + t * 3000.0,
                    server_received_at=start + timedelta(seconds=3 * t),
                    input_modality="mouse",
                )
            )
            if len(rows) == BATCH_ROWS:
                _insert(db, Response, rows)
                rows = []
    _insert(db, Response, rows)
    _insert(
        db,
        InteractionEvent,
        [
            dict(participant_id=pid, client_event_id=f"{pid}-{kind}", kind=kind, trial_index=5)
            for pid in people
            for kind in ("blur", "focus")
        ],
    )
    db.dispose()


def _insert(db, model, rows: list[dict]) -> None:
    if rows:
        with db.write() as session:
            session.execute(insert(model), rows)


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure_page(page: str, tab: str | None) -> dict:
    """One render with empty caches and one more in the same process (this runs in its own process)."""
    from streamlit.testing.v1 import AppTest

    main = str(ROOT / "app" / "main.py")
    warm_up = AppTest.from_file(main, default_timeout=600)
    warm_up.session_state["researcher_logged_in"] = True
    warm_up.run()  # imports and navigation, outside the measurement
    base = _peak_mb()
    timings = []
    for _ in range(2):
        at = AppTest.from_file(main, default_timeout=600)
        at.session_state["researcher_logged_in"] = True
        if tab:
            at.session_state["data_tab"] = tab
        at.run()
        began = time.perf_counter()
        at.switch_page(page).run()
        timings.append(time.perf_counter() - began)
        if at.exception:
            raise RuntimeError(f"{page} {tab or ''}: {at.exception[0].message}")
    return {"first_s": timings[0], "again_s": timings[1], "base_mb": base, "peak_mb": _peak_mb()}


def measure_export(fmt: str, out_dir: Path) -> dict:
    from db.engine import Database
    from study.export import export_study

    db = Database.from_url()
    db.engine.connect().close()
    base = _peak_mb()
    began, cpu_began = time.perf_counter(), _cpu_s()
    summary = export_study(db, SLUG, fmt, out_dir / EXPORT_FILES[fmt])  # type: ignore[arg-type]
    seconds, cpu = time.perf_counter() - began, _cpu_s() - cpu_began
    return {"first_s": seconds, "cpu_s": cpu, "rows": summary.n_rows, "base_mb": base, "peak_mb": _peak_mb()}


def _cpu_s() -> float:
    """CPU seconds (user + system, all threads) of this process: on a shared machine, wall time counts the
    other processes' turns too."""
    times = os.times()
    return times.user + times.system


def measure_summary() -> dict:
    """The answer summary built from nothing (what the Agreement and Response times tabs' background thread
    does once per server and database; `study.answer_summary`)."""
    from db.engine import Database
    from study.answer_summary import update_summary

    db = Database.from_url()
    db.engine.connect().close()
    base = _peak_mb()
    began = time.perf_counter()
    summary = update_summary(db, SLUG)
    seconds = time.perf_counter() - began
    return {"first_s": seconds, "rows": len(summary.participant), "base_mb": base, "peak_mb": _peak_mb()}


SUMMARY_PAGES = ("Participants · Agreement", "Participants · Response times")


def _in_fresh_process(home: Path, *args: str, keep_summary: bool = False) -> dict:
    env = os.environ | {
        "ALIGNLAB_HOME": str(home),
        "HF_HUB_OFFLINE": "1",
        "ALIGNLAB_RESEARCHER_PASSWORD": "x",
    }
    env.pop("DATABASE_URL", None)
    for cache in home.glob("**/*.cache/*"):  # cold: nothing measured before (but the summary when kept)
        if not (keep_summary and cache.name == "summary"):
            shutil.rmtree(cache)
    done = subprocess.run(
        [sys.executable, "-m", "bench.dashboard", "--worker", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode:
        return {"error": (done.stderr.strip().splitlines() or ["failed"])[-1][:60]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(sizes: list[int], keep: Path | None, only: list[str] | None = None) -> None:
    print(f"{'judgments':>9}  {'what':<40} {'first s':>8} {'again s':>8} {'base MB':>8} {'peak MB':>8}  note")
    for size in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            home = _study_home(size, keep, Path(tmp))
            for label, (page, tab) in PAGES.items():
                if only and label not in only:
                    continue
                result = _in_fresh_process(home, "page", page, tab or "")
                note = " (no summary: <= 100 new participants read in the render, else 'computing…')"
                note = note if label in SUMMARY_PAGES else ""
                _print_row(size, label, result, _page_note(result) + note)
            if not only or any(label in only for label in SUMMARY_PAGES):
                result = _in_fresh_process(home, "summary")
                _print_row(size, "(answer summary, cold build)", result, "background thread, once")
                for label in SUMMARY_PAGES:
                    page, tab = PAGES[label]
                    result = _in_fresh_process(home, "page", page, tab or "", keep_summary=True)
                    _print_row(size, f"{label} (summary)", result, _page_note(result))
            for fmt in EXPORT_FILES:
                if only and f"export {fmt}" not in only:
                    continue
                result = _in_fresh_process(home, "export", fmt, str(home))
                rate = result.get("rows", 0) / result["first_s"] if "first_s" in result else 0
                note = f"{result.get('rows', 0)} rows, {rate / 1000:.0f}k rows/s" + (
                    "" if rate >= 200_000 else "  (< 200k rows/s)"
                )
                note += f", cpu {result['cpu_s']:.2f} s" if "cpu_s" in result else ""
                _print_row(size, f"export {fmt}", result, note)
        sys.stdout.flush()


def _study_home(size: int, keep: Path | None, tmp: Path) -> Path:
    """The data directory holding the study of `size` judgments: reused from `keep` when built there
    before (`built` marks a finished build), else built (under `keep`, or in the temporary `tmp`)."""
    home = keep / str(size) if keep else tmp
    if keep and (home / "built").exists():
        print(f"{size:>9}  {'(reused: ' + str(home) + ')':<32}")
        return home
    if home.exists() and keep:
        shutil.rmtree(home)
    home.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    build_study(home, size)
    (home / "built").touch()
    print(f"{size:>9}  {'(build: batched inserts)':<32} {time.perf_counter() - began:8.1f}")
    return home


def _page_note(result: dict) -> str:
    if "error" in result:
        return ""
    over = [
        name for name, bad in (("time", result["first_s"] > 2), ("memory", result["peak_mb"] > 500)) if bad
    ]
    return "over target: " + ", ".join(over) if over else "within target"


def _print_row(size: int, label: str, result: dict, note: str) -> None:
    if "error" in result:
        print(f"{size:>9}  {label:<40} failed: {result['error']}")
        return
    again = f"{result['again_s']:8.2f}" if "again_s" in result else f"{'':>8}"
    print(
        f"{size:>9}  {label:<40} {result['first_s']:8.2f} {again} {result['base_mb']:8.0f} "
        f"{result['peak_mb']:8.0f}  {note}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument(
        "--keep", type=Path, help="folder where the benchmark databases are kept and reused (default: temp)"
    )
    parser.add_argument(
        "--only", nargs="+", help='rows to measure, e.g. "Participants · Agreement" "export things"'
    )
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        kind, *rest = args.worker
        if kind == "page":
            result = measure_page(rest[0], rest[1] if len(rest) > 1 and rest[1] else None)
        elif kind == "summary":
            result = measure_summary()
        else:
            result = measure_export(rest[0], Path(rest[1]))
        print(json.dumps(result))
        return
    run(args.sizes, args.keep, args.only)


if __name__ == "__main__":
    main()
