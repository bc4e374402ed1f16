"""Resolve free text such as "S-Video cable" to a catalogue item by its title, cheaply and predictably."""

from __future__ import annotations

import re

_TOKEN = re.compile(r"[a-z0-9]+")


def normalize_title(text: str) -> list[str]:
    """Lower-case word tokens; hyphens inside words are dropped so "S-Video" and "svideo" agree."""
    return _TOKEN.findall(re.sub(r"(?<=\w)-(?=\w)", "", str(text).lower()))


class TitleMatcher:
    """Best title for a query: all query words present, the query as a prefix first, then the tightest title.

    Without a title containing every query word, the best word overlap (Jaccard) above `min_overlap` wins;
    below it the text matches nothing and the caller treats it as a brand-new item.
    """

    def __init__(self, titles: list[str], min_overlap: float = 0.5):
        self.tokens = [normalize_title(t) for t in titles]
        self.min_overlap = min_overlap

    def match(self, query: str) -> tuple[int, float] | None:
        """(row, match strength in [0, 1]) or None."""
        q = normalize_title(query)
        if not q:
            return None
        q_set = set(q)
        best: tuple[tuple, int, float] | None = None
        for row, toks in enumerate(self.tokens):
            if not toks:
                continue
            t_set = set(toks)
            if q_set <= t_set:
                key = (2, toks[: len(q)] == q, len(q_set) / len(t_set), -row)
                strength = 1.0
            else:
                overlap = len(q_set & t_set) / len(q_set | t_set)
                if overlap < self.min_overlap:
                    continue
                key, strength = (1, False, overlap, -row), overlap
            if best is None or key > best[0]:
                best = (key, row, strength)
        return None if best is None else (best[1], best[2])
