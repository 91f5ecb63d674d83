"""The device policy on known answers: classification rule, refusals, tolerance of odd reports."""

from __future__ import annotations

import pytest

from study.config import StudyConfig
from study.devices import DeviceFacts, device_class, device_refusal, policy_restricts

IPHONE = DeviceFacts(True, 390, 844, 390, 664, "Mozilla/5.0 (iPhone) Mobile Safari")
IPAD = DeviceFacts(True, 820, 1180, 820, 1100, "Mozilla/5.0 (iPad) Safari")
LAPTOP = DeviceFacts(False, 1440, 900, 1280, 720, "Mozilla/5.0 (X11; Linux) Chrome")


@pytest.mark.parametrize(
    ("facts", "expected"),
    [
        (IPHONE, "phone"),
        (IPAD, "tablet"),
        (LAPTOP, "desktop"),
        (DeviceFacts(True, 599, 900, 599, 900), "phone"),  # the 600 px boundary
        (DeviceFacts(True, 600, 900, 600, 900), "tablet"),
        (DeviceFacts(None, 0, 0, 0, 0, "Android Mobile"), "phone"),  # no pointer query: the user agent
        (DeviceFacts(None, 0, 0, 0, 0, "Linux; Android 13; SM-X700"), "tablet"),
        (DeviceFacts(None, 0, 0, 0, 0, "Windows NT 10.0"), "desktop"),
    ],
)
def test_device_class_follows_the_stated_rule(facts, expected):
    assert device_class(facts) == expected


def test_a_study_refusing_phones_tells_a_phone_why_and_accepts_the_others():
    config = StudyConfig(allow_phones=False)
    assert policy_restricts(config)
    assert "cannot be done on a phone" in device_refusal(config, IPHONE)
    assert "or a tablet" in device_refusal(config, IPHONE)
    assert device_refusal(config, IPAD) is None and device_refusal(config, LAPTOP) is None
    assert "on a computer." in device_refusal(StudyConfig(allow_phones=False, allow_tablets=False), IPHONE)


def test_a_minimum_window_names_both_sizes():
    config = StudyConfig(min_window_width_px=1366, min_window_height_px=700)
    message = device_refusal(config, LAPTOP)
    assert "1366 × 700" in message and "1280 × 720" in message
    assert device_refusal(StudyConfig(min_window_width_px=1280, min_window_height_px=720), LAPTOP) is None


def test_the_default_study_accepts_every_device_without_asking():
    config = StudyConfig()
    assert not policy_restricts(config)
    assert all(device_refusal(config, facts) is None for facts in (IPHONE, IPAD, LAPTOP))


def test_odd_reports_count_as_unknown_not_as_errors():
    facts = DeviceFacts.from_report({"coarse_pointer": "yes", "window_width": "wide", "screen_width": True})
    assert (facts.coarse_pointer, facts.window_width, facts.screen_width) == (None, 0, 0)


def test_a_negative_minimum_window_is_refused_in_the_config():
    with pytest.raises(ValueError, match="min_window_width_px must be >= 0"):
        StudyConfig(min_window_width_px=-1)
