"""Test environment: a private data dir and warehouse, and a registry with the real default domains plus one
local Amazon-2023 domain written here in the native schema. Set before any project module is imported,
because partitions are built from the registry at import time."""

import os
import shutil
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
SHARED_TEST_DATA = ROOT / ".data" / "test"
# `make test` runs two pytest-xdist workers: each has its own data dir, warehouse and model store, and all share
# the downloaded wheels and the exported base weights (both are renamed into place when finished, so two workers
# may fetch or export at once; the benches' commands name the shared path).
WORKER = os.environ.get("PYTEST_XDIST_WORKER")
TEST_DATA = SHARED_TEST_DATA / WORKER if WORKER else SHARED_TEST_DATA
# Downloaded wheels are kept between test sessions; everything else starts empty.
for stale in (
    "warehouse.duckdb", "store/embedding_cache", "store/generation_cache", "store/item_embeddings",
    "store/profiler_checkpoint", "store/scl_embedder", "fixtures",
):
    target = TEST_DATA / stale
    if target.is_dir():
        shutil.rmtree(target)
    elif target.exists():
        target.unlink()
TEST_DATA.mkdir(parents=True, exist_ok=True)
# Compiled XLA programs persist in the worker's data dir, as the Dagster runs' do (ComputeResource): the tests build
# the same tiny models' programs again and again, within a process (each training run makes a new trainer) and in
# the subprocesses they start, which inherit this. Set before jax is imported, which reads it then.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(TEST_DATA / "jax_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
if WORKER:
    # One OpenMP thread for torch per worker: two workers' thread pools would oversubscribe the 2 cores (their
    # threads spin at every barrier), and transformers' reference generations in tests/test_llm.py crawl.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    (TEST_DATA / "store").mkdir(exist_ok=True)
    for shared in ("sources", "profiler_base_weights"):
        (SHARED_TEST_DATA / "store" / shared).mkdir(parents=True, exist_ok=True)
        if not (TEST_DATA / "store" / shared).exists():
            (TEST_DATA / "store" / shared).symlink_to(SHARED_TEST_DATA / "store" / shared)

from tests.native_files import write_amazon_domain  # noqa: E402

FIXTURE_AMAZON = write_amazon_domain(TEST_DATA / "fixtures" / "amazon-fixture")
REFRESH_AMAZON = write_amazon_domain(TEST_DATA / "fixtures" / "refresh-fixture", seed=1, gz=False)
TARGET_AMAZON = write_amazon_domain(TEST_DATA / "fixtures" / "target-fixture", seed=2)  # SCL cross-domain target
SHRINKING_AMAZON = write_amazon_domain(TEST_DATA / "fixtures" / "shrinking-fixture", seed=3, gz=False)  # rewritten by a test
BROKEN_AMAZON = TEST_DATA / "fixtures" / "broken-fixture"
BROKEN_AMAZON.mkdir(parents=True)
(BROKEN_AMAZON / "Books.jsonl").write_text("{not json\n")
(BROKEN_AMAZON / "meta_Books.jsonl").write_text('{"parent_asin": "B1", "title": "A Book"}\n')
_registry = yaml.safe_load((ROOT / "domains.yaml").read_text())
_registry["domains"]["amazon-fixture"] = {"format": "amazon2023", "path": str(FIXTURE_AMAZON)}
_registry["domains"]["refresh-fixture"] = {"format": "amazon2023", "path": str(REFRESH_AMAZON)}
_registry["domains"]["target-fixture"] = {"format": "amazon2023", "path": str(TARGET_AMAZON)}
_registry["domains"]["shrinking-fixture"] = {"format": "amazon2023", "path": str(SHRINKING_AMAZON)}
_registry["domains"]["broken-fixture"] = {"format": "amazon2023", "path": str(BROKEN_AMAZON)}
(TEST_DATA / "domains.yaml").write_text(yaml.safe_dump(_registry))

os.environ["PROFILEKIT_DATA_DIR"] = str(TEST_DATA)
os.environ["PROFILEKIT_DOMAINS"] = str(TEST_DATA / "domains.yaml")
os.environ["PROFILEKIT_MAX_EVAL_USERS"] = "12"
os.environ["PROFILEKIT_MAX_QA_USERS"] = "3"
os.environ["PROFILEKIT_MAX_SCL_USERS"] = "16"
os.environ["PROFILEKIT_SOURCE_DOMAIN"] = "amazon-fixture"  # trained methods profile every domain from this one
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.pop("PROFILEKIT_WAREHOUSE", None)


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_chat_dir() -> Path:
    """A tiny random-init llama with the packaged SmolLM2's tokenizer and chat template (trains in seconds)."""
    from profilekit.llm.export import export_gguf_to_hf, packaged_gguf
    from tests.tiny_llm import write_tiny_chat_lm

    store = TEST_DATA / "store"
    tokenizer_dir = export_gguf_to_hf(
        packaged_gguf(store / "sources"), store / "profiler_base_weights" / "smollm2-135m-instruct" / "hf"
    )
    return write_tiny_chat_lm(TEST_DATA / "tiny-chat", tokenizer_dir)


@pytest.fixture(scope="session")
def wide_tiny_chat_dir(tiny_chat_dir: Path) -> Path:
    """The tiny chat model with its tied embeddings widened 5x (std 0.1), so its logits follow the hidden state
    and a LoRA adapter on the layers' projections can move them."""
    from tests.tiny_llm import write_tiny_chat_lm

    return write_tiny_chat_lm(TEST_DATA / "tiny-chat-wide", tiny_chat_dir, embedding_scale=5.0)
