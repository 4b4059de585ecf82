"""Text formats of METHOD §2: history lines and the raw-history user contexts All-H and 10-H."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence


def format_rating(rating: float) -> str:
    return str(int(rating)) if float(rating).is_integer() else f"{rating:g}"


def history_lines(item_ids: Sequence[str], ratings: Sequence[float], titles: dict[str, str]) -> list[str]:
    """`[<title> | <rating>]` per event, oldest first."""
    return [f"[{titles.get(i, i)} | {format_rating(r)}]" for i, r in zip(item_ids, ratings)]


def example_history_lines(example, titles: dict[str, str]) -> list[str]:
    """History lines of one `filtered_histories` row (JSON-encoded item and rating lists)."""
    return history_lines(json.loads(example.history_items), json.loads(example.history_ratings), titles)


def recent_history_text(lines: Sequence[str], k: int) -> str:
    """10-H: the k most recent history lines, oldest first."""
    return ", ".join(lines[-k:]) if k > 0 else ""


def fit_lines_to_budget(lines: Sequence[str], budget: int, count_tokens: Callable[[list[str]], list[int]]) -> list[str]:
    """The most recent whole lines whose tokens (plus one separator each) fit `budget`; never empty, never a
    partial line, so no event is cut mid-token."""
    if not lines:
        return []
    costs = count_tokens(list(lines))
    kept = 0
    for cost in reversed(costs):
        budget -= cost + 1
        if budget < 0:
            break
        kept += 1
    return list(lines[len(lines) - max(kept, 1):])
