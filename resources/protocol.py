"""The evaluation protocol as a resource, so every asset of a run uses the same split and budgets."""

from __future__ import annotations

from dagster import ConfigurableResource

from profilekit.protocol import Protocol


class ProtocolResource(ConfigurableResource):
    """METHOD §1 values. `max_eval_users` bounds the test users the evaluation assets score (and profile);
    `max_qa_users` the first of those that the QA judge is asked about; `max_scl_users` the train users whose
    (user text, next item) pairs adapt the SCL embedder (None: all)."""

    min_interactions: int = 20
    max_interactions: int = 1000
    recent_k: int = 10
    test_fraction: float = 0.2
    max_test_users: int = 1200
    max_targets_per_user: int = 1
    test_negatives: int = 99
    train_negatives: int = 128
    seed: int = 0
    max_eval_users: int = 1200
    max_qa_users: int = 1200
    max_scl_users: int | None = None

    def get(self) -> Protocol:
        return Protocol(**self.model_dump())
