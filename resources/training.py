"""GRPO budgets of profiler training as a resource (METHOD §4). CPU defaults; the paper's values in comments."""

from __future__ import annotations

from dagster import ConfigurableResource

from profilekit.scl import SCLConfig
from profilekit.training import GRPOConfig


class TrainingResource(ConfigurableResource):
    """Raising `steps` continues a finished run from its last checkpoint; any other change starts a new run."""

    steps: int = 4  # paper: 1 epoch over the training users
    users_per_step: int = 4  # paper: 64
    rollouts: int = 4  # paper: G = 8
    max_new_tokens: int = 96  # paper: 2048
    history_budget_tokens: int = 256  # paper: 2048
    learning_rate: float = 1e-5  # paper: 1e-6 (see docs/RESULTS.md for why the CPU default differs)
    beta: float = 0.01
    epsilon: float = 0.2
    save_every: int = 1
    seed: int = 0

    def config(self, advantage: str) -> GRPOConfig:
        return GRPOConfig(advantage=advantage, **self.model_dump())


class SCLResource(ConfigurableResource):
    """Budgets of the SCL embedder adaptation (METHOD §6): CPU defaults, the paper's values in comments. Any
    change names a new training run; an identical one is not trained again."""

    batch_size: int = 16  # paper: 512
    learning_rate: float = 5e-5  # paper: 1e-6 (a few hundred CPU pairs need a larger step)
    epochs: int = 1  # paper: 1
    max_seq_length: int = 256
    temperature: float = 0.07  # paper: 0.07
    warmup_ratio: float = 0.1
    seed: int = 0

    def config(self) -> SCLConfig:
        return SCLConfig(**self.model_dump())
