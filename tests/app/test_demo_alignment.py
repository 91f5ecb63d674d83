"""The demo's closed loop shows the paper's core result per Levels type (issues 7 and 8 "Must show"): on the
held-out judgments of the demo's simulated participants, the teacher over tf_efficientnet_lite0 features and
the AligNet student both beat the raw backbone at every level, while the UnAligNet control gains less; and
none of the loop's caveats (workflows/pipeline/caveats.py) holds."""

from __future__ import annotations

import pytest

from db.engine import Database
from workflows.demo import ensure_demo, ensure_demo_runs
from workflows.pipeline.evaluation import read_results
from workflows.pipeline.loop import latest_loop

LEVELS = ("between_class", "within_class", "class_border", "overall")


@pytest.mark.slow
def test_demo_loop_improves_every_levels_type_and_the_control_does_not(app_home):
    db = Database.from_url()
    ensure_demo(db, report=lambda message: None)
    ensure_demo_runs(db, wait=True, report=lambda message: None)
    loop = latest_loop(db)
    caveats = loop.metrics["caveats"]  # issue 14: the checks that fire on forced cases stay quiet here
    assert caveats == [], [caveat["reason"] for caveat in caveats]
    results = read_results(loop)
    results = results[results["held_out"] == "seen"].set_index(["level", "model"])  # the Levels-typed block
    for level in LEVELS:
        teacher, alignet, control = (
            results.loc[(level, model)] for model in ("teacher", "AligNet", "UnAligNet")
        )
        assert teacher["gain_ci_low"] > 0, (
            f"teacher vs raw at {level}: {teacher['gain']:+.3f}, CI {teacher['gain_ci_low']:+.3f}"
        )
        assert alignet["gain_ci_low"] > 0, (
            f"AligNet vs base at {level}: {alignet['gain']:+.3f}, CI {alignet['gain_ci_low']:+.3f}"
        )
        assert alignet["gain"] > control["gain"] + 0.03, (
            f"{level}: AligNet {alignet['gain']:+.3f} vs UnAligNet {control['gain']:+.3f}"
        )
