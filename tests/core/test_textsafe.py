"""Text shown to a person can never forge a line or repaint a terminal."""

from __future__ import annotations

import unicodedata

from hypothesis import given
from hypothesis import strategies as st

from blocker.textsafe import MAX_LINE, display_path, printable


@given(st.text())
def test_output_is_one_line_without_control_or_format_characters(text: str) -> None:
    out = printable(text, limit=None)
    assert "\n" not in out and "\r" not in out
    assert all(unicodedata.category(c) not in {"Cc", "Cf", "Zl", "Zp", "Cs"} for c in out)


@given(st.text(), st.text())
def test_different_texts_show_differently(a: str, b: str) -> None:
    # The escaping is injective: a forged "\\n" cannot look like an escaped newline.
    if a != b:
        assert printable(a, limit=None) != printable(b, limit=None)


def test_examples_a_reader_would_see() -> None:
    assert printable("ok\nFAKE: ok") == "ok\\nFAKE: ok"
    assert printable("\x1b[2J") == "\\x1b[2J"
    assert printable("bücher.example") == "bücher.example"
    assert printable("\u202eevil") == "\\u202eevil"
    assert display_path("d\udce9cision.yaml") == "d\\xe9cision.yaml"


def test_long_text_is_cut_with_a_note() -> None:
    out = printable("x" * (MAX_LINE + 500))
    assert out.endswith("... (500 more characters)")
    assert len(out) < MAX_LINE + 40
