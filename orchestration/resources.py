"""Resource sets and executors per environment, chosen by $PROFILEKIT_ENV: `local` (default) or `gcp`.

`gcp` reads every project-specific value and secret through `EnvVar` (resolved when a run starts, never
stored in the definitions): PROFILEKIT_GCP_PROJECT, PROFILEKIT_GCS_BUCKET, and optionally
PROFILEKIT_GCP_CREDENTIALS (a base64 service-account key; GKE workload identity needs none)."""

from __future__ import annotations

from dagster import EnvVar, Field, Selector, multi_or_in_process_executor
from dagster_gcp_pandas import BigQueryPandasIOManager
from dagster_k8s import k8s_job_executor

from profilekit.progress import show_progress
from profilekit.scl import PAPER_SCL
from profilekit.training import PAPER_GRPO
from resources.artifacts import ArtifactIOManager
from resources.compute import ComputeResource
from resources.embedder import EmbedderResource
from resources.llm import JudgeLLMResource, ProfilerLLMResource
from resources.model_store import GCSModelStore, LocalModelStore
from resources.protocol import ProtocolResource
from resources.settings import Settings, settings
from resources.training import SCLResource, TrainingResource
from resources.warehouse import WAREHOUSE_SCHEMA, BigQueryWarehouseReader, DuckDBWarehouseReader, duckdb_warehouse

# Test users per domain that the evaluation assets profile and score on these 2-core CPUs (the paper: ~1,200),
# and how many of them the QA judge is asked about.
LOCAL_MAX_EVAL_USERS = 100
LOCAL_MAX_QA_USERS = 25
# Train users per domain whose profiles are generated for SCL pairs (the paper: every train user).
LOCAL_MAX_SCL_USERS = 64


def _models(s: Settings, compute: ComputeResource) -> dict:
    return {
        "compute": compute,
        "embedder": EmbedderResource(model_path=s.embedder_path),
        "profiler_llm": ProfilerLLMResource(compute=compute, weights_dir=s.profiler_path),
        "judge_llm": JudgeLLMResource(compute=compute, weights_dir=s.judge_path),
    }


def local_resources(s: Settings | None = None) -> dict:
    s = s or settings()
    store = LocalModelStore(root=str(s.store_root))
    return {
        **_models(s, ComputeResource(platform="cpu", mesh_shape=[1, 1], compilation_cache_dir=str(s.data_dir / "jax_cache"))),
        "warehouse": duckdb_warehouse(s.warehouse_path),
        "warehouse_reader": DuckDBWarehouseReader(database=s.warehouse_path),
        "model_store": store,
        "artifacts": ArtifactIOManager(model_store=store),
        "protocol": ProtocolResource(
            max_eval_users=s.max_eval_users or LOCAL_MAX_EVAL_USERS,
            max_qa_users=s.max_qa_users or LOCAL_MAX_QA_USERS,
            max_scl_users=s.max_scl_users or LOCAL_MAX_SCL_USERS,
        ),
        "training": TrainingResource(**({"steps": s.train_steps} if s.train_steps else {})),
        "scl": SCLResource(),
    }


def gcp_resources(s: Settings | None = None) -> dict:
    """BigQuery tables, artifacts on GCS, JAX on a (multi-host) TPU slice, the paper's budgets."""
    s = s or settings()
    project = EnvVar("PROFILEKIT_GCP_PROJECT")
    warehouse = {"project": project, "dataset": WAREHOUSE_SCHEMA}
    if s.gcp_credentials:
        warehouse["gcp_credentials"] = EnvVar("PROFILEKIT_GCP_CREDENTIALS")
    store = GCSModelStore(root="/tmp/profilekit", bucket=EnvVar("PROFILEKIT_GCS_BUCKET"), project=project)
    return {
        **_models(s, ComputeResource(platform="tpu", mesh_shape=[s.tpu_fsdp, s.tpu_tp], distributed=True)),
        "warehouse": BigQueryPandasIOManager(**warehouse),
        "warehouse_reader": BigQueryWarehouseReader(project=project),
        "model_store": store,
        "artifacts": ArtifactIOManager(model_store=store),
        "protocol": ProtocolResource(),  # the paper's full protocol: every test user
        "training": TrainingResource.of(PAPER_GRPO, **({"steps": s.train_steps} if s.train_steps else {})),
        "scl": SCLResource.of(PAPER_SCL),
    }


# One DuckDB file and 2 CPU cores: at most two steps at once, and one LLM-heavy step at a time. A run may ask for
# `execution: {config: {in_process: {}}}` instead: one process, so a small run does not pay a project import per step.
LOCAL_MULTIPROCESS = {"max_concurrent": 2,
                      "tag_concurrency_limits": [{"key": "profilekit/llm", "value": "heavy", "limit": 1}]}
LOCAL_EXECUTOR = multi_or_in_process_executor.configured(
    lambda config: {"in_process": {}} if "in_process" in config else {"multiprocess": LOCAL_MULTIPROCESS},
    name="local_executor",
    config_schema=Field(Selector({"multiprocess": {}, "in_process": {}}), default_value={"multiprocess": {}}),
)
# One k8s job per step; LLM steps carry their own pod resources (assets._common.TPU_POD), the rest use these.
GCP_EXECUTOR = k8s_job_executor.configured(
    {
        "job_namespace": settings().k8s_namespace,
        "max_concurrent": 16,
        "step_k8s_config": {"container_config": {"resources": {"requests": {"cpu": "2", "memory": "8Gi"}}}},
    }
)
ENVIRONMENTS = {"local": (local_resources, LOCAL_EXECUTOR), "gcp": (gcp_resources, GCP_EXECUTOR)}


def environment() -> tuple[dict, object]:
    """Resources and executor of PROFILEKIT_ENV (and the progress bars PROFILEKIT_PROGRESS asks for)."""
    show_progress(settings().progress)
    make_resources, executor = ENVIRONMENTS[settings().env]
    return make_resources(), executor
