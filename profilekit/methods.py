"""Trained profiler methods as data (METHOD §3, §5, Table 6): each is a set of weighted reward terms, registered
by name with what they need (the policy itself, the frozen embedder with the domain's item vectors, the judge
LLM), plus an advantage estimator and the profile prompt (messages + parser) it asks with. The trainer sums the weighted terms and logs every term (and its parts)
without knowing any method; an asset asks `method.needs` which models to load.

Importing this module loads no JAX, so listing the method partitions stays cheap.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from profilekit.bump import (
    BumpConfig,
    EmbedderJudge,
    ListwiseJudge,
    PointwiseJudge,
    Ranker,
    bump_rewards,
    centroid,
    hard_negative_pools,
    hard_positive,
)
from profilekit.contexts import profile_views
from profilekit.duet import RatingScale, duet_reward
from profilekit.prompts import (
    PROFILE_PROMPTS,
    duet_rating_example,
    duet_rating_messages,
    duet_valid,
    multiple_choice_messages,
    parse_choice,
    parse_duet,
    parse_duet_rating,
    parse_score,
    profile_quality_messages,
)
from profilekit.rewards import (
    BLUE_TEMPERATURE,
    DIRECTIONS,
    VIEWS,
    blue_embedding_reward,
    check_views_and_directions,
    choice_reward,
    judge_score_reward,
    ndcg_reward,
)

NEEDS = ("policy", "embedder", "judge")
ADVANTAGES = ("group", "batch")  # GRPO's group-normalised, REINFORCE++'s batch-normalised


@dataclass
class RewardInputs:
    """What a reward term sees of one step: the B×G profiles (prompt-major), the batch's example indices into
    `data` (TrainingExamples), and the models the method needs (None where it does not)."""

    profiles: list[str]
    batch: list[int]
    rollouts: int
    data: Any
    policy: Any = None
    embedder: Any = None
    item_vectors: dict[str, np.ndarray] | None = None
    judge: Any = None
    answer_sampling: Any = None  # greedy sampling for the LLMs' answers
    completions: list[str] | None = None  # the raw completions the profiles were parsed from (DUET's six tags)
    completion_tokens: list[int] | None = None  # their lengths (BUMP's length penalty)
    step: int = 0  # the training step (seeds BUMP's pools and shuffles)
    seed: int = 0

    @property
    def rows(self) -> list[int]:
        """The example index of every rollout (prompt-major)."""
        return [i for i in self.batch for _ in range(self.rollouts)]

    def grid(self, values) -> np.ndarray:
        return np.asarray(values, dtype=float).reshape(len(self.batch), self.rollouts)

    def vectors(self, texts: list[str]) -> np.ndarray:
        return self.embedder.encode(texts).reshape(len(self.batch), self.rollouts, -1)

    def items(self, ids_per_example: list[list[str]]) -> np.ndarray:
        return np.stack([np.stack([self.item_vectors[i] for i in ids]) for ids in ids_per_example])


TermResult = tuple[np.ndarray, dict[str, np.ndarray]]  # [B, G] values and named parts for the log


@dataclass(frozen=True)
class RewardTerm:
    name: str
    needs: frozenset[str]
    compute: Callable[..., TermResult]


REWARD_TERMS: dict[str, RewardTerm] = {}


def reward_term(name: str, needs: tuple[str, ...] = ()):
    """Register `fn(inputs: RewardInputs, **options) -> ([B, G] values, {part: [B, G]})` as a reward term."""
    unknown = set(needs) - set(NEEDS)
    if unknown:
        raise ValueError(f"reward term {name!r} needs unknown models {sorted(unknown)}; known: {NEEDS}")

    def register(fn: Callable[..., TermResult]) -> Callable[..., TermResult]:
        if name in REWARD_TERMS:
            raise ValueError(f"reward term {name!r} is registered twice")
        REWARD_TERMS[name] = RewardTerm(name, frozenset(needs), fn)
        return fn

    return register


def _answers(chat, inputs: RewardInputs) -> np.ndarray:
    """1/0 per rollout: does `chat`, reading only the profile, pick the next item among the 4 options."""
    rows = inputs.rows
    options = [inputs.data.options[i] for i in rows]
    out = chat.generate([multiple_choice_messages(p, o) for p, o in zip(inputs.profiles, options)], inputs.answer_sampling)
    return inputs.grid(choice_reward([parse_choice(a, o) for a, o in zip(out.texts, options)],
                                     [inputs.data.answers[i] for i in rows]))


@reward_term("blue_embedding", needs=("embedder",))
def _blue_embedding(inputs: RewardInputs, views=VIEWS, directions=DIRECTIONS, temperature: float = BLUE_TEMPERATURE) -> TermResult:
    """R_emb: Σ over views of ½(ℓ_u2i + ℓ_i2u), InfoNCE against the train negatives and the batch's other users."""
    rendered = profile_views([inputs.data.recent[i] for i in inputs.rows], inputs.profiles)
    vectors = {v: inputs.vectors(rendered[v]) for v in views}
    target = inputs.items([[inputs.data.target_ids[i]] for i in inputs.batch])[:, 0]
    negatives = inputs.items([inputs.data.negative_ids[i] for i in inputs.batch])
    return blue_embedding_reward(vectors, target, negatives, tuple(views), tuple(directions), temperature)


@reward_term("self_multiple_choice", needs=("policy",))
def _self_multiple_choice(inputs: RewardInputs) -> TermResult:
    """R_text: the profiler itself answers the next-item question from its profile (greedy)."""
    return _answers(inputs.policy, inputs), {}


@reward_term("judge_multiple_choice", needs=("judge",))
def _judge_multiple_choice(inputs: RewardInputs) -> TermResult:
    """RLPF: the judge LLM answers the next-item question from the profile."""
    return _answers(inputs.judge, inputs), {}


@reward_term("judge_score", needs=("judge",))
def _judge_score(inputs: RewardInputs) -> TermResult:
    """RLAIF: the judge LLM scores the profile 1-10 against the recent history, mapped to [0, 1]."""
    messages = [profile_quality_messages(inputs.data.recent[i], p) for i, p in zip(inputs.rows, inputs.profiles)]
    scores = [parse_score(a) for a in inputs.judge.generate(messages, inputs.answer_sampling).texts]
    return inputs.grid(judge_score_reward(scores)), {"unparsed": inputs.grid([s is None for s in scores])}


@reward_term("ndcg", needs=("embedder",))
def _ndcg(inputs: RewardInputs, k: int = 10) -> TermResult:
    """LangPTune: NDCG@k of the target among its train candidates ranked by cosine to E(P)."""
    candidates = inputs.items([[inputs.data.target_ids[i], *inputs.data.negative_ids[i]] for i in inputs.batch])
    return ndcg_reward(inputs.vectors(inputs.profiles), candidates, k), {}


@reward_term("duet_rating", needs=("judge",))
def _duet_rating(inputs: RewardInputs, parser: str = "strict", penalty: float = -1.0, two_decimals: bool = False,
                 judge_sees_recent: bool = False, max_new_tokens: int = 16) -> TermResult:
    """DUET: the judge predicts the target's rating from the parsed user and item profiles (+ the item text);
    1 - |clip(ŷ) - y|/M_r, `penalty` for a completion failing the parser or an unreadable rating."""
    data, rows = inputs.data, inputs.rows
    scale = RatingScale(*data.rating_scale)
    parsed = [parse_duet(c) for c in inputs.completions]
    valid = np.array([duet_valid(p, parser) for p in parsed])
    asked = np.flatnonzero(valid)
    messages = [duet_rating_messages(parsed[k]["user"]["profile"], parsed[k]["item"]["profile"],
                                     data.item_texts[rows[k]], scale.low, scale.high,
                                     data.recent[rows[k]] if judge_sees_recent else None) for k in asked]
    sampling = replace(inputs.answer_sampling, max_new_tokens=max_new_tokens)
    answers = inputs.judge.generate(messages, sampling).texts if len(asked) else []
    predicted = np.full(len(rows), np.nan)
    for k, answer in zip(asked, answers):
        rating = parse_duet_rating(answer, scale.low, scale.high, two_decimals)
        predicted[k] = np.nan if rating is None else rating
    scored = ~np.isnan(predicted)
    target = np.array([data.target_ratings[i] for i in rows])
    reward = duet_reward(predicted, scored, target, scale, penalty)
    errors = np.abs(np.clip(predicted[scored], scale.low, scale.high) - target[scored])
    read = predicted[scored]
    return inputs.grid(reward), {
        "compliance": inputs.grid(valid),
        "format_fail": inputs.grid(~valid),
        "judge_unparsed": inputs.grid(valid & ~scored),
        "valid_frac": inputs.grid(scored),
        # The mean error over the rollouts that got a rating (NaN when none did), spread over the grid for the log.
        "abs_err": inputs.grid([errors.mean() if len(errors) else np.nan] * len(rows)),
        # What the small judge reads: its own ratings, or the instruction's example copied (a shortcut the policy
        # can learn by making every profile look alike to the judge).
        "rating_mean": inputs.grid([read.mean() if len(read) else np.nan] * len(rows)),
        "example_copied": inputs.grid(predicted == duet_rating_example(scale.low, scale.high)),
    }


def _bump(inputs: RewardInputs, ranker: Ranker, options: dict) -> TermResult:
    data = inputs.data
    profiles = np.array(inputs.profiles, dtype=object).reshape(len(inputs.batch), inputs.rollouts)
    return bump_rewards(profiles, [data.heldout[i] for i in inputs.batch], [data.heldout_ids[i] for i in inputs.batch],
                        inputs.batch, inputs.grid(inputs.completion_tokens), ranker, BumpConfig(**options),
                        inputs.seed, inputs.step)


BUMP_JUDGES = ("listwise", "pointwise")


def _llm_ranker(inputs: RewardInputs, judge: str, max_new_tokens: int) -> Ranker:
    if judge not in BUMP_JUDGES:
        raise ValueError(f"BUMP's LLM judge must be one of {BUMP_JUDGES}, got {judge!r}")
    return (ListwiseJudge(inputs.judge, replace(inputs.answer_sampling, max_new_tokens=max_new_tokens))
            if judge == "listwise" else PointwiseJudge(inputs.judge))


@reward_term("bump", needs=("judge",))
def _bump_llm_judge(inputs: RewardInputs, judge: str = "listwise", max_new_tokens: int = 32, **options) -> TermResult:
    """BUMP with the judge LLM: forward and backward in-batch NDCG over M_perm shuffles minus R_len. `listwise`
    (the paper's) ranks the whole list in one answer; `pointwise` (a labelled deviation) scores each pair."""
    return _bump(inputs, _llm_ranker(inputs, judge, max_new_tokens), options)


@reward_term("bump_plus", needs=("judge", "embedder"))
def _bump_plus(inputs: RewardInputs, judge: str = "listwise", max_new_tokens: int = 32, q: int = 3,
               **options) -> TermResult:
    """BUMP+ (B5 #9): BUMP with harder comparisons from the frozen embedder's item vectors (standing in for BGE).
    Forward: the held-out positive is, of the example's last `q` held-out events (the method's `holdout_events`
    must be >= q), the one least similar to the centroid of the visible history. Backward: the negatives are the
    K users of the batch whose visible-history centroids are nearest to u's. Forward negatives stay sampled."""
    data, config = inputs.data, BumpConfig(**options)
    vectors = inputs.item_vectors
    centroids, positives, chosen_target = [], [], []
    for i in inputs.batch:
        candidates = data.heldout_ids[i][-q:]
        if len(candidates) < q:
            raise ValueError(f"BUMP+ picks among the last q={q} held-out events, example {i} holds out "
                             f"{len(candidates)}: give the method holdout_events >= q")
        visible = centroid(np.stack([vectors[x] for x in data.visible_ids[i]]))
        pick = hard_positive(np.stack([vectors[x] for x in candidates]), visible)
        centroids.append(visible)
        positives.append(data.heldout_events[i][-q:][pick])
        chosen_target.append(pick == q - 1)
    held = [data.heldout_ids[i] for i in inputs.batch]
    profiles = np.array(inputs.profiles, dtype=object).reshape(len(inputs.batch), inputs.rollouts)
    reward, parts = bump_rewards(profiles, positives, held, inputs.batch, inputs.grid(inputs.completion_tokens),
                                 _llm_ranker(inputs, judge, max_new_tokens), config, inputs.seed, inputs.step,
                                 backward_pools=hard_negative_pools(np.stack(centroids), held, config.k))
    parts["positive_is_target"] = np.repeat(np.array(chosen_target, dtype=np.float64)[:, None], inputs.rollouts, axis=1)
    return reward, parts


@reward_term("bump_embedder", needs=("embedder",))
def _bump_embedder(inputs: RewardInputs, **options) -> TermResult:
    """BUMP with the frozen embedder's cosine as the judge (a labelled deviation for cheap CPU runs)."""
    return _bump(inputs, EmbedderJudge(inputs.embedder), options)


@dataclass(frozen=True)
class Term:
    """A registered reward term in a method: its weight and options (JSON values)."""

    name: str
    weight: float = 1.0
    options: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.name not in REWARD_TERMS:
            raise ValueError(f"unknown reward term {self.name!r}; registered: {sorted(REWARD_TERMS)}")

    def __hash__(self) -> int:
        return hash((self.name, self.weight, json.dumps(self.options, sort_keys=True)))


@dataclass(frozen=True)
class Method:
    """A trained profiler method: weighted reward terms and the advantage estimator. `drop_constant_groups`:
    users whose rollouts all got the same reward carry no signal and leave the loss (RLAIF)."""

    name: str
    terms: tuple[Term, ...]
    advantage: str = "group"
    drop_constant_groups: bool = False
    prompt: str = "profile"  # a key of profilekit.prompts.PROFILE_PROMPTS: the chat it asks with, how it reads the answer
    zero_shot: bool = False  # an untrained ablation row (DUET's "+Self-Prompt"): its prompt on the base weights
    # The fewest new tokens its completions need (DUET's two blocks of three tags: 192 on CPU, choice A5 #12);
    # raises the trainer's and the profile generation's budget, never lowers it.
    min_new_tokens: int | None = None
    # DUET A5 #5: the share of training prompts whose item block is blanked (seeded per example and step), so the
    # policy also learns the blank mode every target-agnostic use asks in; the judge still sees the item text.
    blank_item_prob: float = 0.0
    # BUMP B5 #1: P held-out events per example (the target and the history's last P - 1), an ablation only since it
    # shortens what the profiler sees; `training_examples(holdout_events=...)` builds the data.
    holdout_events: int = 1
    # Raised when the code's objective for this method changes, so its earlier checkpoints (run keys) are not
    # reused as if trained for the new one; in the fingerprint only when set, leaving the others' run keys alone.
    revision: int = 0

    def __post_init__(self):
        if self.prompt not in PROFILE_PROMPTS:
            raise ValueError(f"method {self.name!r} names unknown prompt {self.prompt!r}; known: {sorted(PROFILE_PROMPTS)}")
        if not 0.0 <= self.blank_item_prob <= 1.0:
            raise ValueError(f"blank_item_prob must be within [0, 1], got {self.blank_item_prob}")
        if self.blank_item_prob and not PROFILE_PROMPTS[self.prompt].item_aware:
            raise ValueError(f"method {self.name!r}: blank_item_prob needs an item-aware prompt, not {self.prompt!r}")
        if self.holdout_events < 1:
            raise ValueError(f"holdout_events must be >= 1, got {self.holdout_events}")
        if self.advantage not in ADVANTAGES:
            raise ValueError(f"advantage must be one of {ADVANTAGES}, got {self.advantage!r}")
        if not self.terms:
            raise ValueError(f"method {self.name!r} has no reward term")

    @property
    def needs(self) -> frozenset[str]:
        """The models its reward needs besides the sampled profiles."""
        return frozenset().union(*(REWARD_TERMS[t.name].needs for t in self.terms))

    def rewards(self, inputs: RewardInputs) -> tuple[np.ndarray, dict[str, float]]:
        """Weighted sum [B, G] of the terms, and the batch mean of every term and part for the log."""
        total = np.zeros((len(inputs.batch), inputs.rollouts))
        logged: dict[str, float] = {}
        for term in self.terms:
            values, parts = REWARD_TERMS[term.name].compute(inputs, **term.options)
            total = total + term.weight * values
            logged[term.name] = float(np.mean(values))
            logged.update({f"{term.name}/{part}": float(np.mean(v)) for part, v in parts.items()})
        return total, logged

    def fingerprint(self) -> str:
        """Hash of everything that defines the objective (what observing `method_configs` reports)."""
        payload = {
            "terms": [{"name": t.name, "weight": t.weight, "options": t.options} for t in self.terms],
            "advantage": self.advantage,
            "drop_constant_groups": self.drop_constant_groups,
            "prompt": self.prompt,
        }
        # Only when set, so the fingerprints (and run keys) of the methods without them stay as they were.
        if self.zero_shot:
            payload["zero_shot"] = True
        if self.min_new_tokens is not None:
            payload["min_new_tokens"] = self.min_new_tokens
        if self.blank_item_prob:
            payload["blank_item_prob"] = self.blank_item_prob
        if self.holdout_events != 1:
            payload["holdout_events"] = self.holdout_events
        if self.revision:
            payload["revision"] = self.revision
        scaffold = PROFILE_PROMPTS[self.prompt].scaffold
        if scaffold is not None:
            payload["scaffold"] = asdict(scaffold)
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _blue(name: str, text: bool = True, emb: bool = True, advantage: str = "group", views=VIEWS,
          directions=DIRECTIONS) -> Method:
    """BLUE, or one of its Table-6 ablations (a term, a view or a direction switched off, or REINFORCE++)."""
    check_views_and_directions(tuple(views), tuple(directions))
    embedding = Term("blue_embedding",
                     options={"views": list(views), "directions": list(directions), "temperature": BLUE_TEMPERATURE})
    terms = ((embedding,) if emb else ()) + ((Term("self_multiple_choice"),) if text else ())
    # Revision 1: a single direction keeps METHOD §3's ½ (it had the weight of both before).
    return Method(name, terms, advantage, revision=1 if len(directions) < len(DIRECTIONS) else 0)


def _duet(name: str, zero_shot: bool = False, prompt: str = "duet", **options) -> Method:
    """DUET (DUET_BUMP A): the joint user+item prompt, rewarded by the judge's rating error; every (choice) an
    option of the term (strict parser, penalty -1, any number within the scale, judge without 10H). `prompt`
    "duet" has the sampler write the six tags (a choice: `prompts.DUET_SCAFFOLD`), "duet-free" leaves them to the
    model as specified."""
    defaults = {"parser": "strict", "penalty": -1.0, "two_decimals": False, "judge_sees_recent": False,
                "max_new_tokens": 16}
    return Method(name, (Term("duet_rating", options={**defaults, **options}),), prompt=prompt, zero_shot=zero_shot,
                  min_new_tokens=192)


def _bump_method(name: str, term: str = "bump", holdout_events: int = 1, **options) -> Method:
    """BUMP (DUET_BUMP B) or an ablation: the plain profile prompt; BumpConfig's defaults unless overridden;
    `holdout_events` P > 1 holds out the history's last P - 1 events with the target."""
    defaults = {"k": 8, "m_perm": 2, "w_fwd": 1.0, "w_bwd": 1.0, "combine": "sum", "backward_rollout": "same",
                "length_threshold": 64, "length_weight": 1.0}
    if term in ("bump", "bump_plus"):  # the LLM judge's own options (every value in the options, so the fingerprint sees it)
        defaults.update(judge="listwise", max_new_tokens=32)
    if term == "bump_plus":
        defaults.update(q=3)
    return Method(name, (Term(term, options={**defaults, **options}),), holdout_events=holdout_events)


# Every method of the paper's comparison and its Table-6 ablation, then DUET and BUMP with their ablations.
METHODS: dict[str, Method] = {
    m.name: m
    for m in [
        _blue("blue"),
        Method("rlaif", (Term("judge_score"),), drop_constant_groups=True),
        Method("rlpf", (Term("judge_multiple_choice"),)),
        Method("langptune", (Term("ndcg"),)),
        _blue("blue-no-text", text=False),
        _blue("blue-no-emb", emb=False),
        _blue("blue-p-view", views=["P"]),
        _blue("blue-10hp-view", views=["10H+P"]),
        _blue("blue-u2i", directions=["u2i"]),
        _blue("blue-i2u", directions=["i2u"]),
        _blue("blue-reinforcepp", advantage="batch"),
        _duet("duet"),
        _duet("duet-zero-shot", zero_shot=True),
        _duet("duet-lenient", parser="lenient", prompt="duet-free"),
        _duet("duet-free", prompt="duet-free"),
        _bump_method("bump"),
        _bump_method("bump-forward", w_bwd=0.0),
        _bump_method("bump-backward", w_fwd=0.0),
        _bump_method("bump-no-length-penalty", length_weight=0.0),
        _bump_method("bump-m1", m_perm=1),
        _bump_method("bump-pointwise", judge="pointwise"),
        _bump_method("bump-embedder", term="bump_embedder"),
        _bump_method("bump-holdout3", holdout_events=3),
        _bump_method("bump-plus", term="bump_plus", holdout_events=3),
    ]
}
