"""The partitioned asset chain, materialized through the real Definitions into a real DuckDB file, with the tiny chat
LM as profiler and judge (the real SmolLM2 on real data: tests/test_real_data.py)."""

from pathlib import Path

import duckdb
import numpy as np
import pytest
from dagster import AssetKey, DagsterInstance, MultiPartitionKey

from orchestration.definitions import defs
from profilekit.embedder import Embedder
from profilekit.sources import dir_content_hash
from resources.settings import warehouse_path
from resources.warehouse import WAREHOUSE_SCHEMA
from tests.tiny_llm import tiny_run_resources
from tests.warehouse_query import query, table_rows

ASSETS = [
    "interactions",
    "items",
    "filtered_histories",
    "candidate_sets",
    "item_embeddings",
    "profiler_base_weights",
    "base_profiles",
    "rec_example_scores",
    "rec_metrics",
    "qa_example_scores",
    "qa_metrics",
    "rating_metrics",
    "ablation_metrics",
    "user_embedding_tsne",
]
PARTITIONED_ASSETS = [a for a in ASSETS if a != "profiler_base_weights"]


@pytest.fixture(scope="module")
def instance():
    with DagsterInstance.ephemeral() as inst:
        yield inst


def _execute(job, instance, partition_key, tiny_chat_dir, **resources):
    """`job` with the tiny models of every run in this module (one profiler, so one set of base profiles)."""
    run_config = {"resources": {**tiny_run_resources(tiny_chat_dir), **resources}}
    return defs.resolve_job_def(job).execute_in_process(
        partition_key=partition_key, instance=instance, run_config=run_config, raise_on_error=False)


def _run(instance, domain, tiny_chat_dir):
    return _execute("default_graph", instance, domain, tiny_chat_dir)


def _versions(instance, domain):
    out = {}
    for name in ASSETS:
        key = domain if name in PARTITIONED_ASSETS else None
        record = instance.get_latest_data_version_record(AssetKey(name), partition_key=key)
        out[name] = record.asset_materialization.tags.get("dagster/data_version") if record else None
    return out


@pytest.fixture(scope="module")
def built_domain(instance, tiny_chat_dir):
    """The fixture domain's whole per-domain graph, materialized once for the tests of this module."""
    result = _run(instance, "amazon-fixture", tiny_chat_dir)
    assert result.success
    return result


TINY = {"steps": 2, "users_per_step": 2, "rollouts": 2, "max_new_tokens": 12, "validation_users": 4}


@pytest.fixture(scope="module")
def trained_blue(instance, built_domain, tiny_chat_dir):
    """BLUE trained on the (test) source domain by the real assets, with a tiny profiler so it takes seconds."""
    key = MultiPartitionKey({"method": "blue", "domain": "amazon-fixture"})
    assert _execute("profiler_training", instance, key, tiny_chat_dir, training={"config": TINY}).success
    return key


def test_fixture_domain_end_to_end_checks_and_identical_rebuild(instance, built_domain, tiny_chat_dir):
    first = built_domain
    checks = [e.event_specific_data for e in first.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    assert {c.check_name for c in checks} == {"history_length_bounds", "eligible_users", "both_splits", "candidates_valid"}
    assert all(c.passed for c in checks)
    before = _versions(instance, "amazon-fixture")
    assert all(before.values()), before

    metrics = table_rows("rec_metrics", "amazon-fixture")
    assert sorted(zip(metrics["method"], metrics["context"])) == [
        ("Base", "10H+P"), ("Base", "P"), ("history", "10-H"), ("history", "All-H")
    ]
    scores = table_rows("rec_example_scores", "amazon-fixture")
    for row in metrics.itertuples():
        per_example = scores[scores["context"] == row.context]
        assert len(per_example) == row.n_examples == 6  # 20% of 30 users
        assert per_example["ndcg10"].mean() == pytest.approx(row.ndcg10)
        assert (per_example["n_candidates"] == 100).all()

    summary = _metadata(instance, "rec_metrics", "amazon-fixture")[0]["summary"].value  # a table the UI shows inline
    assert len(summary.records) == len(metrics) and {"ndcg10", "t_pvalue_vs_ref"} <= {c.name for c in summary.schema.columns}
    profiles = table_rows("base_profiles", "amazon-fixture")
    assert len(profiles) == 6 and (profiles["profile_tokens"] > 0).all() and (profiles["method"] == "Base").all()
    qa = table_rows("qa_metrics", "amazon-fixture")
    assert sorted(qa["context"]) == ["10-H", "10H+P", "All-H", "P"] and (qa["n_examples"] == 3).all()
    qa_summary = _metadata(instance, "qa_metrics", "amazon-fixture")[0]["summary"].value
    assert sorted(r.data["context"] for r in qa_summary.records) == sorted(qa["context"])
    qa_rows = table_rows("qa_example_scores", "amazon-fixture")
    assert int((~qa_rows["mc_parsed"]).sum()) == int(qa["mc_unparsed"].sum())  # unparseable answers are counted
    ratings = table_rows("rating_metrics", "amazon-fixture")
    assert set(ratings["vs_method"]) == {"Base", "blue"} and len(ratings) == 2 * len(qa)
    for row in ratings[ratings["vs_method"] == "Base"].itertuples():
        answers = qa_rows[qa_rows["context"] == row.context]
        assert row.rating_mae == pytest.approx(answers["rating_abs_error"].mean())
        assert row.rating_mae == pytest.approx(np.abs(answers["rating_predicted"] - answers["target_rating"]).mean())
    base_p = ratings[(ratings["vs_method"] == "Base") & (ratings["context"] == "P")].iloc[0]
    history = ratings[(ratings["vs_method"] == "Base") & (ratings["context"] == "10-H")].iloc[0]
    assert np.isnan(base_p["t_pvalue_vs_ref"]) and history["n_paired"] == 3  # history is paired with Base's 10H+P

    second = _run(instance, "amazon-fixture", tiny_chat_dir)
    assert second.success
    assert _versions(instance, "amazon-fixture") == before  # content-hash versions: identical rebuild, same versions
    emb = instance.get_latest_data_version_record(AssetKey("item_embeddings"), partition_key="amazon-fixture")
    meta = emb.asset_materialization.metadata
    assert meta["encoded_now"].value == 0 and meta["from_cache"].value == 200


def _metadata(instance, asset, partition):
    record = instance.get_latest_data_version_record(AssetKey(asset), partition_key=partition)
    return record.asset_materialization.metadata, record.asset_materialization.tags.get("dagster/data_version")


def test_trained_method_checkpoint_profiles_and_metrics_with_significance(instance, trained_blue, tiny_chat_dir):
    key = trained_blue
    meta, version = _metadata(instance, "profiler_checkpoint", key)
    # 4 of the 24 train users are held out for the validation curve, scored at steps 0 and 2
    assert meta["step"].value == 2 and meta["trained_now"].value == 2 and meta["train_examples"].value == 20
    assert meta["validation_users"].value == 4 and {"validation_reward_gain", "validation_reward_gain_se"} <= set(meta)
    assert "training_reward_slope_per_100_steps" not in meta  # two steps: too few for a slope and its error
    assert meta["reward_curve"].value.startswith("![training dynamics](data:image/png;base64,")
    assert [r.data["step"] for r in meta["validation_curve"].value.records] == [0, 2]
    assert len(meta["case_study"].value.records) == 3 * 2  # 3 users at the first and last validation
    profiles = table_rows("generated_profiles", "amazon-fixture")
    assert len(profiles) == 6 and set(profiles["method"]) == {"blue"} and set(profiles["model_version"]) == {version}

    assert _execute("profiler_training", instance, key, tiny_chat_dir, training={"config": TINY}).success
    meta2, version2 = _metadata(instance, "profiler_checkpoint", key)
    assert meta2["trained_now"].value == 0 and meta2["resumed_from"].value == 2 and version2 == version

    assert _execute("evaluation", instance, "amazon-fixture", tiny_chat_dir).success
    metrics = table_rows("rec_metrics", "amazon-fixture")
    assert {("blue", "P"), ("blue", "10H+P"), ("Base", "P"), ("history", "10-H")} <= set(zip(metrics["method"], metrics["context"]))
    base = metrics[(metrics["method"] == "Base") & (metrics["context"] == "10H+P")].iloc[0]
    assert base["vs_context"] == "10H+P" and base["n_paired"] == 6 and 0.0 <= base["t_pvalue_vs_ref"] <= 1.0
    blue = metrics[metrics["method"] == "blue"]
    assert blue["t_pvalue_vs_ref"].isna().all()  # the reference itself
    qa = table_rows("qa_metrics", "amazon-fixture")
    assert {("blue", "P"), ("blue", "10H+P")} <= set(zip(qa["method"], qa["context"]))


SCL = {"config": {"batch_size": 8, "learning_rate": 1e-4, "max_seq_length": 64}}


def _scl(instance, method, domain, tiny_chat_dir):
    key = MultiPartitionKey({"method": method, "domain": domain})
    assert _execute("scl_adaptation", instance, key, tiny_chat_dir, scl=SCL).success
    return _metadata(instance, "scl_embedder", key)


def test_scl_grid_cross_and_in_domain_with_significance_against_blue_scl(instance, trained_blue, tiny_chat_dir):
    """SCL adapts the real MiniLM on the source domain (amazon-fixture) for the history, Base and BLUE contexts,
    and on a second domain for history; the grid scores both settings."""
    for method in ("history", "Base", "blue"):
        meta, version = _scl(instance, method, "amazon-fixture", tiny_chat_dir)
        assert meta["trained_now"].value and meta["pairs"].value == 16 and meta["steps"].value == 2  # 16 users / 8
        saved = Path(meta["path"].value) / "model"  # the version must name the bytes that were saved
        assert version == meta["embedder_version"].value == f"model-{dir_content_hash(saved)}" == Embedder(saved).version
        assert meta["loss_curve"].value.startswith("![SCL loss](data:image/png")
    pairs = table_rows("scl_training_pairs", "amazon-fixture")
    assert pairs.groupby("method")["context"].agg(set).to_dict() == {"history": {"10-H"}, "Base": {"10H+P"}, "blue": {"10H+P"}}
    assert pairs["user_id"].nunique() == 16
    checkpoint_version = _metadata(instance, "profiler_checkpoint", trained_blue)[1]
    versions = pairs.groupby("method")["profile_model_version"].agg(set).to_dict()
    assert versions["history"] == {""} and versions["blue"] == {checkpoint_version} and len(versions["Base"]) == 1
    test_users = set(query(f"SELECT user_id FROM {WAREHOUSE_SCHEMA}.filtered_histories WHERE domain = ? AND split = 'test'",
                            "amazon-fixture")["user_id"])
    assert not test_users & set(pairs["user_id"])  # SCL never trains on a test user

    again, version_again = _scl(instance, "blue", "amazon-fixture", tiny_chat_dir)
    assert not again["trained_now"].value and version_again == version  # same pairs and budgets: not retrained

    data = [AssetKey(n) for n in ("interactions", "items", "filtered_histories", "candidate_sets")]
    assert defs.resolve_job_def("domain_data").execute_in_process(
        partition_key="target-fixture", instance=instance, asset_selection=data).success
    _scl(instance, "history", "target-fixture", tiny_chat_dir)
    for domain in ("amazon-fixture", "target-fixture"):
        assert _execute("scl_evaluation", instance, domain, tiny_chat_dir).success

    source = table_rows("scl_metrics", "amazon-fixture")
    assert set(zip(source["setting"], source["method"], source["context"])) == {
        (s, m, c) for s in ("cross-domain", "in-domain") for m, c in (("history", "10-H"), ("Base", "10H+P"), ("blue", "10H+P"))
    }
    assert (source["n_examples"] == 6).all()
    summary = _metadata(instance, "scl_metrics", "amazon-fixture")[0]["summary"].value
    assert len(summary.records) == len(source) and "setting" in {c.name for c in summary.schema.columns}
    blue = source[source["method"] == "blue"]
    assert blue["t_pvalue_vs_ref"].isna().all()
    others = source[source["method"] != "blue"]
    assert (others["n_paired"] == 6).all() and others["t_pvalue_vs_ref"].between(0, 1).all()
    assert (others["vs_context"] == "10H+P").all()

    target = table_rows("scl_example_scores", "target-fixture")
    by_setting = target.groupby("setting")["train_domain"].agg(set).to_dict()
    assert by_setting == {"cross-domain": {"amazon-fixture"}, "in-domain": {"target-fixture"}}
    assert target.groupby("setting")["embedder_version"].nunique().to_dict() == {"cross-domain": 1, "in-domain": 1}
    assert target["embedder_version"].nunique() == 2 and (target["n_candidates"] == 100).all()
    metrics = table_rows("scl_metrics", "target-fixture")
    cross = metrics[metrics["setting"] == "cross-domain"].iloc[0]
    per_user = target[target["setting"] == "cross-domain"]["ndcg10"]
    assert cross["n_examples"] == len(per_user) == 6 and cross["ndcg10"] == pytest.approx(per_user.mean())
    assert metrics["n_paired"].eq(0).all()  # no BLUE+SCL on this domain: nothing to pair with

    # Profiles of another model (as after a retraining that SCL has not followed) are refused, not scored.
    update = f"UPDATE {WAREHOUSE_SCHEMA}.generated_profiles SET model_version = ? WHERE method = 'blue'"
    with duckdb.connect(warehouse_path()) as con:
        con.execute(update, ["retrained"])
    try:
        result = _execute("scl_adaptation", instance, MultiPartitionKey({"method": "blue", "domain": "amazon-fixture"}),
                          tiny_chat_dir, scl=SCL)
    finally:
        with duckdb.connect(warehouse_path()) as con:
            con.execute(update, [checkpoint_version])
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert f"adapted on profiles of '{checkpoint_version}'" in str(failure.event_specific_data.error)


def test_ablation_variant_analyses_tsne_and_frontier(instance, trained_blue, tiny_chat_dir):
    """A BLUE variant trained by the ablation job with BLUE's recipe, then the domain's evaluation and analyses:
    Table 6 against BLUE on the same users, the t-SNE map (identical on a rebuild) and the frontier."""
    variant = MultiPartitionKey({"method": "blue-no-text", "domain": "amazon-fixture"})
    assert _execute("ablation_training", instance, variant, tiny_chat_dir, training={"config": TINY}).success
    meta, _ = _metadata(instance, "profiler_checkpoint", variant)
    assert meta["step"].value == _metadata(instance, "profiler_checkpoint", trained_blue)[0]["step"].value == 2
    for job in ("evaluation", "analyses"):
        assert _execute(job, instance, "amazon-fixture", tiny_chat_dir).success

    table = table_rows("ablation_metrics", "amazon-fixture")
    assert sorted(zip(table["method"], table["context"])) == [
        ("blue", "10H+P"), ("blue", "P"), ("blue-no-text", "10H+P"), ("blue-no-text", "P")]
    scores = table_rows("rec_example_scores", "amazon-fixture")
    qa = table_rows("qa_example_scores", "amazon-fixture")
    for context in ("P", "10H+P"):
        row = table[(table["method"] == "blue-no-text") & (table["context"] == context)].iloc[0]
        mean = {m: scores[(scores["method"] == m) & (scores["context"] == context)]["ndcg10"].mean()
                for m in ("blue", "blue-no-text")}
        accuracy = {m: qa[(qa["method"] == m) & (qa["context"] == context)]["mc_correct"].mean()
                    for m in ("blue", "blue-no-text")}
        assert row["n_paired"] == 6 and row["n_qa_paired"] == 3 and 0.0 <= row["ndcg10_t_pvalue"] <= 1.0
        assert row["delta_ndcg10"] == pytest.approx(mean["blue-no-text"] - mean["blue"])
        assert row["delta_mc_accuracy"] == pytest.approx(accuracy["blue-no-text"] - accuracy["blue"])
    assert table[table["method"] == "blue"]["delta_ndcg10"].isna().all()
    meta, _ = _metadata(instance, "ablation_metrics", "amazon-fixture")
    assert {r.data["method"] for r in meta["summary"].value.records} == {"blue", "blue-no-text"}
    assert table["training_steps"].eq(2).all() and meta["budget_mismatch"].value == "none"

    coords = query(f"SELECT * FROM {WAREHOUSE_SCHEMA}.user_embedding_tsne WHERE domain = ? "
                    "ORDER BY method, context, user_id", "amazon-fixture")
    assert coords.groupby(["method", "context"]).size().to_dict() == {
        ("Base", "10H+P"): 6, ("blue", "10H+P"): 6, ("blue-no-text", "10H+P"): 6, ("history", "10-H"): 6,
        ("history", "All-H"): 6}
    assert set(coords["dominant_genre"]) == {"Clothing"}  # every fixture item is "Clothing, Women"
    meta, version = _metadata(instance, "user_embedding_tsne", "amazon-fixture")
    assert meta["plot"].value.startswith("![t-SNE of user embeddings](data:image/png;base64,")

    frontier = table_rows("efficiency_frontier", "amazon-fixture")
    assert sorted(zip(frontier["method"], frontier["context"])) == [
        ("Base", "10H+P"), ("blue", "10H+P"), ("blue-no-text", "10H+P"), ("history", "10-H"), ("history", "All-H")]
    profiles = table_rows("generated_profiles", "amazon-fixture")
    blue = frontier[frontier["method"] == "blue"].iloc[0]
    assert blue["generation_seconds"] == pytest.approx(profiles[profiles["method"] == "blue"]["seconds"].mean())
    assert blue["generation_seconds"] > 0 and (frontier["embedding_seconds"] > 0).all()
    assert frontier["on_frontier"].any() and frontier["seconds_per_user"].is_monotonic_increasing
    history = frontier[frontier["method"] == "history"]
    assert (history["generation_seconds"] == 0).all()
    meta, _ = _metadata(instance, "efficiency_frontier", "amazon-fixture")
    assert meta["plot"].value.startswith("![efficiency frontier](data:image/png;base64,")
    assert [c.name for c in meta["summary"].value.schema.columns][:3] == ["domain", "method", "context"]

    assert _execute("analyses", instance, "amazon-fixture", tiny_chat_dir).success
    again = query(f"SELECT * FROM {WAREHOUSE_SCHEMA}.user_embedding_tsne WHERE domain = ? "
                   "ORDER BY method, context, user_id", "amazon-fixture")
    assert again[["x", "y"]].equals(coords[["x", "y"]])  # a rebuild gives identical coordinates
    assert _metadata(instance, "user_embedding_tsne", "amazon-fixture")[1] == version


def test_bad_local_files_fail_with_a_message_naming_the_file(instance, tiny_chat_dir):
    result = _run(instance, "broken-fixture", tiny_chat_dir)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    message = str(failure.event_specific_data.error)
    assert "Books.jsonl: no valid line" in message


def test_duet_zero_shot_is_a_partition_whose_profiles_come_from_the_base_weights(instance, built_domain, tiny_chat_dir):
    key = MultiPartitionKey({"method": "duet-zero-shot", "domain": "amazon-fixture"})
    assert _execute("profiler_training", instance, key, tiny_chat_dir, training={"config": TINY}).success
    meta, version = _metadata(instance, "profiler_checkpoint", key)
    assert meta["step"].value == 0 and meta["trained_now"].value == 0 and version == dir_content_hash(tiny_chat_dir)
    profiles = query(f"SELECT * FROM {WAREHOUSE_SCHEMA}.generated_profiles WHERE domain = ? AND method = ?",
                      "amazon-fixture", "duet-zero-shot")
    assert len(profiles) == 6 and set(profiles["model_version"]) == {version}
    assert (profiles["profile_tokens"] > 16).any()  # DUET's completion budget (192) overrides the resource's 16
    # Target mode for the QA examples only (PROFILEKIT_MAX_QA_USERS = 3): DUET's rating-only 10H+P+Pi row.
    assert profiles["target_user_profile"].notna().sum() == 3 and profiles["target_item_profile"].notna().sum() == 3
    meta, _ = _metadata(instance, "generated_profiles", key)
    assert meta["target_mode_profiles"].value == 3 and meta["target_mode_seconds_per_example"].value > 0
    # DUET's completions hold the scaffold's tags and its item block around the user profile that is read
    assert meta["mean_parsed_profile_tokens"].value < meta["mean_profile_tokens"].value
    assert _execute("evaluation", instance, "amazon-fixture", tiny_chat_dir).success
    native = table_rows("duet_rating_scores", "amazon-fixture")
    assert len(native) == 3 and set(zip(native["method"], native["context"])) == {("duet-zero-shot", "10H+P+Pi")}
    for table in ("qa_example_scores", "rec_example_scores"):  # never a next-item or N@10 context
        contexts = query(f"SELECT DISTINCT context FROM {WAREHOUSE_SCHEMA}.{table} WHERE domain = ?", "amazon-fixture")
        assert "10H+P+Pi" not in set(contexts["context"]), table
    ratings = query(f"SELECT * FROM {WAREHOUSE_SCHEMA}.rating_metrics WHERE domain = ? AND context = ?",
                     "amazon-fixture", "10H+P+Pi")
    row = ratings[ratings["vs_method"] == "Base"].iloc[0]
    assert row["method"] == "duet-zero-shot" and row["vs_context"] == "10H+P" and row["n_paired"] == 3
    assert row["rating_mae"] == pytest.approx(native["rating_abs_error"].mean())
