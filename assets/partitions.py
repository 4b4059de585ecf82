"""Partitions: one per domain of the registry (adding a registry entry adds a partition without code changes),
one per trained profiler method, method x domain for checkpoints and generated profiles, and SCL context method x
domain for the adapted embedders."""

from __future__ import annotations

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
from profilekit.methods import METHODS
from resources.settings import settings

# Broken registry entries are partitions too: materializing one fails with the registry's message.
domain_partitions = StaticPartitionsDefinition(load_registry(settings().domains).partition_keys())
method_partitions = StaticPartitionsDefinition(list(METHODS))
method_domain_partitions = MultiPartitionsDefinition({"method": method_partitions, "domain": domain_partitions})


def source_domain() -> str:
    """The domain whose checkpoints profile every domain (the paper's cross-domain setting): PROFILEKIT_SOURCE_DOMAIN,
    default ml-1m (or the registry's first domain when ml-1m is not registered)."""
    domains = domain_partitions.get_partition_keys()
    chosen = settings().source_domain or ("ml-1m" if "ml-1m" in domains else domains[0])
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


# SCL adapts the embedder once per user-context method (10-H alone, or 10H + the method's profile) and per
# training domain; ablation variants (of BLUE, DUET, BUMP) are not adapted.
SCL_METHODS = ["history", "Base", *[m for m in ("blue", "rlaif", "rlpf", "langptune", "duet", "bump") if m in METHODS]]
scl_method_partitions = StaticPartitionsDefinition(SCL_METHODS)
scl_partitions = MultiPartitionsDefinition({"method": scl_method_partitions, "domain": domain_partitions})
# A trained method's SCL pairs come from its checkpoint trained on the source domain (history and Base: none) ...
from_scl_source_checkpoint = MultiPartitionMapping(
    {
        "method": DimensionPartitionMapping(
            "method", StaticPartitionMapping({m: m for m in SCL_METHODS if m in METHODS})
        ),
        "domain": DimensionPartitionMapping(
            "domain", StaticPartitionMapping({source_domain(): domain_partitions.get_partition_keys()})
        ),
    }
)
# ... and its evaluation profiles are the method's generated profiles of the evaluated domain.
from_generated_profiles = MultiPartitionMapping(
    {
        "method": DimensionPartitionMapping("method", StaticPartitionMapping({m: m for m in SCL_METHODS if m in METHODS})),
        "domain": DimensionPartitionMapping("domain", IdentityPartitionMapping()),
    }
)
# Scoring a domain uses the embedder adapted on the source domain (cross-domain) and on the domain itself.
from_scl_embedders = MultiPartitionMapping(
    {
        "method": DimensionPartitionMapping("method", IdentityPartitionMapping()),
        "domain": DimensionPartitionMapping(
            "domain",
            StaticPartitionMapping(
                {d: (domain_partitions.get_partition_keys() if d == source_domain() else d)
                 for d in domain_partitions.get_partition_keys()}
            ),
        ),
    }
)
