"""GRPO training of the profiler (METHOD §4) with BLUE's reward or a baseline's (§3, §5), resumable from orbax
step checkpoints.

One step: B training users -> G profiles each (temperature 1.0, one shared prefill per user) -> rewards ->
advantages (group-normalised for GRPO, batch-normalised for REINFORCE++) -> one exact GRPO update
(`profilekit.llm.grpo_step`). Every reward term, KL, clip fraction and completion length is logged per step and
stored with the checkpoint, so a resumed run keeps its whole curve.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import optax
import pandas as pd

from profilekit.checkpoints import CheckpointStore, lora_of, params_digest
from profilekit.embedder import Embedder
from profilekit.llm.grpo_step import PolicyTrainer, StepGeometry
from profilekit.llm.lora import ALL_PROJECTIONS, AdapterTrainer, LoraConfig
from profilekit.llm.sampler import SamplingConfig
from profilekit.methods import Method, RewardInputs
from profilekit.profiler import ChatLM, profile_conversations
from profilekit.progress import progress_bar
from profilekit.prompts import PROFILE_PROMPTS, ProfilePrompt
from profilekit.qa import question_sets
from profilekit.rewards import batch_advantages, constant_groups, group_advantages
from profilekit.text import example_history_lines, recent_history_text


@dataclass(frozen=True)
class GRPOConfig:
    """Trainer budgets. CPU defaults; the paper's values (METHOD §4) in comments."""

    steps: int = 4  # paper: 1 epoch over the training users
    users_per_step: int = 4  # paper: 64
    rollouts: int = 4  # paper: G = 8
    max_new_tokens: int = 96  # paper: 2048 (max prompt and completion)
    history_budget_tokens: int = 256  # paper: 2048
    temperature: float = 1.0  # paper: 1.0
    # The paper's 1e-6 barely moves a 135M model in the few steps a CPU affords (measured: docs/RESULTS.md).
    learning_rate: float = 1e-5
    beta: float = 0.01  # paper: 0.01
    epsilon: float = 0.2  # paper: 0.2
    max_grad_norm: float = 1.0
    advantage: str = "group"  # "group": GRPO; "batch": REINFORCE++ (the paper's ablation)
    save_every: int = 1
    seed: int = 0
    logprob_chunk: int = 32
    prompt_bucket: int = 16
    compute_dtype: str = "bfloat16"  # of the update: bf16 dots, f32 accumulation and masters; "float32" for exact f32
    remat: bool = True  # recompute each layer in the backward pass instead of keeping its activations
    completion_bucket: int = 16
    # LoRA (profilekit.llm.lora): rank 0 is a full fine-tune; above 0 only adapters of rank `lora_rank` on the
    # `lora_targets` projections of every layer are trained, scaled by lora_alpha / lora_rank.
    lora_rank: int = 0
    lora_alpha: float = 16.0
    lora_targets: tuple[str, ...] = ALL_PROJECTIONS

    @property
    def lora(self) -> LoraConfig | None:
        return LoraConfig(self.lora_rank, self.lora_alpha, tuple(self.lora_targets)) if self.lora_rank else None

    def __post_init__(self):
        if self.advantage not in ("group", "batch"):
            raise ValueError(f"advantage must be 'group' (GRPO) or 'batch' (REINFORCE++), got {self.advantage!r}")
        if self.rollouts < 2 and self.advantage == "group":
            raise ValueError("GRPO needs at least 2 rollouts per user")
        if self.lora_rank < 0:
            raise ValueError(f"lora_rank must be 0 (full fine-tune) or a LoRA rank, got {self.lora_rank}")
        _ = self.lora  # validates the LoRA settings


# The paper's budgets (METHOD §4), used by the gcp environment; "1 epoch" over the train users is `steps` there.
PAPER_GRPO = GRPOConfig(
    steps=100, users_per_step=64, rollouts=8, max_new_tokens=2048, history_budget_tokens=2048, learning_rate=1e-6
)


def run_key(method: Method, config: GRPOConfig, base_version: str, data_version: str) -> str:
    """Identifies a training run; `steps` is left out so raising it continues the same run from its checkpoint,
    and so are the LoRA settings of a full fine-tune, which keeps the runs trained before LoRA existed."""
    fields = {**asdict(config), "steps": None}
    if not config.lora_rank:
        fields = {k: v for k, v in fields.items() if not k.startswith("lora_")}
    payload = json.dumps(
        {"method": method.fingerprint(), "config": fields, "base": base_version, "data": data_version},
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


@dataclass
class TrainingExamples:
    """Per training example: profiler prompt, 10-H text, target + negatives, and the 4-option question."""

    messages: list[list[dict]]
    recent: list[str]
    target_ids: list[str]
    negative_ids: list[list[str]]
    options: list[list[str]]
    answers: list[int]

    def __len__(self) -> int:
        return len(self.messages)


def training_examples(
    histories: pd.DataFrame, candidates: pd.DataFrame, items: pd.DataFrame, count_tokens, history_budget: int,
    recent_k: int, seed: int, prompt: ProfilePrompt = PROFILE_PROMPTS["profile"],
) -> TrainingExamples:
    train = histories[histories["split"] == "train"].sort_values(["user_id", "cut"]).reset_index(drop=True)
    if train.empty:
        raise ValueError("no training examples: the domain has no train-split users")
    cands = candidates[candidates["split"] == "train"].sort_values(["user_id", "cut", "position"])
    grouped = cands.groupby(["user_id", "cut"])["item_id"].agg(list)
    titles = dict(zip(items["item_id"], items["title"]))
    questions = question_sets(train, cands, items, seed)
    return TrainingExamples(
        messages=profile_conversations(train, items, count_tokens, history_budget, prompt),
        recent=[recent_history_text(example_history_lines(ex, titles), recent_k) for ex in train.itertuples(index=False)],
        target_ids=train["target_item_id"].tolist(),
        negative_ids=[grouped.loc[(u, c)][1:] for u, c in zip(train["user_id"], train["cut"])],
        options=questions["options"].tolist(),
        answers=questions["answer_index"].astype(int).tolist(),
    )


@dataclass
class RewardModels:
    """What a method's reward terms need besides the policy (`Method.needs`): the frozen embedder with the
    domain's item vectors and the judge LLM."""

    embedder: Embedder | None = None
    item_vectors: dict[str, np.ndarray] | None = None
    judge: ChatLM | None = None


GREEDY_ANSWER = SamplingConfig(max_new_tokens=8, temperature=0.0, top_p=1.0, seed=0, prompt_bucket=16)


@dataclass
class TrainingResult:
    log: list[dict]
    step: int
    resumed_from: int | None
    trained_now: int
    digest: str
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)


def _pad_batch(prompts: list[list[int]], completions: list[list[int]], pad_id: int, config: GRPOConfig):
    width = max(config.prompt_bucket, -(-max(map(len, prompts)) // config.prompt_bucket) * config.prompt_bucket)
    prompt = np.full((len(prompts), width), pad_id, np.int32)
    valid = np.zeros((len(prompts), width), bool)
    for i, p in enumerate(prompts):
        prompt[i, width - len(p):], valid[i, width - len(p):] = p, True
    longest = max(1, max(map(len, completions)))
    t = -(-longest // config.completion_bucket) * config.completion_bucket
    completion = np.full((len(completions), t), pad_id, np.int32)
    mask = np.zeros((len(completions), t), bool)
    for i, c in enumerate(completions):
        completion[i, : len(c)], mask[i, : len(c)] = c, True
    return prompt, valid, completion, mask


def train_profiler(
    policy: ChatLM,
    data: TrainingExamples,
    method: Method,
    config: GRPOConfig,
    checkpoint_dir: Path | str,
    models: RewardModels,
    log: Callable[[str], None] = print,
    on_step: Callable[[dict], None] | None = None,
) -> TrainingResult:
    """Train `policy` in place up to `config.steps` updates, resuming from the latest checkpoint in
    `checkpoint_dir`; a run that already reached `config.steps` trains nothing."""
    started = time.perf_counter()
    tx = optax.chain(optax.clip_by_global_norm(config.max_grad_norm), optax.adamw(config.learning_rate))
    geometry = StepGeometry(config.rollouts, config.epsilon, config.beta, config.logprob_chunk, config.temperature,
                            config.compute_dtype, config.remat)
    lora = config.lora
    trainer = (PolicyTrainer(policy.lm.model, tx, geometry) if lora is None
               else AdapterTrainer(policy.lm.model, tx, geometry, lora, config.seed))
    meta = {"base_version": policy.version, "lora": None if lora is None else asdict(lora)}
    store = CheckpointStore(checkpoint_dir)
    history: list[dict] = []
    resumed_from = store.latest_step()
    if resumed_from is not None:
        stored = store.meta(resumed_from)  # a full fine-tune's parameters are the whole model, whatever its base
        if lora_of(stored) != lora or (lora is not None and stored["base_version"] != policy.version):
            raise ValueError(f"{checkpoint_dir} holds a checkpoint of another run ({stored}), not of {meta}")
        trainer.params, trainer.opt_state, history = store.restore(resumed_from, trainer.params, trainer.opt_state)
        trainer.write_into(policy.lm.model)
        policy.sampler.reload_weights()
        log(f"resumed from checkpoint step {resumed_from} in {checkpoint_dir}")
    start = resumed_from or 0
    order = np.random.default_rng(config.seed).permutation(len(data))
    sampling = SamplingConfig(config.max_new_tokens, config.temperature, 1.0, config.seed, config.prompt_bucket)
    advantage_fn = group_advantages if method.advantage == "group" else batch_advantages
    parse = PROFILE_PROMPTS[method.prompt].parse
    bar = progress_bar(config.steps, f"GRPO {method.name}", "step")
    bar.update(min(start, config.steps))
    for step in range(start, config.steps):
        t0 = time.perf_counter()
        batch = [int(order[(step * config.users_per_step + j) % len(data)]) for j in range(config.users_per_step)]
        prompts = [policy.encode_chat(data.messages[i]) for i in batch]
        gen = policy.sampler.generate(prompts, replace(sampling, seed=config.seed * 1_000_003 + step), samples=config.rollouts)
        completions = [toks + ([stop] if stop is not None else []) for toks, stop in zip(gen.tokens, gen.stops)]
        profiles = [parse(policy.tokenizer.decode(t, skip_special_tokens=True)) for t in gen.tokens]
        t_rollout = time.perf_counter() - t0
        inputs = RewardInputs(profiles, batch, config.rollouts, data, policy, models.embedder, models.item_vectors,
                              models.judge, GREEDY_ANSWER)
        rewards, terms = method.rewards(inputs)
        advantages = advantage_fn(rewards)
        dropped = constant_groups(rewards) if method.drop_constant_groups else np.zeros(len(batch), bool)
        prompt, valid, completion, mask = _pad_batch(prompts, completions, policy.sampler.pad_id, config)
        mask[np.repeat(dropped, config.rollouts)] = False
        t_update = time.perf_counter()
        if mask.any():
            aux = trainer.step(prompt, valid, completion, mask, advantages.reshape(-1).astype(np.float32))
            trainer.write_into(policy.lm.model)
            policy.sampler.reload_weights()
        else:  # every group dropped: no signal, and no weight-decay-only update either
            aux = {"skipped_update": 1.0}
        record = {
            "step": step + 1,
            "reward_mean": float(rewards.mean()),
            "reward_std": float(rewards.std()),
            **{f"reward/{k}": v for k, v in terms.items()},
            **aux,
            "completion_tokens_mean": float(np.mean([len(c) for c in completions])),
            "dropped_groups": int(dropped.sum()),
            "seconds_rollout": t_rollout,
            "seconds_update": time.perf_counter() - t_update,
            "seconds": time.perf_counter() - t0,
        }
        history.append(record)
        if (step + 1) % config.save_every == 0 or step + 1 == config.steps:
            store.save(step + 1, trainer.params, trainer.opt_state, history, meta)
        log(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in record.items()}))
        bar.set_postfix(reward=f"{record['reward_mean']:.3f}", refresh=False)
        bar.update(1)
        if on_step is not None:
            on_step(record)
    bar.close()
    final = store.latest_step() or 0
    if resumed_from is not None and final == resumed_from and start >= config.steps:
        log(f"checkpoint already at step {final} >= {config.steps} steps: nothing to train")
    store.close()
    return TrainingResult(
        log=history, step=final, resumed_from=resumed_from, trained_now=max(0, config.steps - start),
        digest=params_digest(trainer.params), seconds=time.perf_counter() - started,
    )
