"""Version-aware automation on the real asset graph, evaluated in-process (no daemon, no model runs):
materializations and observations are reported with explicit data versions, then the automation conditions
are evaluated tick by tick."""

import pytest
from dagster import AssetKey, AssetMaterialization, AssetObservation, DagsterInstance, evaluate_automation_conditions
from dagster._core.definitions.data_version import DATA_VERSION_TAG

from assets.partitions import SCL_METHODS
from orchestration.definitions import defs

SOURCE = AssetKey("raw_domain_files")
CONFIGS = AssetKey("method_configs")


def _graph_partitions():
    graph = defs.resolve_asset_graph()
    out = []
    for key in graph.get_all_asset_keys():
        if key in (SOURCE, CONFIGS) or not graph.get(key).is_materializable:
            continue
        pdef = graph.get(key).partitions_def
        out.extend((key, p) for p in (pdef.get_partition_keys() if pdef else [None]))
    return out


def _materialize(instance, key, partition, version):
    instance.report_runless_asset_event(AssetMaterialization(key, partition=partition, tags={DATA_VERSION_TAG: version}))


def _observe(instance, domain, version, key=SOURCE):
    instance.report_runless_asset_event(AssetObservation(key, partition=domain, tags={DATA_VERSION_TAG: version}))


def _observe_sources(instance):
    for domain in defs.resolve_asset_graph().get(SOURCE).partitions_def.get_partition_keys():
        _observe(instance, domain, "raw-1")
    for method in defs.resolve_asset_graph().get(CONFIGS).partitions_def.get_partition_keys():
        _observe(instance, method, "cfg-1", CONFIGS)


def _dim(partition, name):
    """One dimension of a method x domain partition key; a plain domain key is its own domain."""
    return partition.keys_by_dimension[name] if hasattr(partition, "keys_by_dimension") else partition


def _run_automation(instance, cursor):
    """Evaluate ticks until nothing more is requested, materializing each wave with new content."""
    return set().union(*_waves(instance, cursor))


def _waves(instance, cursor) -> list[set]:
    """The (asset, partition) pairs requested by each tick, in order, until a tick requests nothing."""
    waves = []
    for tick in range(10):
        result = evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
        cursor = result.cursor
        wave = {
            (key.to_user_string(), partition)
            for key in defs.resolve_asset_graph().get_all_asset_keys()
            for partition in result.get_requested_partitions(key)
        }
        if not wave:
            return waves
        waves.append(wave)
        for name, partition in wave:
            _materialize(instance, AssetKey(name), partition, f"v2-{tick}")
    raise AssertionError("automation did not settle in 10 ticks")


def test_a_refresh_computes_each_metric_table_once_after_the_profiles_it_gathers(settled):
    instance, cursor = settled
    _observe(instance, "ml-100k", "raw-2")
    waves = _waves(instance, cursor)
    ticks = {}
    for tick, wave in enumerate(waves):
        for name, _ in wave:
            ticks.setdefault(name, []).append(tick)
    for table, gathered in (("rec_metrics", "generated_profiles"), ("qa_metrics", "generated_profiles"),
                            ("scl_metrics", "scl_example_scores"), ("user_embedding_tsne", "generated_profiles"),
                            ("efficiency_frontier", "generated_profiles"), ("ablation_metrics", "generated_profiles")):
        assert len(ticks[table]) == 1, (table, ticks[table])  # one domain partition, requested once
        assert ticks[table][0] > max(ticks[gathered]), (table, ticks)


@pytest.fixture()
def settled():
    """An instance where every asset partition exists and one evaluation has recorded the versions."""
    with DagsterInstance.ephemeral() as instance:
        _observe_sources(instance)
        for key, partition in _graph_partitions():
            _materialize(instance, key, partition, "v1")
        first = evaluate_automation_conditions(defs=defs, instance=instance)
        assert first.total_requested == 0
        yield instance, first.cursor


def test_identical_rebuild_requests_nothing_downstream(settled):
    instance, cursor = settled
    for name in ("interactions", "items", "filtered_histories"):
        _materialize(instance, AssetKey(name), "ml-100k", "v1")  # rebuilt, same content hash
    result = evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
    assert result.total_requested == 0


def test_changed_raw_file_reruns_only_that_domain_down_to_its_metrics(settled):
    instance, cursor = settled
    _observe(instance, "ml-100k", "raw-2")
    requested = _run_automation(instance, cursor)
    assert {_dim(p, "domain") for _, p in requested} == {"ml-100k"}
    names = {n for n, _ in requested}
    assert {"interactions", "items", "filtered_histories", "candidate_sets", "item_embeddings", "base_profiles",
            "generated_profiles", "rec_metrics", "rec_example_scores", "qa_metrics", "qa_example_scores",
            "duet_rating_scores", "rating_metrics", "scl_training_pairs", "scl_embedder", "scl_example_scores", "scl_metrics",
            "ablation_metrics", "user_embedding_tsne", "efficiency_frontier"} == names
    assert "profiler_checkpoint" not in names  # new interactions re-profile with the current checkpoints, never re-train
    methods = defs.resolve_asset_graph().get(CONFIGS).partitions_def.get_partition_keys()
    total = len(_graph_partitions())
    print(f"changed raw file of ml-100k: {len(requested)} of {total} asset-partitions requested")
    # 16 per-domain assets, every method's profiles, and pairs, embedder and scores of every SCL context
    assert len(requested) == 16 + len(methods) + 3 * len(SCL_METHODS) and total > 100


def test_changed_method_config_retrains_only_that_method_and_its_profiles_and_metrics(settled):
    instance, cursor = settled
    _observe(instance, "rlaif", "cfg-2", CONFIGS)
    requested = _run_automation(instance, cursor)
    names = {n for n, _ in requested}
    per_method = {"profiler_checkpoint", "generated_profiles", "scl_training_pairs", "scl_embedder", "scl_example_scores"}
    assert names == per_method | {"rec_example_scores", "rec_metrics", "qa_example_scores", "qa_metrics",
                                  "duet_rating_scores", "rating_metrics",
                                  "scl_metrics", "ablation_metrics", "user_embedding_tsne", "efficiency_frontier"}
    assert {_dim(p, "method") for n, p in requested if n in per_method} == {"rlaif"}
    domains = defs.resolve_asset_graph().get(SOURCE).partitions_def.get_partition_keys()
    total = len(_graph_partitions())
    print(f"changed rlaif reward config: {len(requested)} of {total} asset-partitions requested")
    # rlaif's checkpoint, profiles, SCL pairs, embedder and scores, the 7 metric tables (DUET's rating scores
    # included) and the 3 analyses, of every domain
    assert len(requested) == 15 * len(domains)


PER_METHOD = ("profiler_checkpoint", "generated_profiles", "scl_training_pairs", "scl_embedder", "scl_example_scores")


def test_untrained_methods_do_not_hold_back_the_metrics():
    """Only BLUE was trained (other methods' per-method partitions were never materialized): a changed raw file
    still re-runs the domain's metric tables, and requests nothing for the untrained methods."""
    with DagsterInstance.ephemeral() as instance:
        _observe_sources(instance)
        for key, partition in _graph_partitions():
            if key.to_user_string() in PER_METHOD and _dim(partition, "method") not in ("blue", "history", "Base"):
                continue
            _materialize(instance, key, partition, "v1")
        first = evaluate_automation_conditions(defs=defs, instance=instance)
        assert first.total_requested == 0
        _observe(instance, "ml-100k", "raw-2")
        requested = _run_automation(instance, first.cursor)
    names = {n for n, _ in requested}
    assert {"rec_metrics", "qa_metrics", "scl_metrics", "generated_profiles", "scl_embedder"} <= names
    assert {_dim(p, "method") for n, p in requested if n in PER_METHOD} == {"blue", "history", "Base"}
    assert {_dim(p, "domain") for _, p in requested} == {"ml-100k"}
