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
