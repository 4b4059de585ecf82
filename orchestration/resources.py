"""Resource sets and executors per environment, chosen by $PROFILEKIT_ENV: `local` (default) or `gcp`.

`gcp` reads every project-specific value and secret through `EnvVar` (resolved when a run starts, never
stored in the definitions): PROFILEKIT_GCP_PROJECT, PROFILEKIT_GCS_BUCKET, and optionally
PROFILEKIT_GCP_CREDENTIALS (a base64 service-account key; GKE workload identity needs none)."""

from __future__ import annotations

import os

from dagster import EnvVar, multiprocess_executor
from dagster_gcp_pandas import BigQueryPandasIOManager
from dagster_k8s import k8s_job_executor

from resources.compute import ComputeResource
from resources.embedder import EmbedderResource
from resources.llm import JudgeLLMResource, ProfilerLLMResource
from resources.model_store import GCSModelStore, LocalModelStore
from resources.protocol import ProtocolResource
from resources.settings import data_dir, warehouse_path
from resources.training import SCLResource, TrainingResource
from resources.warehouse import BigQueryWarehouseReader, DuckDBWarehouseReader, WAREHOUSE_SCHEMA, duckdb_warehouse

# Test users per domain that the evaluation assets profile and score on these 2-core CPUs (the paper: ~1,200),
# and how many of them the QA judge is asked about.
LOCAL_MAX_EVAL_USERS = 100
LOCAL_MAX_QA_USERS = 25
# Train users per domain whose profiles are generated for SCL pairs (the paper: every train user).
LOCAL_MAX_SCL_USERS = 64


def local_resources() -> dict:
    compute = ComputeResource(platform="cpu", mesh_shape=[1, 1])
    return {
        "warehouse": duckdb_warehouse(),
        "warehouse_reader": DuckDBWarehouseReader(database=warehouse_path()),
        "model_store": LocalModelStore(root=str(data_dir() / "store")),
        "embedder": EmbedderResource(model_path=os.environ.get("PROFILEKIT_EMBEDDER_PATH", "")),
        "protocol": ProtocolResource(
            max_eval_users=int(os.environ.get("PROFILEKIT_MAX_EVAL_USERS", LOCAL_MAX_EVAL_USERS)),
            max_qa_users=int(os.environ.get("PROFILEKIT_MAX_QA_USERS", LOCAL_MAX_QA_USERS)),
            max_scl_users=int(os.environ.get("PROFILEKIT_MAX_SCL_USERS", LOCAL_MAX_SCL_USERS)),
        ),
        "compute": compute,
        "profiler_llm": ProfilerLLMResource(compute=compute, weights_dir=os.environ.get("PROFILEKIT_PROFILER_PATH", "")),
        "judge_llm": JudgeLLMResource(compute=compute, weights_dir=os.environ.get("PROFILEKIT_JUDGE_PATH", "")),
        "training": TrainingResource(
            steps=int(os.environ.get("PROFILEKIT_TRAIN_STEPS", TrainingResource.model_fields["steps"].default)),
        ),
        "scl": SCLResource(),
    }


def gcp_resources() -> dict:
    """BigQuery tables, artifacts on GCS, JAX on a (multi-host) TPU slice."""
    compute = ComputeResource(
        platform="tpu",
        mesh_shape=[int(os.environ.get("PROFILEKIT_TPU_FSDP", "4")), int(os.environ.get("PROFILEKIT_TPU_TP", "1"))],
        distributed=True,
    )
    project = EnvVar("PROFILEKIT_GCP_PROJECT")
    warehouse = {"project": project, "dataset": WAREHOUSE_SCHEMA}
    if os.environ.get("PROFILEKIT_GCP_CREDENTIALS"):
        warehouse["gcp_credentials"] = EnvVar("PROFILEKIT_GCP_CREDENTIALS")
    return {
        "warehouse": BigQueryPandasIOManager(**warehouse),
        "warehouse_reader": BigQueryWarehouseReader(project=project),
        "model_store": GCSModelStore(root="/tmp/profilekit", bucket=EnvVar("PROFILEKIT_GCS_BUCKET"), project=project),
        "embedder": EmbedderResource(model_path=os.environ.get("PROFILEKIT_EMBEDDER_PATH", "")),
        "protocol": ProtocolResource(),  # the paper's full protocol: every test user
        "compute": compute,
        "profiler_llm": ProfilerLLMResource(compute=compute, weights_dir=os.environ.get("PROFILEKIT_PROFILER_PATH", "")),
        "judge_llm": JudgeLLMResource(compute=compute, weights_dir=os.environ.get("PROFILEKIT_JUDGE_PATH", "")),
        "training": TrainingResource(
            steps=int(os.environ.get("PROFILEKIT_TRAIN_STEPS", 100)), users_per_step=64, rollouts=8,
            max_new_tokens=2048, history_budget_tokens=2048, learning_rate=1e-6,
        ),
        "scl": SCLResource(batch_size=512, learning_rate=1e-6, epochs=1),
    }


# One DuckDB file and 2 CPU cores: at most two steps at once, and one LLM-heavy step at a time.
LOCAL_EXECUTOR = multiprocess_executor.configured(
    {"max_concurrent": 2, "tag_concurrency_limits": [{"key": "profilekit/llm", "value": "heavy", "limit": 1}]}
)
# One k8s job per step; LLM steps carry their own pod resources (assets._common.TPU_POD), the rest use these.
GCP_EXECUTOR = k8s_job_executor.configured(
    {
        "job_namespace": os.environ.get("PROFILEKIT_K8S_NAMESPACE", "profilekit"),
        "max_concurrent": 16,
        "step_k8s_config": {"container_config": {"resources": {"requests": {"cpu": "2", "memory": "8Gi"}}}},
    }
)
ENVIRONMENTS = {"local": (local_resources, LOCAL_EXECUTOR), "gcp": (gcp_resources, GCP_EXECUTOR)}


def environment() -> tuple[dict, object]:
    """Resources and executor of $PROFILEKIT_ENV."""
    name = os.environ.get("PROFILEKIT_ENV", "local")
    if name not in ENVIRONMENTS:
        raise ValueError(f"PROFILEKIT_ENV={name!r}: choose one of {sorted(ENVIRONMENTS)}")
    make_resources, executor = ENVIRONMENTS[name]
    return make_resources(), executor
