import json

import numpy as np
import pandas as pd
import pytest

from profilekit.checks import candidate_violations, history_length_violations
from profilekit.protocol import (
    CatalogTooSmallError,
    Protocol,
    eval_users,
    filter_histories,
    sample_candidates,
    split_users,
)

pytestmark = pytest.mark.fast  # `make test-fast`: no Dagster run, subprocess, browser or real model


def _interactions(counts: dict[str, int], ties: bool = False) -> pd.DataFrame:
    rows, seq = [], 0
    for user, n in counts.items():
        for k in range(n):
            ts = 1_000_000 if ties else 1_000_000 + 60 * k
            rows.append(("d", user, f"i{k}", 4.0, pd.Timestamp(ts, unit="s", tz="UTC"), seq))
            seq += 1
    return pd.DataFrame(rows, columns=["domain", "user_id", "item_id", "rating", "timestamp", "seq"])


def test_user_count_boundaries_19_20_1000_1001():
    inter = _interactions({"u19": 19, "u20": 20, "u1000": 1000, "u1001": 1001})
    hist, stats = filter_histories(inter, Protocol(test_fraction=0.5))
    assert sorted(hist["user_id"]) == ["u1000", "u20"]
    assert stats["users_too_few"] == 1 and stats["users_too_many"] == 1
    assert dict(zip(hist["user_id"], hist["history_len"])) == {"u20": 19, "u1000": 999}
    assert history_length_violations(hist, Protocol())[0] == 0


def test_target_is_last_event_and_history_is_oldest_first():
    inter = _interactions({"u": 25})
    inter = inter.sample(frac=1.0, random_state=3).reset_index(drop=True)  # file order must not matter here
    hist, _ = filter_histories(inter, Protocol())
    row = hist.iloc[0]
    assert row["target_item_id"] == "i24"
    assert json.loads(row["history_items"]) == [f"i{k}" for k in range(24)]


def test_timestamp_ties_are_broken_by_file_order():
    inter = _interactions({"u": 22}, ties=True)  # every event in the same second
    hist, _ = filter_histories(inter, Protocol())
    assert hist.iloc[0]["target_item_id"] == "i21"  # last in file order
    assert json.loads(hist.iloc[0]["history_items"])[-1] == "i20"


def test_split_is_stable_and_sized_by_fraction_and_cap():
    users = [f"u{i}" for i in range(500)]
    a = split_users("d", users, Protocol(test_fraction=0.2, max_test_users=1200))
    b = split_users("d", list(reversed(users)), Protocol(test_fraction=0.2, max_test_users=1200))
    assert a == b
    assert sum(v == "test" for v in a.values()) == 100
    capped = split_users("d", users, Protocol(test_fraction=0.2, max_test_users=30))
    assert sum(v == "test" for v in capped.values()) == 30
    # the capped test set is a subset of the larger one: growing the cap never moves a user out of test
    assert {u for u, s in capped.items() if s == "test"} <= {u for u, s in a.items() if s == "test"}


def test_multiple_cut_points_for_train_users_only():
    inter = _interactions({f"u{i}": 30 for i in range(10)})
    hist, _ = filter_histories(inter, Protocol(test_fraction=0.3, max_targets_per_user=3))
    per_user = hist.groupby("user_id").agg(split=("split", "first"), n=("cut", "size"))
    assert (per_user.loc[per_user["split"] == "test", "n"] == 1).all()
    assert (per_user.loc[per_user["split"] == "train", "n"] == 3).all()
    second = hist[(hist["cut"] == 1)].iloc[0]
    assert second["target_item_id"] == "i28" and second["history_len"] == 28


def _domain_with_catalog(n_users=40, n_items=400, per_user=25, seed=0):
    rng = np.random.default_rng(seed)
    rows, seq = [], 0
    for u in range(n_users):
        for k, i in enumerate(rng.choice(n_items, size=per_user, replace=False)):
            rows.append(("d", f"u{u}", f"i{i}", 3.0, pd.Timestamp(1_000_000 + k, unit="s", tz="UTC"), seq))
            seq += 1
    return pd.DataFrame(rows, columns=["domain", "user_id", "item_id", "rating", "timestamp", "seq"])


def test_candidates_never_interacted_and_deterministic_under_seed():
    inter = _domain_with_catalog()
    proto = Protocol(test_fraction=0.25)
    hist, _ = filter_histories(inter, proto)
    catalog = sorted(inter["item_id"].unique())
    first = sample_candidates(hist, inter, catalog, proto)
    again = sample_candidates(hist, inter, catalog, proto)
    pd.testing.assert_frame_equal(first, again)
    assert candidate_violations(first, inter, proto)[0] == 0
    sizes = first.groupby(["user_id", "split"]).size().reset_index(name="n")
    assert set(sizes.loc[sizes["split"] == "test", "n"]) == {100}
    assert set(sizes.loc[sizes["split"] == "train", "n"]) == {129}
    other_seed = sample_candidates(hist, inter, catalog, Protocol(test_fraction=0.25, seed=1))
    assert not first["item_id"].equals(other_seed["item_id"])
    # a user's candidates do not depend on which other users are present
    one_user = hist[hist["user_id"] == hist["user_id"].iloc[0]]
    alone = sample_candidates(one_user, inter, catalog, proto)
    pd.testing.assert_frame_equal(alone, first[first["user_id"] == one_user["user_id"].iloc[0]].reset_index(drop=True))


def test_candidate_check_catches_an_interacted_negative():
    inter = _domain_with_catalog()
    proto = Protocol(test_fraction=0.25)
    hist, _ = filter_histories(inter, proto)
    cands = sample_candidates(hist, inter, sorted(inter["item_id"].unique()), proto)
    user = cands["user_id"].iloc[0]
    seen_item = inter.loc[inter["user_id"] == user, "item_id"].iloc[0]
    bad = cands.copy()
    bad.loc[bad.index[1], "item_id"] = seen_item
    assert candidate_violations(bad, inter, proto)[0] >= 1


def test_too_small_catalog_is_a_clear_error():
    inter = _domain_with_catalog(n_users=5, n_items=60, per_user=25)
    hist, _ = filter_histories(inter, Protocol(test_fraction=0.5))
    with pytest.raises(CatalogTooSmallError, match="unseen items"):
        sample_candidates(hist, inter, sorted(inter["item_id"].unique()), Protocol(test_fraction=0.5))


def test_eval_users_is_a_stable_prefix_of_the_test_split():
    inter = _domain_with_catalog(n_users=60)
    hist, _ = filter_histories(inter, Protocol(test_fraction=0.5))
    small = eval_users(hist, Protocol(max_eval_users=5))
    large = eval_users(hist, Protocol(max_eval_users=20))
    assert len(small) == 5 and large[:5] == small
    assert set(large) <= set(hist.loc[hist["split"] == "test", "user_id"])
