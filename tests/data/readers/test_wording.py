"""A library message a reader cannot put in its own words is kept short, cut between words, values dropped."""

from __future__ import annotations

from medtl.data.readers import reason


def test_long_library_messages_are_cut_between_words_and_quoted_values_dropped() -> None:
    text = reason(RuntimeError("decoder said 'PATIENT^NAME' then " + "abcdefgh " * 40))
    assert text.startswith("cannot be read (RuntimeError: decoder said '…' then abcdefgh") and "PATIENT" not in text
    inner = text.removeprefix("cannot be read (RuntimeError: ").removesuffix(")")
    assert inner.endswith(" …") and len(inner) <= 160
    assert all(w in ("decoder", "said", "'…'", "then", "abcdefgh", "…") for w in inner.split()), "no word cut in two"
