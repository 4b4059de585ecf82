"""Large artifacts travel through the graph as `Artifact` references: written by one machine's model store and
committed by the IO manager, loaded on another machine ("pod") whose local store is empty — on the local store
and on GCS (gcp-storage-emulator on 127.0.0.1)."""

import json

import jax.numpy as jnp
import numpy as np
import optax
import pytest
from dagster import (
    AssetIn,
    DagsterInstance,
    DimensionPartitionMapping,
    IdentityPartitionMapping,
    MultiPartitionKey,
    MultiPartitionMapping,
    MultiPartitionsDefinition,
    MultiToSingleDimensionPartitionMapping,
    StaticPartitionMapping,
    StaticPartitionsDefinition,
    asset,
    materialize,
)

from assets._common import ARTIFACT, artifact_output
from profilekit.checkpoints import CheckpointStore
from resources.artifacts import BY_PARTITION, Artifact, ArtifactIOManager
from resources.model_store import GCSModelStore, LocalModelStore, ModelStore
from tests.test_environments import gcs_emulator  # noqa: F401  (the emulator fixture)

DOMAINS = StaticPartitionsDefinition(["ml-1m", "ml-100k"])
METHOD_DOMAIN = MultiPartitionsDefinition({"method": StaticPartitionsDefinition(["blue"]), "domain": DOMAINS})
PARAMS = {"w": jnp.arange(12.0).reshape(3, 4)}


@asset(**ARTIFACT)
def profiler_base_weights(model_store: ModelStore):
    folder = model_store.path("profiler_base_weights", "tiny", "hf")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"hidden_size": 4}))
    return artifact_output(Artifact(folder, "weights-v1"))


@asset(**ARTIFACT, partitions_def=DOMAINS)
def item_embeddings(context, model_store: ModelStore):
    path = model_store.path("item_embeddings", context.partition_key, "items.npz")
    np.savez(path, v=np.arange(3.0) + len(context.partition_key))
    return artifact_output(Artifact(path, f"vectors-{context.partition_key}"))


@asset(**ARTIFACT, partitions_def=METHOD_DOMAIN)
def profiler_checkpoint(context, model_store: ModelStore):
    domain = context.partition_key.keys_by_dimension["domain"]
    run_dir = model_store.path("profiler_checkpoint", "blue", f"{domain}/run-1")
    store = CheckpointStore(run_dir)
    store.save(2, PARAMS, optax.adam(1e-3).init(PARAMS), [{"step": 2}])
    store.close()
    return artifact_output(Artifact(run_dir, f"ckpt-{domain}", {"step": 2, "run": f"{domain}/run-1"}))


@asset(**ARTIFACT, partitions_def=METHOD_DOMAIN)
def scl_embedder(context, model_store: ModelStore):
    domain = context.partition_key.keys_by_dimension["domain"]
    run = model_store.path("scl_embedder", domain, "blue/run-7")
    (run / "model").mkdir(parents=True, exist_ok=True)
    (run / "model" / "weights.bin").write_bytes(domain.encode())
    return artifact_output(Artifact(run, f"emb-{domain}"))


LOADED: dict = {}
# The mappings of the real graph: a method x domain partition reads its domain's vectors, and ml-100k reads the
# embedders adapted on itself and on the source domain ml-1m (as scl_example_scores does).
SOURCE_AND_OWN = MultiPartitionMapping({
    "method": DimensionPartitionMapping("method", IdentityPartitionMapping()),
    "domain": DimensionPartitionMapping("domain", StaticPartitionMapping({"ml-1m": ["ml-1m", "ml-100k"], "ml-100k": "ml-100k"})),
})


@asset(
    partitions_def=METHOD_DOMAIN,
    ins={
        "profiler_base_weights": AssetIn(),
        "item_embeddings": AssetIn(partition_mapping=MultiToSingleDimensionPartitionMapping("domain")),
        "profiler_checkpoint": AssetIn(),
        "scl_embedder": AssetIn(metadata=BY_PARTITION, partition_mapping=SOURCE_AND_OWN),
    },
)
def consumer(profiler_base_weights, item_embeddings, profiler_checkpoint, scl_embedder) -> None:
    LOADED.update(weights=profiler_base_weights, vectors=item_embeddings, checkpoint=profiler_checkpoint,
                  embedders=scl_embedder)


def _round_trip(writer, reader, instance) -> None:
    producers = [profiler_base_weights, item_embeddings, profiler_checkpoint, scl_embedder]
    io = {"artifacts": ArtifactIOManager(model_store=writer), "model_store": writer}
    assert materialize(producers[:1], resources=io, instance=instance).success
    for domain in ("ml-1m", "ml-100k"):
        assert materialize([producers[1]], partition_key=domain, resources=io, instance=instance).success
        key = MultiPartitionKey({"method": "blue", "domain": domain})
        assert materialize(producers[2:], partition_key=key, resources=io, instance=instance).success

    LOADED.clear()
    key = MultiPartitionKey({"method": "blue", "domain": "ml-100k"})
    result = materialize([consumer, *producers], selection=["consumer"], partition_key=key,
                         resources={"artifacts": ArtifactIOManager(model_store=reader), "model_store": reader},
                         instance=instance)
    assert result.success
    weights, vectors, checkpoint = LOADED["weights"], LOADED["vectors"], LOADED["checkpoint"]
    assert weights.version == "weights-v1" and json.loads((weights.path / "config.json").read_text()) == {"hidden_size": 4}
    assert str(weights.path).startswith(reader.root)
    with np.load(vectors.path) as data:
        assert vectors.version == "vectors-ml-100k" and data["v"].tolist() == [7.0, 8.0, 9.0]
    restored = CheckpointStore(checkpoint.path)
    assert restored.latest_step() == 2 and checkpoint.info == {"step": 2, "run": "ml-100k/run-1"}
    got, _, log = restored.restore(2, PARAMS, optax.adam(1e-3).init(PARAMS))
    restored.close()
    assert np.array_equal(got["w"], PARAMS["w"]) and log == [{"step": 2}]
    embedders = {k.keys_by_dimension["domain"]: a for k, a in LOADED["embedders"].items()}
    assert set(embedders) == {"ml-1m", "ml-100k"}
    assert (embedders["ml-1m"].path / "model" / "weights.bin").read_bytes() == b"ml-1m"


def test_artifacts_round_trip_through_the_local_store(tmp_path):
    store = LocalModelStore(root=str(tmp_path / "store"))
    with DagsterInstance.ephemeral() as instance:
        _round_trip(store, store, instance)


def test_a_fresh_pod_loads_every_kind_of_artifact_from_gcs(gcs_emulator, tmp_path):  # noqa: F811
    writer = GCSModelStore(root=str(tmp_path / "pod-a"), bucket=gcs_emulator)
    reader = GCSModelStore(root=str(tmp_path / "pod-b"), bucket=gcs_emulator)  # nothing local yet
    with DagsterInstance.ephemeral() as instance:
        _round_trip(writer, reader, instance)


def test_a_missing_artifact_is_a_failure_naming_it(tmp_path):
    store = LocalModelStore(root=str(tmp_path / "store"))
    key = MultiPartitionKey({"method": "blue", "domain": "ml-100k"})
    with DagsterInstance.ephemeral() as instance, pytest.raises(Exception, match="no item_embeddings partition ml-100k in the model store: materialize it first"):
        materialize([consumer, profiler_base_weights, item_embeddings, profiler_checkpoint, scl_embedder],
                    selection=["consumer"], partition_key=key,
                    resources={"artifacts": ArtifactIOManager(model_store=store), "model_store": store}, instance=instance)
