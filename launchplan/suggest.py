"""'Did you mean ...?' hints for misspelt keys, names and references."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def did_you_mean(word: object, choices: Iterable[object]) -> str:
    """Return " (did you mean 'x'?)" for the closest choice, or "" when none is close."""
    if not isinstance(word, str) or len(word) > 100:
        return ""
    names = [c for c in choices if isinstance(c, str)]
    close = difflib.get_close_matches(word, names, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""
