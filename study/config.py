"""StudyConfig: every knob of a participant session, with Levels-style defaults."""

from __future__ import annotations

import string
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

from common.config import LoadableConfig
from study.examples import EXAMPLE_KINDS, example_tokens

PROLIFIC_COMPLETION_URL = "https://app.prolific.com/submissions/complete?cc={code}"
RESUME_POLICIES = ("resume", "restart_block", "block")
URL_SCHEMES = ("http", "https")
URL_FIELDS = ("completion_url_template",)  # every URL a StudyConfig holds

DEFAULT_INSTRUCTIONS = (
    "In each trial you see three images. Click the one that is the **odd one out**: the image that is "
    "least similar to the other two. You can also press ← ↓ → or 1 2 3.",
    "Some trials are easy. Here the image on the right is the odd one out:\n\n[[example: obvious]]\n\n"
    "Others are harder, such as three images of the same kind. There is no right answer; go with your first "
    "impression:\n\n[[example: ambiguous]]",
    "Please answer within 15 seconds. A cross (+) appears between trials; keep your eyes on it.",
)


@dataclass(frozen=True)
class StudyConfig(LoadableConfig):
    """How a study runs for a participant. Defaults follow the AligNet Levels collection."""

    SECTION = "study"

    title: str = "Odd one out"
    consent_text: str = (
        "You are invited to take part in a study on how people judge the similarity of images. "
        "Your answers and response times are stored under a pseudonymous id. You may stop at any time."
    )
    ask_demographics: bool = True
    instructions: tuple[str, ...] = DEFAULT_INSTRUCTIONS
    instruction_min_seconds: float = 3.0
    iti_ms: int = 1000  # fixation cross between trials
    min_valid_rt_ms: int = 1000  # earlier responses are ignored (0 allowed)
    response_window_ms: int = 15000  # then a recorded timeout
    break_max_seconds: int = 120
    ask_strategy: bool = True
    completion_code: str = "ALIGNLAB-DONE"
    early_exit_code: str = "ALIGNLAB-EARLY"
    no_consent_code: str = "ALIGNLAB-NOCONSENT"
    completion_url_template: str = PROLIFIC_COMPLETION_URL  # "" = show the code, no redirect
    resume_policy: str = "resume"  # resume | restart_block | block
    session_timeout_minutes: int = 90  # a started participant older than this no longer holds a list
    reservation_timeout_minutes: int = 30  # a consented participant with no answer yet holds a list this long
    participants_per_list: int = 1
    allow_shared_lists: bool = (
        False  # a list asked for by link (`list=`, or a design's Prolific id) may be full
    )
    image_px: int = 240
    # device policy, checked before consent from what the browser reports (see study/devices.py)
    allow_phones: bool = True
    allow_tablets: bool = True
    min_window_width_px: int = 0  # 0: no minimum
    min_window_height_px: int = 0
    fullscreen: bool = False  # each block starts in full screen; exits are logged and counted by QC
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.resume_policy not in RESUME_POLICIES:
            raise ValueError(f"resume_policy must be one of {RESUME_POLICIES}, got {self.resume_policy!r}")
        for name in URL_FIELDS:
            check_url_template(name, getattr(self, name))
        for name in ("session_timeout_minutes", "reservation_timeout_minutes"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0 minutes, got {getattr(self, name)}")
        for name in (
            "iti_ms",
            "min_valid_rt_ms",
            "response_window_ms",
            "break_max_seconds",
            "min_window_width_px",
            "min_window_height_px",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.min_valid_rt_ms >= self.response_window_ms > 0:
            raise ValueError("min_valid_rt_ms must be shorter than response_window_ms")
        for number, page in enumerate(self.instructions, start=1):
            unknown = [kind for kind in example_tokens(page) if kind not in EXAMPLE_KINDS]
            if unknown:
                raise ValueError(
                    f"instructions page {number} asks for example {unknown[0]!r}; "
                    f"expected [[example: KIND]] with KIND one of {EXAMPLE_KINDS}"
                )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["instructions"] = list(self.instructions)
        return data

    def completion_url(self, code: str) -> str:
        """The template with the code filled in (URL-quoted); "" when the study shows the code only."""
        template = self.completion_url_template
        return template.format(code=quote(code, safe="")) if template else ""


def check_url_template(name: str, template: str) -> None:
    """An http(s) URL whose only placeholder is `{code}`, or "" for none. Checked when a config is written or
    loaded, so a typo (`{cc}`) or a `javascript:` link is refused at `study create`, never at a participant's
    completion."""
    if template == "":
        return
    if not isinstance(template, str) or any(ch.isspace() or ord(ch) < 32 for ch in template):
        raise ValueError(
            f"{name} must be an http(s) URL without spaces or control characters, got {template!r}"
        )
    try:
        fields_used = [(f, conversion, spec) for _, f, spec, conversion in string.Formatter().parse(template)]
    except ValueError as error:
        raise ValueError(f"{name} {template!r} has unbalanced braces ({error}); use {{code}} only") from None
    for field_name, conversion, spec in fields_used:
        if field_name is not None and (field_name != "code" or conversion or spec):
            used = field_name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "")
            raise ValueError(
                f"{name} {template!r} uses the placeholder {{{used}}}; {{code}} is the only one allowed"
            )
    parts = urlsplit(template.format(code="CODE"))
    if parts.scheme.lower() not in URL_SCHEMES or not parts.netloc:
        raise ValueError(
            f"{name} {template!r} is not an http or https URL with a host (e.g. "
            "https://app.prolific.com/submissions/complete?cc={code})"
        )
