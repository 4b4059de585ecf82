"""Large artifacts through the graph: an asset returns an `Artifact` (where it lies in the model store, its
content version, and what a consumer needs to know about it); this IO manager commits it and records it under a
layout derived from the asset key and partition key; a consumer's input receives the `Artifact` back, fetched to
its machine. No asset reads or writes a record by hand, and a forgotten commit is impossible.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from dagster import (
    ConfigurableIOManager,
    Failure,
    InputContext,
    MetadataValue,
    MultiPartitionKey,
    OutputContext,
)

from resources.model_store import ModelStore

# An input with this metadata receives {partition key: Artifact, or None where it was never materialized} for
# every upstream partition its mapping names (several, or none); other inputs receive one Artifact and fail when
# it is missing. Keys of multi-dimensional partitions are MultiPartitionKeys (`.keys_by_dimension`).
BY_PARTITION = {"artifacts": "by_partition"}


@dataclass(frozen=True)
class Artifact:
    path: Path
    version: str
    info: dict = field(default_factory=dict)  # JSON values a consumer needs (the run, the base model version, ...)


class ArtifactIOManager(ConfigurableIOManager):
    model_store: ModelStore

    def record_path(self, asset_key: list[str], partition_key: str | MultiPartitionKey | None) -> Path:
        """`<store>/artifacts/<asset>/<dim>=<value>/.../artifact.json` (`_all` for an unpartitioned asset)."""
        if partition_key is None:
            parts = ["_all"]
        elif isinstance(partition_key, MultiPartitionKey):
            parts = [f"{dim}={value}" for dim, value in sorted(partition_key.keys_by_dimension.items())]
        else:
            parts = [str(partition_key)]
        return Path(self.model_store.root) / "artifacts" / "/".join(asset_key) / "/".join(parts) / "artifact.json"

    def handle_output(self, context: OutputContext, obj: Artifact) -> None:
        if not isinstance(obj, Artifact):
            raise TypeError(f"{context.asset_key.to_user_string()} must return an Artifact, got {type(obj).__name__}")
        try:
            path = self.model_store.relative(obj.path)
            location = self.model_store.commit(obj.path)
        except ValueError:  # a user's own directory outside the store (own weights): every machine must see it
            path = location = str(Path(obj.path).absolute())
        partition = context.asset_partition_key if context.has_asset_partitions else None
        record = self.record_path(context.asset_key.path, partition)
        record.parent.mkdir(parents=True, exist_ok=True)
        tmp = record.with_suffix(".part")
        tmp.write_text(json.dumps({"path": path, "version": obj.version, "info": obj.info}))
        tmp.replace(record)  # readers never see half a record
        self.model_store.commit(record)
        context.add_output_metadata({"path": MetadataValue.path(location), "version": obj.version})

    def _load(self, asset_key: list[str], partition_key) -> Artifact | None:
        record = self.record_path(asset_key, partition_key)
        relative = self.model_store.relative(record)
        fetched = self.model_store.local(relative)
        if not fetched.exists():
            return None
        saved = json.loads(fetched.read_text())
        path = Path(saved["path"]) if Path(saved["path"]).is_absolute() else self.model_store.local(saved["path"])
        return Artifact(path, saved["version"], saved["info"])

    def load_input(self, context: InputContext):
        key = context.asset_key
        if not context.has_asset_partitions:
            partitions = [None]
        else:
            partitions = list(context.asset_partition_keys)
            upstream = context.asset_partitions_def
            if upstream is not None and hasattr(upstream, "partitions_defs"):  # multi-dimensional: typed keys
                partitions = [upstream.get_partition_key_from_str(p) for p in partitions]
        if (context.definition_metadata or {}).get("artifacts") == BY_PARTITION["artifacts"]:
            return {p: self._load(key.path, p) for p in partitions}
        if len(partitions) != 1:
            raise Failure(f"{key.to_user_string()}: expected one upstream partition, got {partitions}")
        artifact = self._load(key.path, partitions[0])
        if artifact is None:
            where = f" partition {partitions[0]}" if partitions[0] is not None else ""
            raise Failure(f"no {key.to_user_string()}{where} in the model store: materialize it first")
        return artifact
