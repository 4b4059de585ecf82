"""The evaluation protocol as a resource, so every asset of a run uses the same split and budgets."""

from __future__ import annotations

from dagster import ConfigurableResource

from profilekit.protocol import Protocol

_PROTOCOL = Protocol()


class ProtocolResource(ConfigurableResource):
    """METHOD §1 values (`profilekit.protocol.Protocol`). `max_eval_users` bounds the test users the evaluation
    assets score (and profile); `max_qa_users` the first of those that the QA judge is asked about;
    `max_scl_users` the train users whose (user text, next item) pairs adapt the SCL embedder (None: all)."""

    min_interactions: int = _PROTOCOL.min_interactions
    max_interactions: int = _PROTOCOL.max_interactions
    recent_k: int = _PROTOCOL.recent_k
    test_fraction: float = _PROTOCOL.test_fraction
    max_test_users: int = _PROTOCOL.max_test_users
    max_targets_per_user: int = _PROTOCOL.max_targets_per_user
    test_negatives: int = _PROTOCOL.test_negatives
    train_negatives: int = _PROTOCOL.train_negatives
    seed: int = _PROTOCOL.seed
    max_eval_users: int = _PROTOCOL.max_eval_users
    max_qa_users: int = _PROTOCOL.max_qa_users
    max_scl_users: int | None = _PROTOCOL.max_scl_users

    def get(self) -> Protocol:
        return Protocol(**self.model_dump())
