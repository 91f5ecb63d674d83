"""Which devices a study accepts: the browser reports raw facts before consent, this module classifies the
device and says, in the participant's words, why a study cannot be taken on it.

Classification rule (stated once): a device whose primary pointer is coarse (a finger) is a phone when the
shorter side of its screen is under 600 CSS px, else a tablet; a fine pointer (mouse, trackpad) is a
desktop. Browsers that do not answer the pointer query fall back on the user agent ("Mobi" -> phone,
"iPad"/"Tablet"/"Android" without "Mobi" -> tablet).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from study.config import StudyConfig

PHONE_MAX_SHORT_SIDE_PX = 600
DEVICE_CLASSES = ("phone", "tablet", "desktop")


@dataclass(frozen=True)
class DeviceFacts:
    """What the browser reported: pointer, screen and window size (CSS px), user agent."""

    coarse_pointer: bool | None
    screen_width: int
    screen_height: int
    window_width: int
    window_height: int
    user_agent: str = ""

    @classmethod
    def from_report(cls, report: dict[str, Any]) -> DeviceFacts:
        """From the device-check component's JSON; missing or odd values count as unknown (0 / None)."""

        def number(name: str) -> int:
            value = report.get(name)
            return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0

        coarse = report.get("coarse_pointer")
        return cls(
            coarse_pointer=coarse if isinstance(coarse, bool) else None,
            screen_width=number("screen_width"),
            screen_height=number("screen_height"),
            window_width=number("window_width"),
            window_height=number("window_height"),
            user_agent=str(report.get("user_agent", ""))[:512],
        )


def device_class(facts: DeviceFacts) -> str:
    """ "phone", "tablet" or "desktop" by the rule in the module docstring."""
    if facts.coarse_pointer is None:
        agent = facts.user_agent
        if "Mobi" in agent:
            return "phone"
        return "tablet" if any(word in agent for word in ("iPad", "Tablet", "Android")) else "desktop"
    if not facts.coarse_pointer:
        return "desktop"
    short_side = min(facts.screen_width, facts.screen_height)
    return "phone" if short_side < PHONE_MAX_SHORT_SIDE_PX else "tablet"


def policy_restricts(config: StudyConfig) -> bool:
    """True when the study refuses some device or window: only then is the browser asked before consent."""
    return (
        not config.allow_phones
        or not config.allow_tablets
        or config.min_window_width_px > 0
        or config.min_window_height_px > 0
    )


def device_refusal(config: StudyConfig, facts: DeviceFacts) -> str | None:
    """Why this device cannot take the study (a message for the participant), or None if it can."""
    kind = device_class(facts)
    if kind == "phone" and not config.allow_phones:
        return "This study cannot be done on a phone. Please open the same link on a computer" + (
            " or a tablet." if config.allow_tablets else "."
        )
    if kind == "tablet" and not config.allow_tablets:
        return "This study cannot be done on a tablet. Please open the same link on a computer."
    too_narrow = facts.window_width < config.min_window_width_px
    too_low = facts.window_height < config.min_window_height_px
    if too_narrow or too_low:
        return (
            f"This study needs a browser window of at least {config.min_window_width_px} × "
            f"{config.min_window_height_px} pixels; yours is {facts.window_width} × {facts.window_height}. "
            "Please enlarge the window (or maximise it); the study continues by itself."
        )
    return None
