"""The evaluation protocol of BLUE §3.1 (METHOD §1): user filtering, target/history, train/test split, candidates."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Protocol:
    min_interactions: int = 20
    max_interactions: int = 1000
    recent_k: int = 10
    test_fraction: float = 0.2
    max_test_users: int = 1200
    max_targets_per_user: int = 1
    test_negatives: int = 99
    train_negatives: int = 128
    seed: int = 0
    # How many test users the evaluation assets score (stable-hash order); the full test split stays defined.
    max_eval_users: int = 1200
    max_qa_users: int = 1200
    # How many train users (stable-hash order) give the SCL embedder its training pairs; None: every train user.
    max_scl_users: int | None = None



class CatalogTooSmallError(ValueError):
    """A user has fewer unseen items than the number of negatives the protocol asks for."""


def stable_user_hash(domain: str, user_id: str) -> int:
    """A process-independent 64-bit hash; Python's hash() is salted per process and would reshuffle splits."""
    return int.from_bytes(hashlib.sha256(f"{domain}\x1f{user_id}".encode()).digest()[:8], "big")


HISTORY_COLUMNS = [
    "domain", "user_id", "split", "cut", "target_item_id", "target_rating", "target_timestamp", "history_len",
    "history_items", "history_ratings",
]
CANDIDATE_COLUMNS = ["domain", "user_id", "cut", "split", "position", "item_id", "is_target"]


def split_users(domain: str, user_ids: list[str], protocol: Protocol) -> dict[str, str]:
    """Test = the users with the smallest stable hash: min(max_test_users, test_fraction of users)."""
    ranked = sorted(user_ids, key=lambda u: (stable_user_hash(domain, u), u))
    n_test = min(protocol.max_test_users, int(round(protocol.test_fraction * len(ranked))))
    return {u: ("test" if i < n_test else "train") for i, u in enumerate(ranked)}


def filter_histories(interactions: pd.DataFrame, protocol: Protocol) -> tuple[pd.DataFrame, dict[str, int]]:
    """One row per (user, target): target item, ratings, JSON histories (oldest first) and split.

    Events are ordered by timestamp, ties by file order (`seq`). The target is the user's last event and the
    history is every earlier event; train users may contribute up to `max_targets_per_user` cut points.
    """
    domain = str(interactions["domain"].iloc[0])
    df = interactions.sort_values(["user_id", "timestamp", "seq"], kind="stable")
    counts = df.groupby("user_id", sort=False).size()
    keep = counts[(counts >= protocol.min_interactions) & (counts <= protocol.max_interactions)].index
    stats = {
        "users_in": int(len(counts)),
        "users_too_few": int((counts < protocol.min_interactions).sum()),
        "users_too_many": int((counts > protocol.max_interactions).sum()),
    }
    df = df[df["user_id"].isin(keep)]
    split = split_users(domain, list(keep), protocol)
    rows = []
    for user_id, events in df.groupby("user_id", sort=True):
        items = events["item_id"].tolist()
        ratings = events["rating"].tolist()
        stamps = events["timestamp"].tolist()
        n_targets = 1 if split[user_id] == "test" else protocol.max_targets_per_user
        for k in range(n_targets):
            cut = len(items) - 1 - k
            if cut < protocol.min_interactions - 1:
                break
            rows.append(
                {
                    "domain": domain,
                    "user_id": user_id,
                    "split": split[user_id],
                    "cut": k,
                    "target_item_id": items[cut],
                    "target_rating": float(ratings[cut]),
                    "target_timestamp": stamps[cut],
                    "history_len": cut,
                    "history_items": json.dumps(items[:cut]),
                    "history_ratings": json.dumps([float(r) for r in ratings[:cut]]),
                }
            )
    out = pd.DataFrame(rows, columns=HISTORY_COLUMNS)
    stats["users_kept"] = int(len(keep))
    stats["most_events_per_user"] = int(counts.max()) if len(counts) else 0
    stats["test_users"] = int(sum(1 for s in split.values() if s == "test"))
    stats["examples"] = int(len(out))
    return out, stats


def eval_users(histories: pd.DataFrame, protocol: Protocol) -> list[str]:
    """The test users the evaluation assets score: the first `max_eval_users` in stable-hash order."""
    test = histories.loc[(histories["split"] == "test") & (histories["cut"] == 0)]
    domain = str(histories["domain"].iloc[0])
    ranked = sorted(test["user_id"].unique(), key=lambda u: (stable_user_hash(domain, u), u))
    return ranked[: protocol.max_eval_users]


def eval_examples(histories: pd.DataFrame, protocol: Protocol, limit: int | None = None) -> pd.DataFrame:
    """The test examples of the evaluated users (the first `limit` of them when given)."""
    users = set(eval_users(histories, protocol)[:limit])
    return histories[(histories["split"] == "test") & histories["user_id"].isin(users)]


def validation_split(histories: pd.DataFrame, n_users: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(training, validation) train-split examples: the validation users are `n_users` train users (at most half
    of them, so a small domain keeps users to train on) chosen by a stable hash of their own, independent of the
    test split's, so they are never test users and never trained on; each gives one example, its last cut (cut 0)."""
    train = histories[histories["split"] == "train"]
    if train.empty or n_users <= 0:
        return train, train.iloc[:0]
    domain = str(train["domain"].iloc[0])
    ranked = sorted(train["user_id"].unique(), key=lambda u: (stable_user_hash(f"validation\x1f{domain}", u), u))
    n_users = min(n_users, len(ranked) // 2)
    chosen = train["user_id"].isin(set(ranked[:n_users]))
    return train[~chosen], train[chosen & (train["cut"] == 0)]


def scl_train_examples(histories: pd.DataFrame, protocol: Protocol) -> pd.DataFrame:
    """The train-split examples SCL learns from: those of the first `max_scl_users` train users in stable-hash
    order (every train user when it is None). Test users never enter SCL training."""
    train = histories[histories["split"] == "train"]
    if train.empty:
        return train
    domain = str(train["domain"].iloc[0])
    ranked = sorted(train["user_id"].unique(), key=lambda u: (stable_user_hash(domain, u), u))
    chosen = set(ranked[: protocol.max_scl_users])
    return train[train["user_id"].isin(chosen)].sort_values(["user_id", "cut"]).reset_index(drop=True)


def sample_candidates(
    histories: pd.DataFrame, interactions: pd.DataFrame, item_ids: list[str], protocol: Protocol
) -> pd.DataFrame:
    """Target + negatives sampled uniformly from the domain's items the user never interacted with.

    Each example draws from its own generator seeded by (seed, domain, user, cut), so a user's candidates do
    not change when other users are added or removed.
    """
    all_items = np.asarray(sorted(item_ids))
    position = {item: i for i, item in enumerate(all_items)}
    seen_by_user = interactions.groupby("user_id")["item_id"].agg(lambda s: {position[i] for i in s if i in position})
    frames = []
    for ex in histories.itertuples(index=False):
        n_neg = protocol.test_negatives if ex.split == "test" else protocol.train_negatives
        seen = seen_by_user[ex.user_id]
        available = len(all_items) - len(seen)
        if available < n_neg:
            raise CatalogTooSmallError(
                f"user {ex.user_id}: only {available} unseen items in the catalog for {n_neg} negatives"
            )
        key = stable_user_hash(ex.domain, f"{ex.user_id}\x1f{ex.cut}")
        rng = np.random.default_rng([protocol.seed, key])
        chosen: list[int] = []
        chosen_set: set[int] = set()
        while len(chosen) < n_neg:
            for idx in rng.integers(0, len(all_items), size=2 * (n_neg - len(chosen)) + 8):
                idx = int(idx)
                if idx not in seen and idx not in chosen_set:
                    chosen.append(idx)
                    chosen_set.add(idx)
                    if len(chosen) == n_neg:
                        break
        frames.append(
            pd.DataFrame(
                {
                    "domain": ex.domain,
                    "user_id": ex.user_id,
                    "cut": ex.cut,
                    "split": ex.split,
                    "position": np.arange(n_neg + 1, dtype=np.int64),
                    "item_id": np.concatenate([[ex.target_item_id], all_items[chosen]]),
                    "is_target": np.arange(n_neg + 1) == 0,
                }
            )
        )
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=CANDIDATE_COLUMNS)
