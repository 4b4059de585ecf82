"""Invariant checks of the protocol tables; each returns the number of violations and a short description."""

from __future__ import annotations

import pandas as pd

from profilekit.protocol import Protocol


def history_length_violations(histories: pd.DataFrame, protocol: Protocol) -> tuple[int, str]:
    first = histories[histories["cut"] == 0]
    n_events = first["history_len"] + 1
    bad = ~n_events.between(protocol.min_interactions, protocol.max_interactions)
    return int(bad.sum()), f"users outside {protocol.min_interactions} <= n <= {protocol.max_interactions}"


def candidate_violations(candidates: pd.DataFrame, interactions: pd.DataFrame, protocol: Protocol) -> tuple[int, str]:
    """Count examples with a wrong candidate count or target count, and negatives the user interacted with."""
    per_example = candidates.groupby(["user_id", "cut", "split"]).agg(n=("item_id", "size"), t=("is_target", "sum"))
    per_example = per_example.reset_index()
    expected = per_example["split"].map({"test": protocol.test_negatives + 1, "train": protocol.train_negatives + 1})
    bad_shape = int(((per_example["n"] != expected) | (per_example["t"] != 1)).sum())
    negatives = candidates.loc[~candidates["is_target"], ["user_id", "item_id"]]
    seen = interactions[["user_id", "item_id"]].drop_duplicates()
    bad_neg = int(len(negatives.merge(seen, on=["user_id", "item_id"], how="inner")))
    dup = int(candidates.duplicated(["user_id", "cut", "item_id"]).sum())
    return bad_shape + bad_neg + dup, (
        f"{bad_shape} examples with wrong candidate/target count, {bad_neg} negatives the user interacted with, "
        f"{dup} repeated candidates"
    )


def eligible_user_violations(stats: dict[str, int], protocol: Protocol) -> tuple[int, str]:
    """1 when no user survived the length filter, with the counts that say why."""
    if stats["users_kept"]:
        return 0, f"{stats['users_kept']} of {stats['users_in']} users have {protocol.min_interactions}-{protocol.max_interactions} events"
    return 1, (
        f"no user has between {protocol.min_interactions} and {protocol.max_interactions} events: "
        f"{stats['users_in']} users read, {stats['users_too_few']} with fewer (the most any user has: "
        f"{stats['most_events_per_user']}), {stats['users_too_many']} with more"
    )


def split_violations(stats: dict[str, int]) -> tuple[int, str]:
    """1 when the stable-hash split left no test user or no train user (too few users for the test fraction)."""
    test, train = stats["test_users"], stats["users_kept"] - stats["test_users"]
    description = f"{test} test users, {train} train users"
    return int(stats["users_kept"] > 0 and (test == 0 or train == 0)), description
