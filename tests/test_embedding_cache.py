import numpy as np
import pytest

from profilekit.embedder import EmbeddingCache
from profilekit.vectors import StaleVectorsError, load_item_vectors, save_item_vectors

pytestmark = pytest.mark.fast  # `make test-fast`: no Dagster run, subprocess, browser or real model


class CountingEmbedder:
    """Deterministic stand-in that records every text it is asked to encode."""

    dim = 4

    def __init__(self):
        self.seen: list[str] = []

    def encode(self, texts, progress=False):
        self.seen.extend(texts)
        vecs = np.array([[len(t), t.count("a"), t.count("e"), 1.0] for t in texts], dtype=np.float32)
        return vecs / np.linalg.norm(vecs, axis=1, keepdims=True)


def test_cache_encodes_each_text_once_across_instances(tmp_path):
    emb = CountingEmbedder()
    first, n1 = EmbeddingCache(tmp_path, "v1").encode(["alpha", "beta", "alpha"], emb)
    assert n1 == 2 and emb.seen == ["alpha", "beta"]
    again, n2 = EmbeddingCache(tmp_path, "v1").encode(["beta", "gamma", "alpha"], emb)
    assert n2 == 1 and emb.seen[-1] == "gamma"
    np.testing.assert_array_equal(again[0], first[1])
    np.testing.assert_array_equal(again[2], first[0])
    _, n3 = EmbeddingCache(tmp_path, "v2").encode(["alpha"], emb)  # another embedder version: no reuse
    assert n3 == 1


def test_a_killed_encode_keeps_its_finished_shards(tmp_path):
    class DiesOnTheThirdBatch(CountingEmbedder):
        def encode(self, texts, progress=False):
            if len(self.seen) == 4:
                raise KeyboardInterrupt  # the run is stopped in its third batch
            return super().encode(texts, progress)

    texts = [f"text {i}" for i in range(7)]
    with pytest.raises(KeyboardInterrupt):
        EmbeddingCache(tmp_path, "v1", shard_texts=2).encode(texts, DiesOnTheThirdBatch())
    assert len(list((tmp_path / "v1").glob("*.npz"))) == 2
    emb = CountingEmbedder()
    vectors, encoded_now = EmbeddingCache(tmp_path, "v1", shard_texts=2).encode(texts, emb)
    assert encoded_now == 3 and emb.seen == texts[4:]  # only what the killed run had not finished
    np.testing.assert_array_equal(vectors, CountingEmbedder().encode(texts))


def test_item_vector_files_refuse_another_embedder_version(tmp_path):
    path = tmp_path / "items.npz"
    vecs = np.eye(3, dtype=np.float32)
    d1 = save_item_vectors(path, ["a", "b", "c"], vecs, "v1")
    assert d1 == save_item_vectors(path, ["a", "b", "c"], vecs, "v1")
    assert d1 != save_item_vectors(path, ["a", "b", "c"], vecs, "v2")
    loaded = load_item_vectors(path, "v2")
    np.testing.assert_array_equal(loaded["b"], vecs[1])
    with pytest.raises(StaleVectorsError, match="re-materialize item_embeddings"):
        load_item_vectors(path, "v1")
