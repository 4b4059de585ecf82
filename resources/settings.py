"""Where local state lives: one project data dir, overridable by environment variables."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def data_dir() -> Path:
    return Path(os.environ.get("PROFILEKIT_DATA_DIR", PROJECT_ROOT / ".data"))


def warehouse_path() -> str:
    return os.environ.get("PROFILEKIT_WAREHOUSE", str(data_dir() / "warehouse.duckdb"))
