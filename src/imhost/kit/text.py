"""Free text people type (names, descriptions, reasons): refused when it holds control characters.

A NUL, an escape sequence or a lone surrogate in a name is never what a person meant: it breaks
PostgreSQL (which refuses NUL in text), e-mail headers, CSV exports and terminals, and can hide
what a name really says. ``PlainText`` (one line) and ``MultilineText`` (line breaks and tabs
allowed) are the string types every API schema uses for what people type; the portal's form
reader applies the same check (``check_text``).

Refused: Unicode's control characters (category Cc: U+0000-U+001F, U+007F-U+009F), the line and
paragraph separators (U+2028, U+2029) and surrogates (U+D800-U+DFFF, not characters at all).
"""

from __future__ import annotations

import unicodedata
from typing import Annotated

from pydantic import AfterValidator
from pydantic_core import PydanticCustomError

REFUSED_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})
LINE_BREAKS_AND_TABS = frozenset("\n\r\t")
CONTROL_MESSAGE = (
    "must not contain invisible control characters (such as NUL{}); remove them and try again"
)


def first_control_character(value: str, *, multiline: bool = False) -> str | None:
    """The first refused character in ``value``, or ``None`` if there is none."""
    for char in value:
        if (char < " " or char >= "\x7f") and unicodedata.category(char) in REFUSED_CATEGORIES:
            if multiline and char in LINE_BREAKS_AND_TABS:
                continue
            return char
    return None


def check_text(value: str, *, multiline: bool = False) -> str:
    """``value`` unchanged, or ``ValueError`` saying what is wrong with it."""
    if first_control_character(value, multiline=multiline) is not None:
        raise ValueError(CONTROL_MESSAGE.format("" if multiline else ", tabs or line breaks"))
    return value


def _validator(*, multiline: bool) -> AfterValidator:
    message = CONTROL_MESSAGE.format("" if multiline else ", tabs or line breaks")

    def validate(value: str) -> str:
        if first_control_character(value, multiline=multiline) is not None:
            # A custom error: the message reaches the client as written (no "Value error, ").
            raise PydanticCustomError("control_character", message)
        return value

    return AfterValidator(validate)


PlainText = Annotated[str, _validator(multiline=False)]
"""One line of text a person typed (a name, a code, an e-mail address, an id)."""

MultilineText = Annotated[str, _validator(multiline=True)]
"""Text that may run over several lines (a description, a reason, a note)."""

__all__ = [
    "CONTROL_MESSAGE",
    "MultilineText",
    "PlainText",
    "check_text",
    "first_control_character",
]
