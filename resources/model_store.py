"""Artifact store: checkpoints, weights, embedders, vectors, and the raw-source and generation caches.

Assets write an artifact under a local working directory (`path()`) and return it as an `Artifact`; the
artifact IO manager (resources/artifacts.py) commits it and hands it to consumers. A GCS store mirrors committed
artifacts to a bucket, and `path()` / `local()` fetch them on a machine that does not have them yet (a fresh
k8s pod resuming a training run, a profiling step on another node). Caches stay local.
"""

from __future__ import annotations

import os
from pathlib import Path

from dagster import ConfigurableResource

from profilekit.domains import validate_domain_name


class ModelStore(ConfigurableResource):
    """Artifacts live at `<root>/<kind>/<key>/<name>` locally."""

    root: str

    def path(self, kind: str, key: str, name: str) -> Path:
        """`<root>/<kind>/<key>/<name>`; `key` (a domain, a model name) is validated like a domain name."""
        out = Path(self.root) / kind / validate_domain_name(key) / name
        out.parent.mkdir(parents=True, exist_ok=True)
        return out

    def local(self, relative: str) -> Path:
        """`<root>/<relative>` on this machine (fetched first where the store is remote)."""
        return Path(self.root) / relative

    def relative(self, path: Path) -> str:
        """Where `path` lies inside the store, as `local()` takes it."""
        # abspath, not resolve: a store may link some of its folders elsewhere (bench/nightly_refresh.py does)
        return Path(os.path.abspath(path)).relative_to(os.path.abspath(self.root)).as_posix()

    def commit(self, path: Path) -> str:
        """Publish a written artifact (file or directory); returns where it can be found."""
        return str(path)

    @property
    def source_cache(self) -> Path:
        return Path(self.root) / "sources"

    @property
    def embedding_cache(self) -> Path:
        return Path(self.root) / "embedding_cache"

    @property
    def generation_cache(self) -> Path:
        return Path(self.root) / "generation_cache"


class LocalModelStore(ModelStore):
    """A local directory (the `local` environment)."""


class GCSModelStore(ModelStore):
    """A bucket (the `gcp` environment), with `root` as this machine's working copy. Honours
    $STORAGE_EMULATOR_HOST (tests run against gcp-storage-emulator on 127.0.0.1)."""

    bucket: str
    prefix: str = "profilekit"
    project: str = ""

    def _bucket(self):
        from google.cloud import storage

        if os.environ.get("STORAGE_EMULATOR_HOST"):
            client = storage.Client.create_anonymous_client()
            client.project = self.project or "emulator"
        else:
            client = storage.Client(project=self.project or None)
        return client.bucket(self.bucket)

    def _blob_name(self, path: Path) -> str:
        return f"{self.prefix}/{self.relative(path)}"

    def _fetch(self, out: Path) -> Path:
        if not out.exists():
            remote = self._blob_name(out)
            for blob in self._bucket().list_blobs(prefix=remote):
                if blob.name != remote and not blob.name.startswith(remote + "/"):
                    continue  # `run-1` must not fetch `run-10`
                target = Path(self.root) / blob.name.removeprefix(self.prefix + "/")
                target.parent.mkdir(parents=True, exist_ok=True)
                blob.download_to_filename(str(target))
        return out

    def path(self, kind: str, key: str, name: str) -> Path:
        return self._fetch(super().path(kind, key, name))

    def local(self, relative: str) -> Path:
        return self._fetch(super().local(relative))

    def commit(self, path: Path) -> str:
        bucket = self._bucket()
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for file in files:
            bucket.blob(self._blob_name(file)).upload_from_filename(str(file))
        return f"gs://{self.bucket}/{self._blob_name(path)}"
