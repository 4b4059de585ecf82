"""Artifact store for files that never go through an IO manager: embeddings, checkpoints, raw-source cache."""

from __future__ import annotations

from pathlib import Path

from dagster import ConfigurableResource

from profilekit.domains import validate_domain_name


class LocalModelStore(ConfigurableResource):
    """A local directory; artifacts live at `<root>/<kind>/<key>/...`."""

    root: str

    def path(self, kind: str, key: str, name: str) -> Path:
        """`<root>/<kind>/<key>/<name>`; `key` (a domain, a model name) is validated like a domain name."""
        out = Path(self.root) / kind / validate_domain_name(key) / name
        out.parent.mkdir(parents=True, exist_ok=True)
        return out

    @property
    def source_cache(self) -> Path:
        return Path(self.root) / "sources"

    @property
    def embedding_cache(self) -> Path:
        return Path(self.root) / "embedding_cache"

    @property
    def generation_cache(self) -> Path:
        return Path(self.root) / "generation_cache"
