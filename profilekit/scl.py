"""Supervised contrastive adaptation of the embedder (SCL, METHOD §6): the profiler is frozen; the embedder is
fine-tuned on (user text, next item text) pairs with in-batch negatives, L = ½(L_user→item + L_item→user), each
an InfoNCE at temperature τ.

sentence-transformers computes exactly this loss with `MultipleNegativesRankingLoss(directions=("query_to_doc",
"doc_to_query"), partition_mode="per_direction", scale=1/τ)` over cosine similarities (tests/test_scl.py checks it
against `symmetric_infonce`, the formula written out), so its trainer does the training.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from profilekit.contexts import profile_views
from profilekit.progress import progress_enabled
from profilekit.text import example_history_lines, recent_history_text

HISTORY = "history"  # the context method without a profile: 10-H alone
PAIR_COLUMNS = ["domain", "user_id", "cut", "method", "context", "anchor", "positive", "target_item_id"]


@dataclass(frozen=True)
class SCLConfig:
    """CPU defaults; the paper's values in comments."""

    batch_size: int = 16  # paper: 512
    learning_rate: float = 5e-5  # paper: 1e-6 (a few hundred CPU pairs need a larger step)
    epochs: int = 1  # paper: 1
    max_seq_length: int = 256  # tokens of the user text and of the item text
    temperature: float = 0.07  # paper: 0.07
    warmup_ratio: float = 0.1
    seed: int = 0


# The paper's SCL budgets (METHOD §6), used by the gcp environment.
PAPER_SCL = SCLConfig(batch_size=512, learning_rate=1e-6, epochs=1)


def symmetric_infonce(users, items, temperature: float):
    """½(CE(user_i → items) + CE(item_i → users)) over cosine similarities / τ; row i of each is a positive pair."""
    import torch
    import torch.nn.functional as F

    logits = F.normalize(users, dim=-1) @ F.normalize(items, dim=-1).T / temperature
    labels = torch.arange(len(users), device=users.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


def scl_loss(model, temperature: float):
    """sentence-transformers' symmetric in-batch InfoNCE (equal to `symmetric_infonce`)."""
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    return MultipleNegativesRankingLoss(
        model, scale=1.0 / temperature, directions=("query_to_doc", "doc_to_query"), partition_mode="per_direction"
    )


def training_pairs(examples: pd.DataFrame, items: pd.DataFrame, profiles: pd.DataFrame | None, recent_k: int, method: str) -> pd.DataFrame:
    """(user text, target item text) per example: 10-H for the history method, 10H+P for a profile method (only
    examples that have a profile). The item text is the one the item embeddings encode."""
    titles = dict(zip(items["item_id"], items["title"]))
    texts = dict(zip(items["item_id"], items["text"]))
    by_key = profiles.set_index(["user_id", "cut"])["profile"] if profiles is not None else None
    rows = []
    for ex in examples.itertuples(index=False):
        recent = recent_history_text(example_history_lines(ex, titles), recent_k)
        if by_key is None:
            context, anchor = "10-H", recent
        else:
            profile = by_key.get((ex.user_id, ex.cut))
            if profile is None:
                continue
            context, anchor = "10H+P", profile_views([recent], [profile])["10H+P"][0]
        rows.append((ex.domain, ex.user_id, ex.cut, method, context, anchor, texts[ex.target_item_id], ex.target_item_id))
    return pd.DataFrame(rows, columns=PAIR_COLUMNS)


def scl_run_key(config: SCLConfig, base_version: str, pairs_version: str) -> str:
    """Names a training run: the same pairs, base embedder and budgets give the same run (trained once)."""
    payload = json.dumps({"config": asdict(config), "base": base_version, "pairs": pairs_version}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


@dataclass
class SCLResult:
    path: Path
    trained_now: bool
    steps: int
    seconds: float
    log: list[dict] = field(default_factory=list)


def _log_path(output_dir: Path) -> Path:
    """Beside the model folder, so the folder's content hash (the adapted embedder's version) is the weights'."""
    return output_dir.with_name(f"{output_dir.name}.log.json")


def train_scl(
    base_model_path: Path | str,
    anchors: list[str],
    positives: list[str],
    config: SCLConfig,
    output_dir: Path,
    log: Callable[[str], None] = print,
) -> SCLResult:
    """Fine-tune the sentence-transformers model at `base_model_path` on the pairs and save it to `output_dir`
    (a complete sentence-transformers folder, written atomically). A finished run is not trained again."""
    output_dir = Path(output_dir)
    if _log_path(output_dir).exists() and output_dir.is_dir():
        history = json.loads(_log_path(output_dir).read_text())
        return SCLResult(output_dir, False, int(history["steps"]), float(history["seconds"]), history["log"])
    if len(anchors) < 2:
        raise ValueError(f"SCL needs at least 2 (user, item) pairs for in-batch negatives, got {len(anchors)}")

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.base.sampler import BatchSamplers
    from transformers import TrainerCallback

    records: list[dict] = []

    class _Progress(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                records.append({"step": state.global_step, **{k: float(v) for k, v in logs.items()}})
                log(f"SCL step {state.global_step}/{state.max_steps}: loss {logs['loss']:.4f}")

    model = SentenceTransformer(str(base_model_path), device="cpu", local_files_only=True)
    model.max_seq_length = config.max_seq_length
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        args = SentenceTransformerTrainingArguments(
            output_dir=scratch,
            per_device_train_batch_size=config.batch_size,
            learning_rate=config.learning_rate,
            num_train_epochs=config.epochs,
            warmup_steps=config.warmup_ratio,  # a float below 1 is a fraction of the steps (transformers 5)
            seed=config.seed,
            # A repeated item (or user text) inside a batch would be its own false negative.
            batch_sampler=BatchSamplers.NO_DUPLICATES,
            logging_steps=1,
            save_strategy="no",
            report_to=[],
            use_cpu=True,
            disable_tqdm=not progress_enabled(),
        )
        trainer = SentenceTransformerTrainer(
            model=model,
            args=args,
            train_dataset=Dataset.from_dict({"anchor": list(anchors), "positive": list(positives)}),
            loss=scl_loss(model, config.temperature),
            callbacks=[_Progress()],
        )
        state = trainer.train()
    seconds = time.perf_counter() - started
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    partial = output_dir.with_name(f".{output_dir.name}.partial")
    for stale in (partial, output_dir):  # left by a run killed before it wrote its log
        shutil.rmtree(stale, ignore_errors=True)
    model.save(str(partial), create_model_card=False)  # the card embeds run times: the folder hash must not
    partial.rename(output_dir)
    summary = json.dumps({"steps": state.global_step, "seconds": seconds, "log": records})
    tmp = _log_path(output_dir).with_suffix(".tmp")
    tmp.write_text(summary)
    tmp.replace(_log_path(output_dir))
    return SCLResult(output_dir, True, int(state.global_step), seconds, records)
