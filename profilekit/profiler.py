"""Chat-model text generation in batches (profiles, QA answers) on top of the JAX sampler."""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from profilekit.llm.grpo_step import completion_logps
from profilekit.llm.model import load_lm
from profilekit.llm.sampler import Sampler, SamplingConfig, Scaffold
from profilekit.progress import progress_bar
from profilekit.prompts import PROFILE_PROMPTS, ItemEvidence, ProfilePrompt, TagScaffold, duet_item_profile
from profilekit.sources import dir_content_hash
from profilekit.text import example_history_lines, fit_lines_to_budget


@dataclass
class GeneratedTexts:
    texts: list[str]
    prompt_tokens: list[int]
    completion_tokens: list[int]
    seconds: list[float]  # per text: its batch's wall time split evenly over the batch (when it was generated)
    generated_now: int = 0  # the rest came from the cache


CACHE_FLUSH_TEXTS = 64  # generated texts between two writes of the generation cache


class GenerationCache:
    """Generated texts keyed by (model version, sampling config, prompt token ids), in append-only JSON shards.

    A nightly refresh re-materializes a domain's profiles, but only prompts that changed (a user with new
    interactions) reach the model; re-running the same night generates nothing and returns identical texts.
    """

    def __init__(self, root: Path | str, model_version: str):
        self.dir = Path(root) / model_version
        self.dir.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def key(prompt: list[int], config: SamplingConfig) -> str:
        settings = asdict(config)
        if settings["scaffold"] is None:  # so the keys of every unscaffolded text stay as they were
            del settings["scaffold"]
        payload = json.dumps([settings, prompt], sort_keys=True).encode()
        return hashlib.sha256(payload).hexdigest()[:32]

    def load(self) -> dict[str, dict]:
        table: dict[str, dict] = {}
        for shard in sorted(self.dir.glob("*.json")):
            table.update(json.loads(shard.read_text()))
        return table

    def add(self, entries: dict[str, dict]) -> None:
        if entries:
            tmp = self.dir / f".{uuid.uuid4().hex}.json"
            tmp.write_text(json.dumps(entries))
            tmp.rename(self.dir / f"{uuid.uuid4().hex}.json")


class ChatLM:
    """A chat model (tokenizer + chat template from transformers, weights in JAX) that answers message lists."""

    def __init__(self, weights_dir: Path | str, dtype: str = "float32", mesh=None, batch_size: int = 8):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoTokenizer

        self.weights_dir = Path(weights_dir)
        self.version = dir_content_hash(self.weights_dir)
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.weights_dir))
        self.lm = load_lm(self.weights_dir, dtype=dtype, mesh=mesh)
        eos = {self.tokenizer.eos_token_id}
        gen_eos = _generation_eos(self.weights_dir)
        eos |= gen_eos
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self.sampler = Sampler(self.lm, sorted(e for e in eos if e is not None), pad, mesh=mesh)
        self.batch_size = batch_size
        self._scaffolds: dict[TagScaffold, Scaffold] = {}

    def scaffold(self, spec: TagScaffold | None) -> Scaffold | None:
        """A prompt's tag scaffold in this model's tokens: every token whose text holds the stop text ends a free
        segment, and none of them nor a whitespace-only token starts one."""
        if spec is None:
            return None
        if spec not in self._scaffolds:
            vocab = self.tokenizer.batch_decode([[i] for i in range(len(self.tokenizer))])
            forced = tuple(tuple(self.tokenizer.encode(piece, add_special_tokens=False)) for piece in spec.pieces)
            # Ids the model has beyond the tokenizer's (padded embeddings) decode to nothing: they stop a segment too.
            model_vocab = int(getattr(getattr(self.lm.model, "config", None), "vocab_size", len(vocab)))
            stops = tuple(i for i, text in enumerate(vocab) if spec.stop_text in text) + tuple(range(len(vocab), model_vocab))
            blanks = tuple(i for i, text in enumerate(vocab) if not text.strip())
            self._scaffolds[spec] = Scaffold(forced, spec.budgets, stops, blanks)
        return self._scaffolds[spec]

    def sampling_for(self, prompt: ProfilePrompt, config: SamplingConfig) -> SamplingConfig:
        """`config` as `prompt` samples: with its scaffold, if it has one, fitted to `config.max_new_tokens`."""
        scaffold = self.scaffold(prompt.scaffold)
        return replace(config, scaffold=None if scaffold is None else scaffold.fit(config.max_new_tokens))

    def count_tokens(self, texts: list[str]) -> list[int]:
        return [len(ids) for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"]]

    def encode_chat(self, messages: list[dict]) -> list[int]:
        ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        return list(ids["input_ids"] if hasattr(ids, "keys") else ids)

    def generate(
        self,
        conversations: list[list[dict]],
        config: SamplingConfig,
        cache: GenerationCache | None = None,
        progress: str | None = None,
    ) -> GeneratedTexts:
        """Answers in input order; prompts are batched by length so padding stays small. With a cache, prompts
        answered before (same model, sampling config and tokens) are not generated again. `progress`: the label of
        a progress bar over the texts generated now (none for the short calls inside a training step)."""
        prompts = [self.encode_chat(m) for m in conversations]
        texts, completion, seconds = [""] * len(prompts), [0] * len(prompts), [0.0] * len(prompts)
        keys = [GenerationCache.key(p, config) for p in prompts]
        known = cache.load() if cache is not None else {}
        todo = []
        for i, k in enumerate(keys):
            if k in known:
                texts[i], completion[i], seconds[i] = known[k]["text"], known[k]["tokens"], known[k]["seconds"]
            else:
                todo.append(i)
        order = [todo[j] for j in np.argsort([len(prompts[i]) for i in todo], kind="stable")]
        unsaved: list[int] = []

        def save() -> None:
            if cache is not None:
                cache.add({keys[i]: {"text": texts[i], "tokens": completion[i], "seconds": seconds[i]} for i in unsaved})
            unsaved.clear()

        with progress_bar(len(order), progress or "", "text", enabled=progress is not None and bool(order)) as bar:
            for start in range(0, len(order), self.batch_size):
                idx = order[start : start + self.batch_size]
                started = time.perf_counter()
                out = self.sampler.generate([prompts[i] for i in idx], config)
                share = (time.perf_counter() - started) / len(idx)
                for i, toks in zip(idx, out.tokens):
                    texts[i] = self.tokenizer.decode(toks, skip_special_tokens=True).strip()
                    completion[i] = len(toks)
                    seconds[i] = share
                bar.update(len(idx))
                unsaved.extend(idx)
                # An evaluation of a thousand users runs for half an hour: what it generated survives an
                # interruption, and the rerun only generates the rest.
                if len(unsaved) >= CACHE_FLUSH_TEXTS:
                    save()
        save()
        return GeneratedTexts(texts, [len(p) for p in prompts], completion, seconds, generated_now=len(order))


    def continuation_logps(self, conversations: list[list[dict]], continuations: list[list[int]],
                           bucket: int = 16) -> np.ndarray:
        """Per-token log-probs [N, K, T] of each of the K same-length token `continuations` after each
        conversation's prompt: one prefill per conversation, shared by its K continuations."""
        answers = np.asarray(continuations, np.int32)
        prompts = [self.encode_chat(m) for m in conversations]
        pad = self.sampler.pad_id
        out = np.zeros((len(prompts), *answers.shape))
        for start in range(0, len(prompts), self.batch_size):
            chunk = prompts[start: start + self.batch_size]
            width = -(-max(map(len, chunk)) // bucket) * bucket
            tokens, valid = np.full((len(chunk), width), pad, np.int32), np.zeros((len(chunk), width), bool)
            for i, ids in enumerate(chunk):
                tokens[i, width - len(ids):], valid[i, width - len(ids):] = ids, True
            logps = completion_logps(self.lm.model, tokens, valid, np.tile(answers, (len(chunk), 1)),
                                     samples=len(answers), remat=False)
            out[start: start + len(chunk)] = np.asarray(logps).reshape(len(chunk), *answers.shape)
        return out

    def yes_no_logodds(self, conversations: list[list[dict]], yes: str = "Yes", no: str = "No") -> np.ndarray:
        """log p(yes) - log p(no) of the first answer token of each conversation (BUMP's pointwise judge)."""
        pair = [[self.tokenizer.encode(word, add_special_tokens=False)[0]] for word in (yes, no)]
        logps = self.continuation_logps(conversations, pair)
        return logps[:, 0, 0] - logps[:, 1, 0]


def _generation_eos(weights_dir: Path) -> set[int]:
    path = weights_dir / "generation_config.json"
    if not path.exists():
        return set()
    eos = json.loads(path.read_text()).get("eos_token_id")
    return set(eos if isinstance(eos, list) else [eos]) - {None}


def profile_conversations(
    examples: pd.DataFrame, items: pd.DataFrame, count_tokens, history_budget: int,
    prompt: ProfilePrompt = PROFILE_PROMPTS["profile"], evidence: list[ItemEvidence] | None = None,
) -> list[list[dict]]:
    """One profiler chat per example: the newest whole history lines that fit `history_budget` tokens. An
    item-aware prompt gets the example's target item `evidence` when given (training) and a blank item block
    otherwise (every target-agnostic use: generated profiles for N@10, multiple choice, SCL)."""
    titles = dict(zip(items["item_id"], items["title"]))
    return [
        prompt.chat(fit_lines_to_budget(example_history_lines(ex, titles), history_budget, count_tokens),
                    evidence[k] if evidence is not None else None)
        for k, ex in enumerate(examples.itertuples(index=False))
    ]


def generate_profiles(
    chat: ChatLM,
    examples: pd.DataFrame,
    items: pd.DataFrame,
    history_budget: int,
    config: SamplingConfig,
    cache: GenerationCache | None = None,
    progress: str | None = "profiles",
    prompt: ProfilePrompt = PROFILE_PROMPTS["profile"],
) -> tuple[pd.DataFrame, int]:
    """Profiles of the given examples (one row each) with the method's prompt, and how many were generated now."""
    conversations = profile_conversations(examples, items, chat.count_tokens, history_budget, prompt)
    out = chat.generate(conversations, chat.sampling_for(prompt, config), cache, progress)
    frame = pd.DataFrame(
        {
            "domain": examples["domain"].to_numpy(),
            "user_id": examples["user_id"].to_numpy(),
            "cut": examples["cut"].to_numpy(),
            "profile": [prompt.parse(t) for t in out.texts],
            "prompt_tokens": out.prompt_tokens,
            "profile_tokens": out.completion_tokens,
            "seconds": out.seconds,
        }
    )
    return frame, out.generated_now


def generate_target_profiles(
    chat: ChatLM,
    examples: pd.DataFrame,
    items: pd.DataFrame,
    evidence: list[ItemEvidence],
    history_budget: int,
    config: SamplingConfig,
    cache: GenerationCache | None = None,
    prompt: ProfilePrompt = PROFILE_PROMPTS["duet"],
) -> tuple[pd.DataFrame, int]:
    """DUET's target-mode profiles (DUET_BUMP A5 #5 `item_mode=target`): per example, the joint prompt with its
    target item's `evidence` (`duet.item_evidence`), and the user and item <profile> of the completion. They know
    the target, so they may only feed the rating question about that target (`contexts.duet_rating_contexts`),
    never N@10, multiple choice or SCL; with each one's generation seconds (`target_seconds`, the cost of item
    conditioning); and how many were generated now."""
    if not prompt.item_aware:
        raise ValueError("target-mode profiles need an item-aware prompt (DUET's)")
    conversations = profile_conversations(examples, items, chat.count_tokens, history_budget, prompt, evidence)
    out = chat.generate(conversations, chat.sampling_for(prompt, config), cache, "target-mode profiles")
    frame = pd.DataFrame({
        "domain": examples["domain"].to_numpy(),
        "user_id": examples["user_id"].to_numpy(),
        "cut": examples["cut"].to_numpy(),
        "target_user_profile": [prompt.parse(t) for t in out.texts],
        "target_item_profile": [duet_item_profile(t) for t in out.texts],
        "target_seconds": out.seconds,
    })
    return frame, out.generated_now
