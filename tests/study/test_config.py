"""StudyConfig refuses bad URLs where the config is written, never at a participant's completion."""

from __future__ import annotations

import pytest

from study.config import StudyConfig


@pytest.mark.parametrize(
    "template",
    [
        "",
        "https://app.prolific.com/submissions/complete?cc={code}",
        "http://lab.example.org/done/{code}",
        "https://example.org/thanks",
    ],
)
def test_http_urls_with_only_the_code_placeholder_are_accepted(template):
    assert StudyConfig(completion_url_template=template).completion_url_template == template


@pytest.mark.parametrize(
    ("template", "reason"),
    [
        ("https://example.org/?cc={cc}", "uses the placeholder {cc}; {code} is the only one allowed"),
        ("https://example.org/?cc={}", "uses the placeholder {}"),
        ("https://example.org/?cc={0}", "uses the placeholder {0}"),
        ("https://example.org/?cc={code!r}", "uses the placeholder {code!r}"),
        ("https://example.org/?cc={code:>9}", "uses the placeholder {code:>9}"),
        ("https://example.org/?cc={code", "unbalanced braces"),
        ("javascript:alert(document.cookie)//{code}", "is not an http or https URL"),
        ("data:text/html,<script>{code}</script>", "is not an http or https URL"),
        ("ftp://example.org/{code}", "is not an http or https URL"),
        ("//example.org/{code}", "is not an http or https URL"),
        ("https:///{code}", "with a host"),
        ("https://example.org/a b?cc={code}", "without spaces or control characters"),
        ("https://example.org/\n{code}", "without spaces or control characters"),
    ],
)
def test_bad_completion_templates_are_refused_with_the_reason(template, reason):
    with pytest.raises(ValueError, match="completion_url_template") as error:
        StudyConfig(completion_url_template=template)
    assert reason in str(error.value)
    with pytest.raises(ValueError, match="completion_url_template"):
        StudyConfig.from_dict({"completion_url_template": template})


def test_the_code_is_url_quoted_into_the_completion_url():
    config = StudyConfig(completion_url_template="https://example.org/done?cc={code}")
    assert config.completion_url("A B&c=1") == "https://example.org/done?cc=A%20B%26c%3D1"
    assert StudyConfig(completion_url_template="").completion_url("X") == ""


@pytest.mark.parametrize("name", ["session_timeout_minutes", "reservation_timeout_minutes"])
def test_timeouts_must_be_positive(name):
    with pytest.raises(ValueError, match=name):
        StudyConfig(**{name: 0})
