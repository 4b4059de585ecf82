"""Personalized QA (METHOD §7): next-item multiple choice (accuracy) and rating prediction (MAE)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from profilekit.duet import RatingScale
from profilekit.llm.sampler import SamplingConfig
from profilekit.metrics import compare_with_reference, rating_metrics
from profilekit.profiler import ChatLM, GenerationCache
from profilekit.prompts import multiple_choice_messages, parse_choice, parse_rating, rating_messages
from profilekit.protocol import stable_user_hash

N_OPTIONS = 4


def question_sets(examples: pd.DataFrame, candidates: pd.DataFrame, items: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Per example: the target and the first 3 sampled negatives of its candidate set, in a seeded order."""
    texts = dict(zip(items["item_id"], items["text"]))
    cands = candidates[candidates["position"] < N_OPTIONS].sort_values(["user_id", "cut", "position"])
    grouped = cands.groupby(["user_id", "cut"])["item_id"].agg(list)
    rows = []
    for ex in examples.itertuples(index=False):
        ids = grouped.loc[(ex.user_id, ex.cut)]
        rng = np.random.default_rng([seed, stable_user_hash(ex.domain, f"qa\x1f{ex.user_id}\x1f{ex.cut}")])
        order = rng.permutation(len(ids))
        rows.append(
            {
                "domain": ex.domain,
                "user_id": ex.user_id,
                "cut": ex.cut,
                "options": [texts[ids[i]] for i in order],
                "answer_index": int(np.flatnonzero(order == 0)[0]),
                "target_text": texts[ids[0]],
                "target_rating": float(ex.target_rating),
            }
        )
    return pd.DataFrame(rows)


ANSWER_KEY = ["domain", "user_id", "cut", "method", "context"]


def _with_questions(contexts: pd.DataFrame, questions: pd.DataFrame) -> pd.DataFrame:
    """Each context row with its example's questions."""
    return contexts.merge(questions, on=["domain", "user_id", "cut"], how="inner", validate="many_to_one")


def answer_questions(
    judge: ChatLM,
    contexts: pd.DataFrame,
    questions: pd.DataFrame,
    config: SamplingConfig,
    fallback_rating: float,
    cache: GenerationCache | None = None,
    rating_range: tuple[float, float] = (1.0, 5.0),
) -> pd.DataFrame:
    """Ask the judge both questions for every context row; unparseable answers are flagged and scored as
    wrong (choice) or as `fallback_rating` (the domain's mean rating). A rating answer is the first number within
    `rating_range` (the domain's scale, so half-star domains read "0.5")."""
    merged = _with_questions(contexts, questions)
    mc = judge.generate([multiple_choice_messages(r.text, r.options) for r in merged.itertuples()], config, cache,
                        "QA choices")
    choices = [parse_choice(a, opts) for a, opts in zip(mc.texts, merged["options"])]
    out = merged[ANSWER_KEY].copy()
    out["mc_answer"] = mc.texts
    out["mc_parsed"] = [c is not None for c in choices]
    out["mc_correct"] = [float(c == a) if c is not None else 0.0 for c, a in zip(choices, merged["answer_index"])]
    ratings = _rating_answers(judge, merged, config, fallback_rating, cache, rating_range)
    return pd.concat([out.reset_index(drop=True), ratings], axis=1)


def answer_ratings(
    judge: ChatLM,
    contexts: pd.DataFrame,
    questions: pd.DataFrame,
    config: SamplingConfig,
    fallback_rating: float,
    cache: GenerationCache | None = None,
    rating_range: tuple[float, float] = (1.0, 5.0),
) -> pd.DataFrame:
    """The rating question alone, for contexts that must not answer the next-item question (DUET's target-mode
    `10H+P+Pi`: its profiles were written knowing the target); same prompt, parsing and fallback as
    `answer_questions`."""
    merged = _with_questions(contexts, questions)
    return pd.concat([merged[ANSWER_KEY].reset_index(drop=True), _rating_answers(judge, merged, config, fallback_rating, cache, rating_range)], axis=1)


def _rating_answers(judge, merged: pd.DataFrame, config, fallback_rating: float, cache, rating_range) -> pd.DataFrame:
    # No rows (a domain without DUET profiles) asks the judge nothing.
    texts = judge.generate([rating_messages(r.text, r.target_text) for r in merged.itertuples()], config, cache,
                           "QA ratings").texts if len(merged) else []
    ratings = [parse_rating(a, *rating_range) for a in texts]
    predicted = np.array([fallback_rating if r is None else r for r in ratings], dtype=np.float64)
    target = merged["target_rating"].to_numpy(np.float64)
    return pd.DataFrame({"rating_answer": pd.Series(texts, dtype=object),
                         "rating_parsed": np.array([r is not None for r in ratings], dtype=bool),
                         "rating_predicted": predicted, "target_rating": target,
                         "rating_abs_error": np.abs(predicted - target)})


def summarize_ratings(scores: pd.DataFrame, scale: RatingScale) -> pd.DataFrame:
    """DUET's home metrics for every method's rating answers: MAE, RMSE, accuracy and macro-F1 of the rounded
    rating per (domain, method, context); unparseable answers are scored at the fallback as in `qa_metrics`.
    `rating_mae_parsed` is the MAE of the answers the judge gave (NaN when none parsed): the fallback, the domain's
    mean rating, beats a weak judge's real answers, so a context that makes the judge stop answering (an empty
    profile) would otherwise look best."""
    rows = []
    for (domain, method, context), group in scores.groupby(["domain", "method", "context"], sort=False):
        values = rating_metrics(group["rating_predicted"].to_numpy(), group["target_rating"].to_numpy(), scale.low,
                                scale.high, scale.step)
        parsed = group["rating_parsed"].astype(bool).to_numpy()
        rows.append({"domain": domain, "method": method, "context": context, "n_examples": len(group),
                     **{f"rating_{k}": v for k, v in values.items()},
                     "rating_mae_parsed": float(group["rating_abs_error"].to_numpy()[parsed].mean()) if parsed.any() else np.nan,
                     "rating_unparsed": int((~parsed).sum())})
    return pd.DataFrame(rows)


RATING_REFERENCES = ("Base", "blue")


def rating_metrics_table(scores: pd.DataFrame, scale: RatingScale, references=RATING_REFERENCES) -> pd.DataFrame:
    """`summarize_ratings`, once per reference method (`vs_method`), with each row's paired tests of the per-example
    absolute rating error against that reference on the same examples (NaN where it is absent or the row itself)."""
    summary = summarize_ratings(scores, scale)
    key = ["domain", "method", "context"]
    return pd.concat(
        [summary.merge(compare_with_reference(scores, "rating_abs_error", ref), on=key, how="left").assign(vs_method=ref)
         for ref in references],
        ignore_index=True,
    )


def summarize_qa(scores: pd.DataFrame) -> pd.DataFrame:
    return (
        scores.groupby(["domain", "method", "context"], sort=False)
        .agg(
            n_examples=("mc_correct", "size"),
            mc_accuracy=("mc_correct", "mean"),
            rating_mae=("rating_abs_error", "mean"),
            mc_unparsed=("mc_parsed", lambda s: int((~s).sum())),
            rating_unparsed=("rating_parsed", lambda s: int((~s).sum())),
        )
        .reset_index()
    )
