"""Nightly refresh: new interactions for one user regenerate only that user's profile; a second refresh of the
same night changes nothing."""

import json

from dagster import AssetKey, DagsterInstance

from orchestration.definitions import defs
from resources.warehouse import WAREHOUSE_SCHEMA
from tests.conftest import REFRESH_AMAZON
from tests.native_files import amazon_review
from tests.tiny_llm import tiny_run_resources
from tests.warehouse_query import query

DOMAIN = "refresh-fixture"
TABLES = ["filtered_histories", "candidate_sets", "base_profiles", "rec_example_scores", "rec_metrics", "qa_metrics",
          "user_embedding_tsne"]


def _refresh(instance, tiny_chat_dir):
    observed = defs.resolve_job_def("observe_raw_files").execute_in_process(instance=instance)
    assert observed.success
    # The tiny models: which users are regenerated does not depend on what they write.
    tiny = tiny_run_resources(tiny_chat_dir, seed=515151)
    result = defs.resolve_job_def("default_graph").execute_in_process(
        partition_key=DOMAIN, instance=instance, run_config={"resources": tiny})
    assert result.success
    out = {}
    for name in TABLES:
        record = instance.get_latest_data_version_record(AssetKey(name), partition_key=DOMAIN)
        out[name] = record.asset_materialization.tags["dagster/data_version"]
    meta = instance.get_latest_data_version_record(AssetKey("base_profiles"), partition_key=DOMAIN)
    return out, meta.asset_materialization.metadata["generated_now"].value


def _profiles():
    return query(f"SELECT user_id, profile FROM {WAREHOUSE_SCHEMA}.base_profiles WHERE domain = ? ORDER BY user_id", DOMAIN)


def test_refresh_regenerates_only_changed_users_and_is_idempotent(tiny_chat_dir):
    with DagsterInstance.ephemeral() as instance:
        first, generated = _refresh(instance, tiny_chat_dir)
        before = _profiles()
        assert generated == len(before) == 6

        user = before["user_id"].iloc[0]
        reviews = REFRESH_AMAZON / "Clothing.jsonl"
        seen = {json.loads(line)["parent_asin"] for line in reviews.read_text().splitlines() if f'"{user}"' in line}
        new_item = next(f"B{i:05d}" for i in range(200) if f"B{i:05d}" not in seen)
        with open(reviews, "a") as fh:  # tonight's new interaction of one evaluated user
            fh.write(json.dumps(amazon_review(user, new_item, 5.0, 1_900_000_000_000)) + "\n")

        second, generated = _refresh(instance, tiny_chat_dir)
        after = _profiles()
        assert generated == 1
        changed = set(before.merge(after, on="user_id").query("profile_x != profile_y")["user_id"])
        assert changed <= {user}
        assert second["filtered_histories"] != first["filtered_histories"]

        third, generated = _refresh(instance, tiny_chat_dir)
        assert generated == 0
        assert third == second
        assert _profiles().equals(after)
