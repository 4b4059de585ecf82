"""DUET (DUET_BUMP Part A): the target item's evidence for the joint user+item prompt, the rating scale, and the
fractional rating reward. Pure numpy / pandas; the reward term that calls the judge is in `profilekit.methods`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from profilekit.prompts import ItemEvidence
from profilekit.text import format_rating


@dataclass(frozen=True)
class RatingScale:
    """A domain's ratings: lowest, highest, and the step accuracy rounds to (1, or 0.5 for half stars)."""

    low: float = 1.0
    high: float = 5.0
    step: float = 1.0

    @property
    def gap(self) -> float:
        """DUET's M_r: the largest possible rating error."""
        return self.high - self.low


def rating_scale(ratings) -> RatingScale:
    """The scale the domain's ratings span (choice: observed, not the format's nominal range, so ml-1m is 1-5
    with M_r = 4 as in the paper although its file format allows half stars)."""
    values = np.asarray(ratings, dtype=np.float64)
    if values.size == 0:
        return RatingScale()
    step = 1.0 if np.allclose(values, np.round(values)) else 0.5
    return RatingScale(float(values.min()), float(values.max()), step)


def item_evidence(examples: pd.DataFrame, interactions: pd.DataFrame, items: pd.DataFrame, k: int = 10) -> list[ItemEvidence]:
    """Per example: the target item's text and the `k` latest ratings of it by *other* users strictly before the
    target's timestamp (DUET_BUMP A5 #4), as `[User j | rating]` lines with their mean. Nothing at or after the
    target time can enter, so the prompt carries no information from the future of the example."""
    texts = dict(zip(items["item_id"], items["text"]))
    ordered = interactions.sort_values(["item_id", "timestamp", "seq"], kind="stable")
    by_item = {
        item: (rows["user_id"].to_numpy(), rows["rating"].to_numpy(np.float64),
               rows["timestamp"].to_numpy(dtype="datetime64[ns]"))
        for item, rows in ordered.groupby("item_id", sort=False)
    }
    out = []
    for ex in examples.itertuples(index=False):
        users, ratings, stamps = by_item.get(ex.target_item_id, (np.array([]), np.array([]), np.array([], "datetime64[ns]")))
        before = np.searchsorted(stamps, pd.Timestamp(ex.target_timestamp).to_datetime64(), side="left")
        keep = np.flatnonzero(users[:before] != ex.user_id)[-k:] if k > 0 else np.array([], int)
        shown = ratings[keep]
        lines = tuple(f"[User {j + 1} | {format_rating(r)}]" for j, r in enumerate(shown))
        mean = float(shown.mean()) if len(shown) else None
        out.append(ItemEvidence(texts.get(ex.target_item_id, ex.target_item_id), lines, mean))
    return out


def blank_item_mask(example_ids, step: int, prob: float, seed: int = 0) -> np.ndarray:
    """Which training prompts of a step show a blank item block (`blank_item_prob`, DUET_BUMP A5 #5): one uniform
    draw per (seed, step, example), so a rerun or a resumed run blanks the same prompts, and an example is blanked
    in about `prob` of the steps it is drawn in. 0 blanks none and 1 every one."""
    draws = np.array([np.random.default_rng([seed, step, int(i)]).random() for i in example_ids])
    return draws < prob


def duet_reward(predicted: np.ndarray, valid: np.ndarray, target: np.ndarray, scale: RatingScale,
                penalty: float = -1.0) -> np.ndarray:
    """1 - |clip(ŷ) - y| / M_r where the completion parsed and the judge's rating did, `penalty` elsewhere
    (DUET Definition 2; the released code's -1 for a broken format or rating)."""
    predicted, valid = np.asarray(predicted, dtype=np.float64), np.asarray(valid, dtype=bool)
    clipped = np.clip(np.where(valid, predicted, scale.low), scale.low, scale.high)
    return np.where(valid, 1.0 - np.abs(clipped - np.asarray(target, dtype=np.float64)) / scale.gap, penalty)
