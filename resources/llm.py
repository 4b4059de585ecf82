"""The profiler LLM and the judge LLM (default: both the packaged SmolLM2-135M-Instruct)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from dagster import ConfigurableResource

from profilekit.llm.sampler import SamplingConfig
from profilekit.profiler import ChatLM
from resources.artifacts import Artifact
from resources.compute import ComputeResource
from resources.model_store import ModelStore

PACKAGED_PROFILER = "smollm2-135m-instruct"


@lru_cache(maxsize=4)
def _chat(weights_dir: str, dtype: str, mesh, batch_size: int) -> ChatLM:
    return ChatLM(weights_dir, dtype=dtype, mesh=mesh, batch_size=batch_size)


def packaged_weights_dir(store: ModelStore) -> Path:
    """Where `profiler_base_weights` exports the packaged GGUF model as an HF-layout directory."""
    return store.path("profiler_base_weights", PACKAGED_PROFILER, "hf")


class _ChatLLMResource(ConfigurableResource):
    compute: ComputeResource
    weights_dir: str = ""
    dtype: str = "bfloat16"  # weights; dots accumulate in f32 (bench/sampling.py: 1.4x the f32 sampler at batch 8)
    # Rows generated together. bench/profile_generation.py on 48 real ml-1m users (2026-12-05): 1.91 s a user at 8,
    # 1.49 at 16, 1.38 at 32; profiles mostly run to max_new_tokens, so larger batches waste few decode steps.
    batch_size: int = 32

    def weights(self, base: Artifact) -> Path:
        """`weights_dir`, or else the `profiler_base_weights` artifact (the packaged SmolLM2 export by default)."""
        return Path(self.weights_dir) if self.weights_dir else base.path

    def chat(self, base: Artifact) -> ChatLM:
        """The shared, never-modified model of this process."""
        return _chat(str(self.weights(base)), self.dtype, self.compute.mesh(), self.batch_size)

    def fresh_chat(self, base: Artifact) -> ChatLM:
        """A private copy whose weights may be trained or replaced by a checkpoint's."""
        return ChatLM(self.weights(base), dtype=self.dtype, mesh=self.compute.mesh(), batch_size=self.batch_size)


class ProfilerLLMResource(_ChatLLMResource):
    """`weights_dir`: an HF-layout directory (llama, qwen2, qwen3 or gemma3 family); empty means the packaged SmolLM2 export.

    CPU defaults; the paper's values: max prompt and completion 2048 tokens, inference temperature 0.7.
    """

    history_budget_tokens: int = 512
    max_new_tokens: int = 128
    temperature: float = 0.7
    top_p: float = 0.95
    seed: int = 0

    def sampling(self, min_new_tokens: int | None = None) -> SamplingConfig:
        """Inference sampling; `min_new_tokens` (a method's, e.g. DUET's longer completions) raises the budget."""
        new_tokens = max(self.max_new_tokens, min_new_tokens or 0)
        return SamplingConfig(new_tokens, self.temperature, self.top_p, self.seed, prompt_bucket=16)


class JudgeLLMResource(_ChatLLMResource):
    """The QA judge; greedy (temperature 0) as in the paper. Empty `weights_dir`: the packaged SmolLM2."""

    context_budget_tokens: int = 512
    max_new_tokens: int = 8

    def sampling(self) -> SamplingConfig:
        return SamplingConfig(self.max_new_tokens, temperature=0.0, top_p=1.0, seed=0, prompt_bucket=16)
