"""Item-vector files: `.npz` with item ids, vectors and the embedder version that produced them."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np


class StaleVectorsError(RuntimeError):
    """Vectors on disk were made by another embedder version than the one in use."""


def save_item_vectors(path: Path, item_ids: list[str], vectors: np.ndarray, version: str) -> str:
    """Write atomically; return a content hash of ids + vectors + version (the asset's data version)."""
    digest = hashlib.sha256(version.encode())
    digest.update("\x1f".join(item_ids).encode())
    digest.update(np.ascontiguousarray(vectors, dtype=np.float32).tobytes())
    tmp = path.with_name(f".{path.name}.tmp.npz")
    np.savez(tmp, item_ids=np.asarray(item_ids), vectors=vectors.astype(np.float32), version=np.asarray(version))
    tmp.replace(path)
    return digest.hexdigest()[:24]


def load_item_vectors(path: Path, expected_version: str) -> dict[str, np.ndarray]:
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: materialize item_embeddings for this domain first")
    with np.load(path) as data:
        version = str(data["version"])
        if version != expected_version:
            raise StaleVectorsError(
                f"{path} holds vectors of embedder {version}, the run uses {expected_version}: re-materialize item_embeddings"
            )
        return dict(zip(data["item_ids"].tolist(), data["vectors"]))
