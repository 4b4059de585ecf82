"""The trainer's handling of groups without signal (RLAIF's constant judge scores), on the tiny chat model."""

from types import SimpleNamespace

import numpy as np
import pytest

from profilekit.methods import METHODS
from profilekit.profiler import ChatLM
from profilekit.training import GRPOConfig, RewardModels, TrainingExamples, train_profiler


class ScriptedJudge:
    """A judge whose 1-10 scores are given per rollout, in the order the trainer asks (prompt-major)."""

    def __init__(self, scores: list[str]):
        self.scores = scores

    def generate(self, messages, sampling):
        assert len(messages) == len(self.scores)
        return SimpleNamespace(texts=list(self.scores))


def _data(n: int = 2) -> TrainingExamples:
    return TrainingExamples(
        messages=[[{"role": "user", "content": f"History: [Movie {u} | 4]. Summarise."}] for u in range(n)],
        recent=[f"[Movie {u} | 4]" for u in range(n)], target_ids=[f"i{u}" for u in range(n)],
        negative_ids=[[f"n{u}"] for u in range(n)], options=[["A", "B", "C", "D"]] * n, answers=[0] * n,
    )


def _train(chat, scores, directory):
    config = GRPOConfig(steps=1, users_per_step=2, rollouts=2, max_new_tokens=6, learning_rate=1e-2)
    before = np.asarray(chat.lm.model.embedder.input_embedding.value).copy()
    result = train_profiler(chat, _data(), METHODS["rlaif"], config, directory, RewardModels(judge=ScriptedJudge(scores)),
                            log=lambda _: None)
    changed = not np.array_equal(before, np.asarray(chat.lm.model.embedder.input_embedding.value))
    return result.log[-1], changed


def test_rlaif_drops_constant_groups_and_skips_an_update_with_none_left(tiny_chat_dir, tmp_path):
    chat = ChatLM(tiny_chat_dir)
    record, changed = _train(chat, ["7", "7", "2", "9"], tmp_path / "one-constant")  # the first user's group is flat
    assert record["dropped_groups"] == 1 and not record.get("skipped_update") and changed
    assert record["reward/judge_score"] == pytest.approx(np.mean([6 / 9, 6 / 9, 1 / 9, 8 / 9]))

    record, changed = _train(chat, ["5", "5", "5", "5"], tmp_path / "all-constant")  # no signal anywhere
    assert record["dropped_groups"] == 2 and record["skipped_update"] == 1.0 and not changed
