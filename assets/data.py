"""Raw domain files -> interactions/items -> filtered histories -> candidate sets (METHOD §1)."""

import pandas as pd
from dagster import (
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetOut,
    DataVersion,
    DataVersionsByPartition,
    Failure,
    asset,
    multi_asset,
    observable_source_asset,
)

from assets._common import ONE_PARTITION_PER_RUN, PARTITIONED, TABLE_OUT, check_result, table_output, typed
from profilekit.checks import (
    candidate_violations,
    eligible_user_violations,
    history_length_violations,
    split_violations,
)
from profilekit.domains import RegistryError, load_registry
from profilekit.protocol import CatalogTooSmallError, filter_histories, sample_candidates
from profilekit.readers import DataError, read_domain
from profilekit.schemas import candidate_sets_schema, filtered_histories_schema, interactions_schema, items_schema
from profilekit.sources import SourceError, source_fingerprint
from resources.model_store import ModelStore
from resources.protocol import ProtocolResource
from resources.settings import settings


@observable_source_asset(partitions_def=PARTITIONED["partitions_def"], group_name="data", required_resource_keys={"model_store"})
def raw_domain_files(context) -> DataVersionsByPartition:
    """The raw files behind each domain; observing them records a content hash per domain, so a changed file
    re-runs that domain's chain and nothing else."""
    registry, cache = load_registry(settings().domains), context.resources.model_store.source_cache
    for problem in registry.problems.values():
        context.log.error(problem)
    versions = {}
    for domain in registry:
        try:
            versions[domain] = DataVersion(source_fingerprint(registry[domain], cache))
        except SourceError as exc:
            context.log.warning(f"domain {domain!r} not observable: {exc}")
    return DataVersionsByPartition(versions)


@multi_asset(
    outs={
        "interactions": AssetOut(**TABLE_OUT, code_version="2", **typed(interactions_schema), group_name="data"),
        "items": AssetOut(**TABLE_OUT, code_version="2", **typed(items_schema), group_name="data"),
    },
    partitions_def=PARTITIONED["partitions_def"],
    backfill_policy=ONE_PARTITION_PER_RUN,
    deps=[raw_domain_files],
)
def domain_tables(context: AssetExecutionContext, model_store: ModelStore):
    """Read one domain's raw files (wheel or local directory); skipped lines are counted per reason."""
    try:
        source = load_registry(settings().domains).source(context.partition_key)
        tables = read_domain(source, model_store.source_cache)
    except (DataError, SourceError, RegistryError) as exc:
        raise Failure(description=f"domain {context.partition_key!r}: {exc}") from exc
    report = tables.report.as_metadata()
    yield table_output(tables.interactions, "interactions", **report, users=tables.interactions["user_id"].nunique())
    yield table_output(tables.items, "items", **report)


@asset(
    **PARTITIONED,
    code_version="2",
    group_name="data",
    **typed(filtered_histories_schema),
    check_specs=[
        AssetCheckSpec("history_length_bounds", asset="filtered_histories", blocking=True),
        AssetCheckSpec("eligible_users", asset="filtered_histories"),
        AssetCheckSpec("both_splits", asset="filtered_histories"),
    ],
)
def filtered_histories(context: AssetExecutionContext, interactions: pd.DataFrame, protocol: ProtocolResource):
    """Users with 20 <= n <= 1000 events; target = last event, history = every earlier one; stable-hash split.

    When no user qualifies the partition is written empty (never left holding the previous files' users), the
    `eligible_users` check fails with the counts, and `candidate_sets` is emptied in turn and blocks what follows."""
    histories, stats = filter_histories(interactions, protocol.get())
    eligible = eligible_user_violations(stats, protocol.get())
    split = split_violations(stats)
    if eligible[0]:
        context.log.error(eligible[1])
    if split[0]:
        context.log.warning(f"split without both sides: {split[1]}")
    yield table_output(histories, **stats)
    yield check_result("history_length_bounds", "filtered_histories", *history_length_violations(histories, protocol.get()))
    yield check_result("eligible_users", "filtered_histories", *eligible)
    yield check_result("both_splits", "filtered_histories", *split, severity=AssetCheckSeverity.WARN)


@asset(
    **PARTITIONED,
    code_version="2",
    group_name="data",
    **typed(candidate_sets_schema),
    check_specs=[AssetCheckSpec("candidates_valid", asset="candidate_sets", blocking=True)],
)
def candidate_sets(filtered_histories: pd.DataFrame, interactions: pd.DataFrame, protocol: ProtocolResource):
    """Target + 99 seeded unseen negatives per test example, + 128 per train example."""
    catalog = sorted(interactions["item_id"].unique())
    try:
        candidates = sample_candidates(filtered_histories, interactions, catalog, protocol.get())
    except CatalogTooSmallError as exc:
        raise Failure(description=str(exc)) from exc
    yield table_output(candidates, catalog_items=len(catalog), examples=len(filtered_histories))
    if candidates.empty:
        violations, description = 1, "no example: filtered_histories is empty for this domain (see its eligible_users check)"
    else:
        violations, description = candidate_violations(candidates, interactions, protocol.get())
    yield check_result("candidates_valid", "candidate_sets", violations, description)
