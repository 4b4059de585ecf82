"""Asset jobs."""

from __future__ import annotations

from dagster import AssetSelection, define_asset_job

from orchestration.partitions import domain_partitions

default_graph_job = define_asset_job(
    "default_graph",
    selection=AssetSelection.all(),
    partitions_def=domain_partitions,
    description="Every asset of one domain partition: data -> embeddings -> metrics.",
)
