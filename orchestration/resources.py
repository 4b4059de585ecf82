"""Resource sets per environment."""

from __future__ import annotations

import os

from resources.embedder import EmbedderResource
from resources.model_store import LocalModelStore
from resources.protocol import ProtocolResource
from resources.settings import data_dir
from resources.warehouse import duckdb_warehouse

# How many test users per domain the evaluation assets score on a laptop-class CPU (the paper scores ~1,200).
LOCAL_MAX_EVAL_USERS = 300


def local_resources() -> dict:
    return {
        "warehouse": duckdb_warehouse(),
        "model_store": LocalModelStore(root=str(data_dir() / "store")),
        "embedder": EmbedderResource(model_path=os.environ.get("PROFILEKIT_EMBEDDER_PATH", "")),
        "protocol": ProtocolResource(
            max_eval_users=int(os.environ.get("PROFILEKIT_MAX_EVAL_USERS", LOCAL_MAX_EVAL_USERS))
        ),
    }
