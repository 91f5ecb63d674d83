"""A small odd-one-out study with generated PNG stimuli, for the participant-page tests and benches."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

from PIL import Image, ImageDraw

from db.engine import Database
from db.models import Stimulus, StimulusSet, StudyStatus, TrialKind
from study.config import StudyConfig
from study.studies import PRACTICE_BLOCK, TrialSpec, create_study

CATEGORIES = ("red", "green", "blue", "orange")
COLOURS = {"red": (200, 40, 40), "green": (40, 160, 60), "blue": (40, 70, 200), "orange": (230, 140, 30)}
FAST_CONFIG = StudyConfig(
    iti_ms=300,
    min_valid_rt_ms=100,
    response_window_ms=8000,
    instruction_min_seconds=0.5,
    completion_url_template="",
    ask_demographics=True,
    ask_strategy=True,
    instructions=("Pick the odd one out.", "Use ← ↓ → or 1 2 3, or click."),
    break_max_seconds=60,
)


def straight_to_trials(iti_ms: int) -> StudyConfig:
    """A study that goes straight to the trials (no instructions, demographics or strategy question), with
    no minimum RT and a 15 s window: what the timing and load benches measure."""
    return StudyConfig(
        iti_ms=iti_ms,
        min_valid_rt_ms=0,
        response_window_ms=15000,
        instructions=(),
        ask_demographics=False,
        ask_strategy=False,
        completion_url_template="",
    )


def _png(category: str, variant: int, size: int) -> bytes:
    image = Image.new("RGB", (size, size), COLOURS[category])
    draw = ImageDraw.Draw(image)
    draw.text((4, 4), f"{category[0]}{variant}", fill=(255, 255, 255))
    draw.ellipse(
        (size // 4, size // 4, size // 4 + 8 + variant * 3, size // 4 + 8 + variant * 3), fill=(0, 0, 0)
    )
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def make_stimuli(
    db: Database, home: Path, *, per_category: int = 6, size: int = 96, name: str = "test-shapes"
) -> dict[str, list[int]]:
    """Write PNGs under `<home>/stimuli/<name>/` and their rows; returns stimulus ids by category."""
    folder = home / "stimuli" / name
    folder.mkdir(parents=True, exist_ok=True)
    ids: dict[str, list[int]] = {c: [] for c in CATEGORIES}
    with db.write() as session:
        stimulus_set = StimulusSet(name=name, source="generated for tests")
        session.add(stimulus_set)
        session.flush()
        for category in CATEGORIES:
            for variant in range(per_category):
                data = _png(category, variant, size)
                relative = f"stimuli/{name}/{category}-{variant}.png"
                (home / relative).write_bytes(data)
                row = Stimulus(
                    stimulus_set_id=stimulus_set.id,
                    name=f"{category}/{variant}.png",
                    path=relative,
                    content_hash=hashlib.sha256(data).hexdigest(),
                    category=category,
                    width=size,
                    height=size,
                    n_bytes=len(data),
                )
                session.add(row)
                session.flush()
                ids[category].append(row.id)
    return ids


def design(
    ids: dict[str, list[int]], *, n_practice: int, n_blocks: int, per_block: int, catch_every: int = 4
) -> list[TrialSpec]:
    """Practice, then blocks whose every `catch_every`-th trial is a catch (two of a colour + an outsider)."""
    flat = [i for category in CATEGORIES for i in ids[category]]
    specs = [
        TrialSpec(
            (flat[k % len(flat)], flat[(k + 7) % len(flat)], flat[(k + 13) % len(flat)]),
            TrialKind.PRACTICE,
            block=PRACTICE_BLOCK,
        )
        for k in range(n_practice)
    ]
    for block in range(n_blocks):
        for k in range(per_block):
            n = block * per_block + k
            if catch_every and k % catch_every == catch_every - 1:
                same, other = CATEGORIES[n % 4], CATEGORIES[(n + 1) % 4]
                stimuli = (ids[same][n % 3], ids[same][3 + n % 3], ids[other][n % 6])
                specs.append(TrialSpec(stimuli, TrialKind.CATCH, block=block, odd_known=True))
            else:
                stimuli = (
                    flat[(n * 5) % len(flat)],
                    flat[(n * 5 + 3) % len(flat)],
                    flat[(n * 5 + 11) % len(flat)],
                )
                specs.append(TrialSpec(stimuli, TrialKind.EXPERIMENTAL, block=block))
    return specs


def make_study(
    db: Database,
    home: Path,
    slug: str = "test-study",
    *,
    config: StudyConfig = FAST_CONFIG,
    n_practice: int = 2,
    n_blocks: int = 2,
    per_block: int = 4,
    participants_per_list: int = 50,
    stimulus_ids: dict[str, list[int]] | None = None,
) -> int:
    ids = stimulus_ids or make_stimuli(db, home)
    specs = design(ids, n_practice=n_practice, n_blocks=n_blocks, per_block=per_block)
    config = StudyConfig.from_dict(config.to_dict() | {"participants_per_list": participants_per_list})
    return create_study(db, slug, None, [specs], config, status=StudyStatus.OPEN)
