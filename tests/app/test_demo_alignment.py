"""The demo's closed loop shows the paper's core result per Levels type (issues 7 and 8 "Must show"): on the
held-out judgments of the demo's simulated participants, the teacher over tf_efficientnet_lite0 features and
the AligNet student both beat the raw backbone at every level, while the UnAligNet control gains less."""

from __future__ import annotations

import pytest

from db.engine import Database
from workflows.demo import ensure_demo, ensure_demo_runs
from workflows.pipeline.loop import latest_loop

LEVELS = ("between_class", "within_class", "class_border", "overall")


@pytest.mark.slow
def test_demo_loop_improves_every_levels_type_and_the_control_does_not(app_home):
    db = Database.from_url()
    ensure_demo(db, report=lambda message: None)
    ensure_demo_runs(db, wait=True, report=lambda message: None)
    metrics = latest_loop(db).metrics
    for level in LEVELS:
        teacher, teacher_low = metrics[f"gain · teacher · {level}"], metrics[f"gain_low · teacher · {level}"]
        alignet, alignet_low = metrics[f"gain · AligNet · {level}"], metrics[f"gain_low · AligNet · {level}"]
        control = metrics[f"gain · UnAligNet · {level}"]
        assert teacher_low > 0, f"teacher vs raw at {level}: {teacher:+.3f}, CI low {teacher_low:+.3f}"
        assert alignet_low > 0, f"AligNet vs base at {level}: {alignet:+.3f}, CI low {alignet_low:+.3f}"
        assert alignet > control + 0.03, f"{level}: AligNet {alignet:+.3f} vs UnAligNet {control:+.3f}"
