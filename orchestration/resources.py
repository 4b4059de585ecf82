"""Resource sets per environment."""

from __future__ import annotations

import os

from resources.compute import ComputeResource
from resources.embedder import EmbedderResource
from resources.llm import JudgeLLMResource, ProfilerLLMResource
from resources.model_store import LocalModelStore
from resources.protocol import ProtocolResource
from resources.settings import data_dir, warehouse_path
from resources.training import TrainingResource
from resources.warehouse import WarehouseReader, duckdb_warehouse

# Test users per domain that the evaluation assets profile and score on these 2-core CPUs (the paper: ~1,200),
# and how many of them the QA judge is asked about.
LOCAL_MAX_EVAL_USERS = 100
LOCAL_MAX_QA_USERS = 25


def local_resources() -> dict:
    compute = ComputeResource(platform="cpu", mesh_shape=[1, 1])
    return {
        "warehouse": duckdb_warehouse(),
        "warehouse_reader": WarehouseReader(database=warehouse_path()),
        "model_store": LocalModelStore(root=str(data_dir() / "store")),
        "embedder": EmbedderResource(model_path=os.environ.get("PROFILEKIT_EMBEDDER_PATH", "")),
        "protocol": ProtocolResource(
            max_eval_users=int(os.environ.get("PROFILEKIT_MAX_EVAL_USERS", LOCAL_MAX_EVAL_USERS)),
            max_qa_users=int(os.environ.get("PROFILEKIT_MAX_QA_USERS", LOCAL_MAX_QA_USERS)),
        ),
        "compute": compute,
        "profiler_llm": ProfilerLLMResource(compute=compute, weights_dir=os.environ.get("PROFILEKIT_PROFILER_PATH", "")),
        "judge_llm": JudgeLLMResource(compute=compute, weights_dir=os.environ.get("PROFILEKIT_JUDGE_PATH", "")),
        "training": TrainingResource(
            steps=int(os.environ.get("PROFILEKIT_TRAIN_STEPS", TrainingResource.model_fields["steps"].default)),
        ),
    }
