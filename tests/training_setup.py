"""A small GRPO training setup over the tiny chat model: five training examples, random item vectors, the real
MiniLM embedder, the policy as its own judge. Shared by the trainer tests and the process they kill."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from profilekit.embedder import Embedder
from profilekit.profiler import ChatLM
from profilekit.training import GRPOConfig, RewardModels, TrainingExamples


def setup(model_dir: Path | str) -> tuple[ChatLM, TrainingExamples, RewardModels]:
    rng = np.random.default_rng(0)
    items = [f"i{k}" for k in range(120)]
    vecs = rng.normal(size=(120, 384)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    n = 5
    data = TrainingExamples(
        messages=[[{"role": "user", "content": f"History: [Movie {u} | 4], [Film {u + 1} | 3]. Summarise."}] for u in range(n)],
        recent=[f"[Film {u + 1} | 3]" for u in range(n)], target_ids=items[:n],
        negative_ids=[items[10 + 5 * u: 30 + 5 * u] for u in range(n)],
        options=[["A film", "B film", "C film", "D film"]] * n, answers=[u % 4 for u in range(n)],
    )
    chat = ChatLM(model_dir)
    models = RewardModels(embedder=Embedder(), item_vectors=dict(zip(items, vecs)), judge=chat)
    return chat, data, models


def config(steps: int) -> GRPOConfig:
    return GRPOConfig(steps=steps, users_per_step=2, rollouts=3, max_new_tokens=10, learning_rate=1e-3)
