"""Free text: control characters are refused, ordinary writing (any script, emoji) is not."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError

from imhost.kit.text import MultilineText, PlainText, check_text, first_control_character


class _Form(BaseModel):
    name: PlainText
    note: MultilineText = ""


@pytest.mark.parametrize(
    "value", ["Acme\x00", "a\x1b[31mred", "tab\there", "two\nlines", "\x7f", "\x85", "a\u2028b"]
)
def test_a_name_with_a_control_character_is_refused(value: str) -> None:
    with pytest.raises(ValidationError) as caught:
        _Form(name=value)
    message = caught.value.errors()[0]["msg"]
    assert message.startswith("must not contain invisible control characters")


@pytest.mark.parametrize(
    "value", ["Acme Chat", "Dvořák & Söhne", "東京チャット", "👩‍💻 team", "O'Brien", ""]
)
def test_ordinary_names_pass_unchanged(value: str) -> None:
    assert _Form(name=value).name == value


def test_multiline_text_keeps_line_breaks_and_tabs_but_not_nul() -> None:
    assert _Form(name="x", note="line one\r\nline two\tend").note == "line one\r\nline two\tend"
    with pytest.raises(ValidationError):
        _Form(name="x", note="line\x00")


def test_a_lone_surrogate_is_refused() -> None:
    assert first_control_character("a\ud800b") == "\ud800"
    with pytest.raises(ValueError, match="control characters"):
        check_text("a\ud800b")
