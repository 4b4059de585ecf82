"""Every `PROFILEKIT_*` environment variable, read in one place, typed and validated.

`settings()` reads the environment once per process (the definitions, partitions and resources are built from
it at import); nothing under `profilekit/` reads the environment. README's "Configuration" table documents each
variable. The gcp environment's project, bucket and credentials are not read here: Dagster resolves them with
`EnvVar` when a run starts, so no secret is stored in the definitions.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ENVIRONMENTS = ("gcp", "local")


class SettingsError(ValueError):
    """A PROFILEKIT_* variable has a value that cannot be used."""


@dataclass(frozen=True)
class Settings:
    env: str = "local"
    data_dir: Path = PROJECT_ROOT / ".data"
    warehouse: Path | None = None  # default: <data_dir>/warehouse.duckdb
    domains: Path = PROJECT_ROOT / "domains.yaml"
    source_domain: str | None = None  # default: ml-1m, or the registry's first domain
    profiler_path: str = ""
    judge_path: str = ""
    embedder_path: str = ""
    max_eval_users: int | None = None  # default: the environment's
    max_qa_users: int | None = None
    max_scl_users: int | None = None
    train_steps: int | None = None
    tpu_fsdp: int = 4
    tpu_tp: int = 1
    k8s_namespace: str = "profilekit"
    gcp_credentials: bool = False  # whether PROFILEKIT_GCP_CREDENTIALS is set (its value is read by EnvVar)
    progress: bool | None = None  # progress bars forced on / off; None: when stderr is a terminal
    make_started: float | None = None  # epoch seconds `make run` started (its summary counts setup and imports)

    @property
    def warehouse_path(self) -> str:
        return str(self.warehouse or self.data_dir / "warehouse.duckdb")

    @property
    def store_root(self) -> Path:
        return self.data_dir / "store"

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Settings:
        def text(name: str, default: str | None = None) -> str | None:
            value = environ.get(f"PROFILEKIT_{name}")
            return default if value is None or value.strip() == "" else value.strip()

        def positive(name: str, default: int | None = None) -> int | None:
            value = text(name)
            if value is None:
                return default
            try:
                number = int(value)
            except ValueError:
                raise SettingsError(f"PROFILEKIT_{name}={value!r}: expected a positive integer") from None
            if number < 1:
                raise SettingsError(f"PROFILEKIT_{name}={value!r}: expected a positive integer")
            return number

        def switch(name: str) -> bool | None:
            value = text(name)
            if value is None:
                return None
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise SettingsError(f"PROFILEKIT_{name}={value!r}: expected 1 or 0")

        env = text("ENV", "local")
        if env not in ENVIRONMENTS:
            raise SettingsError(f"PROFILEKIT_ENV={env!r}: choose one of {list(ENVIRONMENTS)}")
        data_dir = Path(text("DATA_DIR", str(PROJECT_ROOT / ".data"))).expanduser()
        warehouse = text("WAREHOUSE")
        return cls(
            env=env,
            data_dir=data_dir,
            warehouse=Path(warehouse).expanduser() if warehouse else None,
            domains=Path(text("DOMAINS", str(PROJECT_ROOT / "domains.yaml"))).expanduser(),
            source_domain=text("SOURCE_DOMAIN"),
            profiler_path=text("PROFILER_PATH", ""),
            judge_path=text("JUDGE_PATH", ""),
            embedder_path=text("EMBEDDER_PATH", ""),
            max_eval_users=positive("MAX_EVAL_USERS"),
            max_qa_users=positive("MAX_QA_USERS"),
            max_scl_users=positive("MAX_SCL_USERS"),
            train_steps=positive("TRAIN_STEPS"),
            tpu_fsdp=positive("TPU_FSDP", 4),
            tpu_tp=positive("TPU_TP", 1),
            k8s_namespace=text("K8S_NAMESPACE", "profilekit"),
            gcp_credentials=text("GCP_CREDENTIALS") is not None,
            progress=switch("PROGRESS"),
            make_started=float(text("MAKE_STARTED")) if text("MAKE_STARTED") else None,
        )


@lru_cache(maxsize=1)
def settings() -> Settings:
    """The process's settings, read from the environment on first use."""
    return Settings.from_environ(os.environ)


def data_dir() -> Path:
    return settings().data_dir


def warehouse_path() -> str:
    return settings().warehouse_path
