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
from scipy import stats

from profilekit.bump import holdout_split
from profilekit.checkpoints import CheckpointStore, lora_of, params_digest
from profilekit.contexts import profile_views
from profilekit.duet import blank_item_mask, item_evidence, rating_scale
from profilekit.embedder import Embedder
from profilekit.llm.grpo_step import PolicyTrainer, StepGeometry
from profilekit.llm.lora import ALL_PROJECTIONS, AdapterTrainer, LoraConfig
from profilekit.llm.sampler import SamplingConfig
from profilekit.methods import Method, RewardInputs
from profilekit.metrics import ndcg_at_k, paired_significance, recall_at_k, target_ranks
from profilekit.profiler import ChatLM, profile_conversations
from profilekit.progress import progress_bar
from profilekit.prompts import PROFILE_PROMPTS, ProfilePrompt
from profilekit.qa import question_sets
from profilekit.rewards import batch_advantages, constant_groups, group_advantages
from profilekit.text import example_history_lines, history_lines, recent_history_text


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
    # The validation curve: these train users are held out of training and profiled (one sample each at
    # `validation_temperature`) before the first step, every `validate_every` steps and after the last.
    validation_users: int = 16
    validate_every: int = 5
    validation_temperature: float = 0.7
    # Profiles per validation user, averaged: one profile at 0.7 is a fresh draw at every validation (measured:
    # docs/RESULTS.md), so the noise of the mean falls as 1/sqrt(users x samples).
    validation_samples: int = 4
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
        if self.validate_every < 1:
            raise ValueError(f"validate_every must be >= 1, got {self.validate_every}")
        if self.validation_samples < 1:
            raise ValueError(f"validation_samples must be >= 1, got {self.validation_samples}")
        if self.lora_rank < 0:
            raise ValueError(f"lora_rank must be 0 (full fine-tune) or a LoRA rank, got {self.lora_rank}")
        _ = self.lora  # validates the LoRA settings


# The paper's budgets (METHOD §4), used by the gcp environment; "1 epoch" over the train users is `steps` there.
PAPER_GRPO = GRPOConfig(
    steps=100, users_per_step=64, rollouts=8, max_new_tokens=2048, history_budget_tokens=2048, learning_rate=1e-6,
    validation_users=64, validate_every=10,
)

# How often and how warm validation samples change what is measured, not what is trained.
_NOT_IN_RUN_KEY = ("steps", "validate_every", "validation_temperature", "validation_samples")


def run_key(method: Method, config: GRPOConfig, base_version: str, data_version: str) -> str:
    """Identifies a training run; `steps` is left out so raising it continues the same run from its checkpoint,
    and so are the LoRA settings of a full fine-tune, which keeps the runs trained before LoRA existed."""
    fields = {**asdict(config), **dict.fromkeys(_NOT_IN_RUN_KEY)}
    if not config.lora_rank:
        fields = {k: v for k, v in fields.items() if not k.startswith("lora_")}
    payload = json.dumps(
        {"method": method.fingerprint(), "config": fields, "base": base_version, "data": data_version},
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


@dataclass
class TrainingExamples:
    """Per training example: profiler prompt, 10-H text, target + negatives, and the 4-option question; for DUET
    and BUMP also the target's rating, item text and history line (BUMP's held-out interaction), and the
    domain's rating scale (lowest, highest, rounding step). An item-aware prompt (DUET) also has each example's
    prompt with a blank item block (`blank_messages`, for `Method.blank_item_prob`). `heldout_ids` and
    `heldout_events` are BUMP's held-out events (item ids and history lines, oldest first, target last; the target
    alone unless `holdout_events` > 1), `heldout` their lines joined, and `visible_ids` the history the profiler
    sees."""

    messages: list[list[dict]]
    recent: list[str]
    target_ids: list[str]
    negative_ids: list[list[str]]
    options: list[list[str]]
    answers: list[int]
    user_ids: list[str] = field(default_factory=list)
    target_ratings: list[float] = field(default_factory=list)
    item_texts: list[str] = field(default_factory=list)
    heldout: list[str] = field(default_factory=list)
    rating_scale: tuple[float, float, float] = (1.0, 5.0, 1.0)
    blank_messages: list[list[dict]] = field(default_factory=list)
    heldout_ids: list[list[str]] = field(default_factory=list)
    heldout_events: list[list[str]] = field(default_factory=list)
    visible_ids: list[list[str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.messages)


def training_examples(
    histories: pd.DataFrame, candidates: pd.DataFrame, items: pd.DataFrame, count_tokens, history_budget: int,
    recent_k: int, seed: int, prompt: ProfilePrompt = PROFILE_PROMPTS["profile"],
    interactions: pd.DataFrame | None = None, item_evidence_k: int = 10, holdout_events: int = 1,
) -> TrainingExamples:
    """The domain's train examples. An item-aware prompt (DUET) shows each example's target item with its ratings
    by other users before the target's time, which needs `interactions`. `holdout_events` = P > 1 (BUMP's
    ablation, `Method.holdout_events`) takes the last P - 1 history events out of the profiler's prompt and into
    the held-out set; the 10-H text, candidates and questions keep the whole history, as for every method."""
    train = histories[histories["split"] == "train"].sort_values(["user_id", "cut"]).reset_index(drop=True)
    if train.empty:
        raise ValueError("no training examples: the domain has no train-split users")
    splits = [holdout_split(json.loads(ex.history_items), json.loads(ex.history_ratings), ex.target_item_id,
                            float(ex.target_rating), holdout_events) for ex in train.itertuples(index=False)]
    visible = train.assign(history_items=[json.dumps(s[0]) for s in splits],
                           history_ratings=[json.dumps(s[1]) for s in splits])
    cands = candidates[candidates["split"] == "train"].sort_values(["user_id", "cut", "position"])
    grouped = cands.groupby(["user_id", "cut"])["item_id"].agg(list)
    titles = dict(zip(items["item_id"], items["title"]))
    texts = dict(zip(items["item_id"], items["text"]))
    questions = question_sets(train, cands, items, seed)
    if prompt.item_aware and interactions is None:
        raise ValueError("an item-aware profile prompt needs the interactions (the target item's earlier ratings)")
    evidence = item_evidence(train, interactions, items, item_evidence_k) if prompt.item_aware else None
    scale = rating_scale(interactions["rating"] if interactions is not None else histories["target_rating"])
    heldout_events = [history_lines(s[2], s[3], titles) for s in splits]
    return TrainingExamples(
        messages=profile_conversations(visible, items, count_tokens, history_budget, prompt, evidence),
        recent=[recent_history_text(example_history_lines(ex, titles), recent_k) for ex in train.itertuples(index=False)],
        target_ids=train["target_item_id"].tolist(),
        negative_ids=[grouped.loc[(u, c)][1:] for u, c in zip(train["user_id"], train["cut"])],
        options=questions["options"].tolist(),
        answers=questions["answer_index"].astype(int).tolist(),
        user_ids=train["user_id"].astype(str).tolist(),
        target_ratings=train["target_rating"].astype(float).tolist(),
        item_texts=[texts.get(i, i) for i in train["target_item_id"]],
        heldout=[", ".join(lines) for lines in heldout_events],
        rating_scale=(scale.low, scale.high, scale.step),
        blank_messages=profile_conversations(visible, items, count_tokens, history_budget, prompt) if prompt.item_aware else [],
        heldout_ids=[s[2] for s in splits],
        heldout_events=heldout_events,
        visible_ids=[s[0] for s in splits],
    )


def step_conversations(data: TrainingExamples, batch: list[int], step: int, blank_item_prob: float, seed: int
                       ) -> tuple[list[list[dict]], np.ndarray]:
    """The profiler chats of one step's batch and which of them have a blank item block: the target-mode prompt
    unless `blank_item_mask` picks the example for this step (never when `blank_item_prob` is 0)."""
    blanked = blank_item_mask(batch, step, blank_item_prob, seed) if blank_item_prob else np.zeros(len(batch), bool)
    return [(data.blank_messages if b else data.messages)[i] for i, b in zip(batch, blanked)], blanked


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
    validation: list[dict] = field(default_factory=list)


CASE_STUDY_USERS = 3  # validation users whose profiles every validation record keeps


def case_study(validation: list[dict]) -> pd.DataFrame:
    """The case-study users' profiles at the first, middle and last validation (the paper's qualitative table)."""
    if not validation:
        return pd.DataFrame(columns=["user_id", "step", "profile"])
    picks = sorted({0, len(validation) // 2, len(validation) - 1})
    rows = [{"user_id": c["user_id"], "step": validation[i]["step"], "profile": c["profile"]}
            for i in picks for c in validation[i]["case_study"]]
    return pd.DataFrame(rows).sort_values(["user_id", "step"], kind="stable").reset_index(drop=True)


def validation_summary(validation: list[dict]) -> dict[str, float]:
    """First and last validation reward, their difference, the step-0 spread across users and the paired standard
    error of the gain (is the gain more than noise?), and the downstream NDCG@10 of both views at the first and
    last validation."""
    if not validation:
        return {}
    first, last = validation[0], validation[-1]
    out = {
        "validation_reward_first": first["reward_mean"], "validation_reward_last": last["reward_mean"],
        "validation_reward_gain": last["reward_mean"] - first["reward_mean"],
        "validation_reward_spread": first["reward_std"],
    }
    # Records written before per-user rewards were kept have none; their gain has no paired error.
    gain_se = validation_gains([first, last])["gain_se"].iloc[-1]
    if not np.isnan(gain_se):
        out["validation_reward_gain_se"] = float(gain_se)
    for view, name in (("P", "P"), ("10H+P", "10HP")):
        out[f"validation_ndcg10_{name}_first"] = first[f"{view}/ndcg10"]
        out[f"validation_ndcg10_{name}_last"] = last[f"{view}/ndcg10"]
    return out


def validation_gains(validation: list[dict]) -> pd.DataFrame:
    """The validation curve with each point's paired gain over the first on the same users: mean reward, gain,
    its standard error and the paired t-test's p (none for records without per-user rewards, or drawn with another
    number of samples per user), and the downstream NDCG@10 of both views."""
    rows = []
    first = validation[0] if validation else {}
    first_rewards = np.asarray(first.get("rewards", []), float)
    for record in validation:
        row = {"step": record["step"], "reward": record["reward_mean"]}
        rewards = np.asarray(record.get("rewards", []), float)
        comparable = record.get("samples") == first.get("samples") and len(rewards) == len(first_rewards) >= 2
        if record is not first and comparable:
            differences = rewards - first_rewards
            row |= {"gain": differences.mean(), "gain_se": differences.std(ddof=1) / np.sqrt(len(differences)),
                    "gain_p": paired_significance(rewards, first_rewards)["t_pvalue"]}
        rows.append(row | {"P_ndcg10": record["P/ndcg10"], "10H+P_ndcg10": record["10H+P/ndcg10"]})
    return pd.DataFrame(rows, columns=["step", "reward", "gain", "gain_se", "gain_p", "P_ndcg10", "10H+P_ndcg10"])


def step_log_blocks(log: list[dict], block: int) -> pd.DataFrame:
    """The step log in blocks of `block` steps: the mean of the reward and of every logged reward term, the KL at
    the block's last update, the mean completion length, the median seconds of a step, its rollout and its update,
    and the update's CPU dot path where the log has one."""
    frame = pd.DataFrame(log)
    if frame.empty:
        return frame
    frame["block"] = (frame["step"] - 1) // block
    terms = ["reward_mean", *sorted(c for c in frame.columns if c.startswith("reward/"))]
    blocks = frame.groupby("block")
    out = blocks[terms].mean()
    out.insert(0, "steps", blocks["step"].agg(lambda s: f"{s.min()}-{s.max()}"))
    if "kl" in frame:  # absent when every step of the log skipped its update
        out["kl_last"] = blocks["kl"].last()
    out["completion_tokens"] = blocks["completion_tokens_mean"].mean()
    for column in ("seconds", "seconds_rollout", "seconds_update"):
        out[f"median_{column}"] = blocks[column].median()
    if "update_dot_path" in frame:
        out["update_dot_path"] = blocks["update_dot_path"].agg(lambda s: "+".join(sorted(set(s.dropna()))))
    return out.reset_index(drop=True)


def training_reward_trend(log: list[dict], users_per_step: int, train_users: int) -> dict[str, float]:
    """Least-squares slope of the on-policy training reward per 100 steps, its standard error and the steps it
    spans. Only steps of the first pass over the training users count: each of them rolls out users the policy was
    never updated on, so the slope is a held-out learning signal over users_per_step x rollouts profiles a step,
    far more users than the validation curve scores (its noise is the spread between users, in the residuals)."""
    fresh = [r for r in log if r["step"] * users_per_step <= train_users]
    if len(fresh) < 3:
        return {}
    fit = stats.linregress([r["step"] for r in fresh], [r["reward_mean"] for r in fresh])
    return {"training_reward_slope_per_100_steps": float(fit.slope * 100),
            "training_reward_slope_se": float(fit.stderr * 100), "training_reward_slope_steps": len(fresh)}


def validate(
    policy: ChatLM, data: TrainingExamples, method: Method, models: RewardModels, config: GRPOConfig, step: int,
    k: int = 10,
) -> dict:
    """Score held-out users at `step`: `validation_samples` profiles each at the validation temperature (the same
    seed every time, so evaluations differ only by the weights), the method's own reward terms averaged per user,
    and the downstream NDCG@k / Recall@k of the target among the user's train candidates for the P and 10H+P views
    with the frozen embedder, over every sample. An item-aware prompt (DUET) is rewarded in target mode, as in
    training, but ranks from blank-mode profiles, as evaluation does: a target-mode profile may name the target."""
    t0 = time.perf_counter()
    samples = config.validation_samples
    prompt = PROFILE_PROMPTS[method.prompt]
    sampling = policy.sampling_for(prompt, SamplingConfig(config.max_new_tokens, config.validation_temperature, 1.0,
                                                          config.seed + 7919, config.prompt_bucket))
    parse = prompt.parse

    def sample(conversations: list[list[dict]]):
        gen = policy.sampler.generate([policy.encode_chat(m) for m in conversations], sampling, samples=samples)
        texts = [policy.tokenizer.decode(t, skip_special_tokens=True) for t in gen.tokens]
        return gen, texts, [parse(t) for t in texts]

    gen, texts, profiles = sample(data.messages)
    ranked = sample(data.blank_messages)[2] if prompt.item_aware else profiles
    batch = list(range(len(data)))
    # Step 0 for the terms' own draws (BUMP's pools and shuffles), so they too are the same at every validation.
    inputs = RewardInputs(profiles, batch, samples, data, policy, models.embedder, models.item_vectors, models.judge,
                          GREEDY_ANSWER, texts, [len(t) for t in gen.tokens], 0, config.seed)
    rewards, terms = method.rewards(inputs)
    per_user = rewards.mean(axis=1)  # [B, samples] -> per user
    record = {"step": step, "samples": samples, "reward_mean": float(per_user.mean()),
              "reward_std": float(per_user.std()), **{f"reward/{name}": value for name, value in terms.items()},
              # Per user, so two evaluations of the same users can be compared pairwise.
              "rewards": [float(r) for r in per_user]}
    candidates = inputs.items([[data.target_ids[i], *data.negative_ids[i]] for i in batch])  # target first
    recent = [data.recent[i] for i in inputs.rows]
    for view, view_texts in profile_views(recent, ranked).items():
        users = inputs.vectors(view_texts)
        ranks = target_ranks(np.einsum("ncd,nsd->nsc", candidates, users).reshape(len(batch) * samples, -1))
        record[f"{view}/ndcg{k}"] = float(ndcg_at_k(ranks, k).mean())
        record[f"{view}/recall{k}"] = float(recall_at_k(ranks, k).mean())
    record["completion_tokens_mean"] = float(np.mean([len(t) for t in gen.tokens]))
    record["case_study"] = [{"user_id": data.user_ids[i], "profile": ranked[i * samples]}
                            for i in batch[:CASE_STUDY_USERS]]
    record["seconds"] = time.perf_counter() - t0
    return record


def _pad_batch(prompts: list[list[int]], completions: list[list[int]], pad_id: int, config: GRPOConfig,
               forced: list[list[bool]] | None = None):
    """Left-padded prompts and right-padded completions; the loss mask covers what the policy sampled, not the
    padding and not the tokens a scaffold wrote (`forced`, per completion: empty for none)."""
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
        if forced and forced[i]:
            mask[i, : len(forced[i])] &= ~np.asarray(forced[i], bool)
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
    validation: TrainingExamples | None = None,
) -> TrainingResult:
    """Train `policy` in place up to `config.steps` updates, resuming from the latest checkpoint in
    `checkpoint_dir`; a run that already reached `config.steps` trains nothing. With `validation` examples (which
    needs `models.embedder` and the item vectors), the validation curve is scored before the first step, every
    `config.validate_every` steps and after the last, and kept in the checkpoints with the step log."""
    if validation is not None and (models.embedder is None or models.item_vectors is None):
        raise ValueError("validation scores downstream NDCG with the frozen embedder: pass it and the item vectors")
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
    curve: list[dict] = []
    resumed_from = store.latest_step()
    if resumed_from is not None:
        stored = store.meta(resumed_from)  # a full fine-tune's parameters are the whole model, whatever its base
        if lora_of(stored) != lora or (lora is not None and stored["base_version"] != policy.version):
            raise ValueError(f"{checkpoint_dir} holds a checkpoint of another run ({stored}), not of {meta}")
        params, opt_state, saved = store.restore(resumed_from, *trainer.checkpoint_state())
        trainer.restore_state(params, opt_state)
        history, curve = saved["steps"], saved["validation"]
        trainer.write_into(policy.lm.model)
        policy.sampler.reload_weights()
        log(f"resumed from checkpoint step {resumed_from} in {checkpoint_dir}")
    start = resumed_from or 0
    order = np.random.default_rng(config.seed).permutation(len(data))
    prompt = PROFILE_PROMPTS[method.prompt]
    sampling = policy.sampling_for(prompt, SamplingConfig(config.max_new_tokens, config.temperature, 1.0, config.seed,
                                                          config.prompt_bucket))
    advantage_fn = group_advantages if method.advantage == "group" else batch_advantages
    parse = prompt.parse
    bar = progress_bar(config.steps, f"GRPO {method.name}", "step")
    bar.update(min(start, config.steps))

    def score_validation(step: int) -> None:
        record = validate(policy, validation, method, models, config, step)
        curve.append(record)
        log(json.dumps({"validation": {k: round(v, 4) for k, v in record.items() if isinstance(v, float)} | {"step": step}}))

    # A run killed between validations resumes without one: the curve stays on its grid, and a run resumed once
    # a session does not pay a validation each time.
    on_grid = start % config.validate_every == 0
    if validation is not None and start < config.steps and on_grid and not any(r["step"] == start for r in curve):
        score_validation(start)
    for step in range(start, config.steps):
        t0 = time.perf_counter()
        batch = [int(order[(step * config.users_per_step + j) % len(data)]) for j in range(config.users_per_step)]
        conversations, blanked = step_conversations(data, batch, step, method.blank_item_prob, config.seed)
        prompts = [policy.encode_chat(m) for m in conversations]
        gen = policy.sampler.generate(prompts, replace(sampling, seed=config.seed * 1_000_003 + step), samples=config.rollouts)
        completions = [toks + ([stop] if stop is not None else []) for toks, stop in zip(gen.tokens, gen.stops)]
        texts = [policy.tokenizer.decode(t, skip_special_tokens=True) for t in gen.tokens]
        profiles = [parse(t) for t in texts]
        t_rollout = time.perf_counter() - t0
        inputs = RewardInputs(profiles, batch, config.rollouts, data, policy, models.embedder, models.item_vectors,
                              models.judge, GREEDY_ANSWER, texts, [len(t) for t in gen.tokens], step, config.seed)
        rewards, terms = method.rewards(inputs)
        advantages = advantage_fn(rewards)
        dropped = constant_groups(rewards) if method.drop_constant_groups else np.zeros(len(batch), bool)
        prompt_ids, valid, completion, mask = _pad_batch(prompts, completions, policy.sampler.pad_id, config, gen.forced)
        mask[np.repeat(dropped, config.rollouts)] = False
        t_update = time.perf_counter()
        if mask.any():
            aux = trainer.step(prompt_ids, valid, completion, mask, advantages.reshape(-1).astype(np.float32))
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
            # Only where blanking is on, so the other methods' step logs stay as they were.
            **({"blank_item_frac": float(blanked.mean())} if method.blank_item_prob else {}),
            # Which XLA:CPU dot path computed the update: a resume on another machine may take the other one.
            **({"update_dot_path": trainer.dot_path} if trainer.dot_path else {}),
            "seconds_rollout": t_rollout,
            "seconds_update": time.perf_counter() - t_update,
            "seconds": time.perf_counter() - t0,
        }
        history.append(record)
        if validation is not None and ((step + 1) % config.validate_every == 0 or step + 1 == config.steps):
            score_validation(step + 1)
        if (step + 1) % config.save_every == 0 or step + 1 == config.steps:
            store.save(step + 1, *trainer.checkpoint_state(), {"steps": history, "validation": curve}, meta)
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
        digest=params_digest(trainer.checkpoint_params()), seconds=time.perf_counter() - started, validation=curve,
    )
