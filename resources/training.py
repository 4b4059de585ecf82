"""Training budgets as resources: GRPO (METHOD §4) and SCL (METHOD §6). Defaults are profilekit's CPU defaults
(`GRPOConfig`, `SCLConfig`); the paper's values are `PAPER_GRPO` and `PAPER_SCL`."""

from __future__ import annotations

from dataclasses import asdict

from dagster import ConfigurableResource

from profilekit.scl import SCLConfig
from profilekit.training import GRPOConfig

_GRPO = GRPOConfig()
_SCL = SCLConfig()


class TrainingResource(ConfigurableResource):
    """Raising `steps` continues a finished run from its last checkpoint; any other change starts a new run."""

    steps: int = _GRPO.steps
    users_per_step: int = _GRPO.users_per_step
    rollouts: int = _GRPO.rollouts
    max_new_tokens: int = _GRPO.max_new_tokens
    history_budget_tokens: int = _GRPO.history_budget_tokens
    learning_rate: float = _GRPO.learning_rate
    beta: float = _GRPO.beta
    epsilon: float = _GRPO.epsilon
    save_every: int = _GRPO.save_every
    seed: int = _GRPO.seed
    compute_dtype: str = _GRPO.compute_dtype  # "float32" or "bfloat16" (bf16 dots, f32 accumulation and masters)
    remat: bool = _GRPO.remat  # recompute layer activations in the backward pass (less memory, one more forward)
    validation_users: int = _GRPO.validation_users  # held-out train users of the validation curve; 0: none
    validate_every: int = _GRPO.validate_every  # steps between validation evaluations (not part of the run's identity)
    validation_temperature: float = _GRPO.validation_temperature
    validation_samples: int = _GRPO.validation_samples  # profiles per validation user (not part of the run's identity)
    # LoRA: 0 trains every weight (full fine-tune); a rank trains only adapters on `lora_targets` (q, k, v, o, gate,
    # up, down) scaled by lora_alpha / lora_rank, and checkpoints hold the adapters.
    lora_rank: int = _GRPO.lora_rank
    lora_alpha: float = _GRPO.lora_alpha
    lora_targets: list[str] = list(_GRPO.lora_targets)

    @classmethod
    def of(cls, config: GRPOConfig, **overrides) -> TrainingResource:
        """The resource holding `config`'s budgets (e.g. `PAPER_GRPO`)."""
        values = {k: v for k, v in asdict(config).items() if k in cls.model_fields}
        return cls(**{**values, **overrides})

    @classmethod
    def field_value(cls, name: str, text: str):
        """`text` typed as field `name` (command-line overrides); SystemExit naming the fields for an unknown one."""
        field = cls.model_fields.get(name)
        if field is None or not text:
            raise SystemExit(f"{name}={text!r}: expected FIELD=VALUE with a training resource field "
                             f"({', '.join(cls.model_fields)})")
        if field.annotation is bool:
            return text.lower() == "true"
        if field.annotation == list[str]:
            return text.split("+")
        return field.annotation(text)

    @classmethod
    def overrides(cls, specs: list[str]) -> dict:
        """`["users_per_step=8", "learning_rate=1e-4"]` -> {"users_per_step": 8, "learning_rate": 1e-4}."""
        return {name: cls.field_value(name, text) for name, _, text in (spec.partition("=") for spec in specs)}

    def config(self, advantage: str) -> GRPOConfig:
        values = self.model_dump()
        return GRPOConfig(advantage=advantage, **{**values, "lora_targets": tuple(values["lora_targets"])})


class SCLResource(ConfigurableResource):
    """Any change names a new SCL training run; an identical one is not trained again."""

    batch_size: int = _SCL.batch_size
    learning_rate: float = _SCL.learning_rate
    epochs: int = _SCL.epochs
    max_seq_length: int = _SCL.max_seq_length
    temperature: float = _SCL.temperature
    warmup_ratio: float = _SCL.warmup_ratio
    seed: int = _SCL.seed

    @classmethod
    def of(cls, config: SCLConfig) -> SCLResource:
        return cls(**asdict(config))

    def config(self) -> SCLConfig:
        return SCLConfig(**self.model_dump())
