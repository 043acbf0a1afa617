"""Outside text shown as it is: bidi controls and other invisible characters made visible on every page.

A file name 'gnp.exe' between RIGHT-TO-LEFT OVERRIDE marks was displayed as 'exe.png'; a zero-width space
makes two user ids look the same. Every `{{ ... }}` in a template goes through `finalize`, which shows each
format character (Unicode category Cf: bidi embeddings, overrides and isolates, zero-width characters, the
BOM, soft hyphens), each control character other than tab and newlines and each lone surrogate (which no
page could be encoded with) as a marker like ⟦U+202E⟧.
"""

from __future__ import annotations

import functools
import re
import sys
import unicodedata
from typing import Any

from markupsafe import Markup


@functools.cache
def _invisible() -> re.Pattern[str]:
    # Computed once per process from the running Python's Unicode tables (0.15 s over all code points).
    cf = "".join(re.escape(chr(c)) for c in range(sys.maxunicode + 1) if unicodedata.category(chr(c)) == "Cf")
    return re.compile(f"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff{cf}]")


def visible(text: str) -> str:
    """`text` with every invisible format or control character (tab and newlines excepted) and every lone
    surrogate replaced by its code point in brackets: U+202E becomes ⟦U+202E⟧."""
    if text.isprintable():  # the common case, at C speed: no Cf or Cc character at all
        return text
    return _invisible().sub(lambda m: f"⟦U+{ord(m.group()):04X}⟧", text)


class Editable(str):
    """Text put back into a form field for its author to edit: left as typed, not marked up."""


def editable(value: Any) -> Editable:
    """The `editable` filter: `{{ values.response | editable }}` in a textarea re-shown after an error."""
    return Editable("" if value is None else value)


def finalize(value: Any) -> Any:
    """Jinja's `finalize`: runs on every expression's value before it is escaped."""
    if isinstance(value, str) and not isinstance(value, Markup | Editable):
        return visible(value)
    return value
