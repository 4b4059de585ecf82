"""Partitions: one per domain of the registry (adding a registry entry adds a partition without code changes),
one per trained profiler method, and method x domain for checkpoints and generated profiles."""

from __future__ import annotations

import os

from dagster import (
    DimensionPartitionMapping,
    IdentityPartitionMapping,
    MultiPartitionMapping,
    MultiPartitionsDefinition,
    MultiToSingleDimensionPartitionMapping,
    StaticPartitionMapping,
    StaticPartitionsDefinition,
)

from profilekit.domains import load_registry
from profilekit.training import METHODS

domain_partitions = StaticPartitionsDefinition(list(load_registry()))
method_partitions = StaticPartitionsDefinition(list(METHODS))
method_domain_partitions = MultiPartitionsDefinition({"method": method_partitions, "domain": domain_partitions})


def source_domain() -> str:
    """The domain whose checkpoints profile every domain (the paper's cross-domain setting): $PROFILEKIT_SOURCE_DOMAIN,
    default ml-1m (or the registry's first domain when ml-1m is not registered)."""
    domains = domain_partitions.get_partition_keys()
    chosen = os.environ.get("PROFILEKIT_SOURCE_DOMAIN", "ml-1m" if "ml-1m" in domains else domains[0])
    if chosen not in domains:
        raise ValueError(f"PROFILEKIT_SOURCE_DOMAIN={chosen!r} is not a registered domain ({domains})")
    return chosen


# A (method, domain) partition's table rows come from its domain's tables ...
from_domain = MultiToSingleDimensionPartitionMapping(partition_dimension_name="domain")
# ... and its method's configuration.
from_method = MultiToSingleDimensionPartitionMapping(partition_dimension_name="method")
# Profiles of every domain come from the method's checkpoint trained on the source domain.
from_source_checkpoint = MultiPartitionMapping(
    {
        "method": DimensionPartitionMapping("method", IdentityPartitionMapping()),
        "domain": DimensionPartitionMapping(
            "domain", StaticPartitionMapping({source_domain(): domain_partitions.get_partition_keys()})
        ),
    }
)
