"""User-context texts (METHOD §2), in long form: one row per (example, method, context).

History contexts: All-H (newest whole events within a token budget) and 10-H. Profile contexts: P (the profile)
and 10H+P (the 10 most recent history lines, then the profile).
"""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd

from profilekit.text import example_history_lines, fit_lines_to_budget, recent_history_text

CONTEXT_COLUMNS = ["domain", "user_id", "cut", "method", "context", "text"]
# DUET's native rating row (DUET_BUMP A6): 10H + the target-mode user profile + the target-mode item profile. Its
# profiles were written knowing the target, so it answers the rating question only; `evaluation_contexts` never
# builds it, so N@10, multiple choice and SCL cannot see it.
DUET_RATING_CONTEXT = "10H+P+Pi"


def history_contexts(
    examples: pd.DataFrame,
    items: pd.DataFrame,
    count_tokens: Callable[[list[str]], list[int]],
    budget: int,
    recent_k: int,
) -> pd.DataFrame:
    titles = dict(zip(items["item_id"], items["title"]))
    rows = []
    for ex in examples.itertuples(index=False):
        lines = example_history_lines(ex, titles)
        all_h = ", ".join(fit_lines_to_budget(lines, budget, count_tokens))
        rows.append((ex.domain, ex.user_id, ex.cut, "history", "All-H", all_h))
        rows.append((ex.domain, ex.user_id, ex.cut, "history", "10-H", recent_history_text(lines, recent_k)))
    return pd.DataFrame(rows, columns=CONTEXT_COLUMNS)


def profile_views(recent: list[str], profiles: list[str]) -> dict[str, list[str]]:
    """The two user texts of a profile: `P` alone and `10H+P` (recent history lines, newline, profile)."""
    return {"P": list(profiles), "10H+P": [f"{r}\n{p}" for r, p in zip(recent, profiles)]}


def profile_contexts(
    examples: pd.DataFrame, items: pd.DataFrame, profiles: pd.DataFrame, recent_k: int, method: str
) -> pd.DataFrame:
    """Only examples that have a profile get rows."""
    titles = dict(zip(items["item_id"], items["title"]))
    by_key = profiles.set_index(["user_id", "cut"])["profile"]
    rows = []
    for ex in examples.itertuples(index=False):
        profile = by_key.get((ex.user_id, ex.cut))
        if profile is None:
            continue
        recent = recent_history_text(example_history_lines(ex, titles), recent_k)
        views = profile_views([recent], [profile])
        rows.append((ex.domain, ex.user_id, ex.cut, method, "P", views["P"][0]))
        rows.append((ex.domain, ex.user_id, ex.cut, method, "10H+P", views["10H+P"][0]))
    return pd.DataFrame(rows, columns=CONTEXT_COLUMNS)


def evaluation_contexts(
    examples: pd.DataFrame,
    items: pd.DataFrame,
    base_profiles: pd.DataFrame,
    trained_profiles: pd.DataFrame,
    count_tokens: Callable[[list[str]], list[int]],
    budget: int,
    recent_k: int,
) -> pd.DataFrame:
    """Every context the evaluation scores: All-H and 10-H, then P and 10H+P of Base and of each trained method
    (`trained_profiles` may hold several methods' rows, or none)."""
    frames = [
        history_contexts(examples, items, count_tokens, budget, recent_k),
        profile_contexts(examples, items, base_profiles, recent_k, "Base"),
    ]
    if len(trained_profiles):
        for method, rows in trained_profiles.groupby("method", sort=True):
            frames.append(profile_contexts(examples, items, rows, recent_k, method))
    return pd.concat(frames, ignore_index=True)


def duet_rating_contexts(
    examples: pd.DataFrame, items: pd.DataFrame, trained_profiles: pd.DataFrame, recent_k: int
) -> pd.DataFrame:
    """The `10H+P+Pi` context of every example and method whose profile row carries target-mode profiles
    (`profiler.generate_target_profiles`; only DUET methods write them, for the QA examples): the 10 most recent
    history lines, the user profile, and the item profile on its own line."""
    if "target_user_profile" not in trained_profiles.columns:
        return pd.DataFrame(columns=CONTEXT_COLUMNS)
    rated = trained_profiles.dropna(subset=["target_user_profile"])
    by_key = rated.set_index(["user_id", "cut"]).sort_values("method", kind="stable")
    titles = dict(zip(items["item_id"], items["title"]))
    rows = []
    for ex in examples.itertuples(index=False):
        if (ex.user_id, ex.cut) not in by_key.index:
            continue
        recent = recent_history_text(example_history_lines(ex, titles), recent_k)
        for r in by_key.loc[[(ex.user_id, ex.cut)]].itertuples(index=False):
            rows.append((ex.domain, ex.user_id, ex.cut, r.method, DUET_RATING_CONTEXT,
                         f"{recent}\n{r.target_user_profile}\nItem profile: {r.target_item_profile}"))
    return pd.DataFrame(rows, columns=CONTEXT_COLUMNS)
