"""Hostile text costs the reference classifier bounded work: no cue pattern has an unbounded
gap between literals (the quadratic `what do .* cost`), and the normal form every rule reads
is capped however much NFKD grows the text."""

from __future__ import annotations

import re

from classifier.reference import intents
from classifier.reference.text import MAX_NORMALIZED, normalize

UNBOUNDED_GAP = re.compile(r"(?<!\\)\.[*+]|\[[^\]]*\][*+]")


def test_no_cue_pattern_has_an_unbounded_gap():
    patterns = [pattern for cues in intents._CUES.values() for pattern, _ in cues]
    assert len(patterns) > 40, "the scan reads the real cue table"
    assert [p for p in patterns if UNBOUNDED_GAP.search(p)] == []
    assert UNBOUNDED_GAP.search(r"\bwhat do .* cost"), "the scan finds the gap it looks for"


def test_the_normal_form_is_capped_however_much_nfkd_grows_the_text():
    grows = "\ufdfa" * 4096  # NFKD: 18 characters each
    assert len(normalize(grows)) == MAX_NORMALIZED
    assert len(normalize("a" * 100_000)) <= MAX_NORMALIZED
    assert normalize("Cuánto cuesta") == "cuanto cuesta", "ordinary text as before"
