"""Prompts of the profiler and the QA judge (METHOD §2, §7), and parsing of the judge's answers.

Bump PROMPT_VERSION whenever a template changes: it is recorded with every generated profile.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

PROMPT_VERSION = "v1"

PROFILE_INSTRUCTION = (
    "Above is a user's interaction history, oldest first, as [item | rating out of 5]. "
    "Write a short profile of this user: summarise their preferences, interests and behavioural patterns "
    "in at most 200 words. Describe tastes (genres, themes, eras, what they rate high or low); do not list "
    "items one by one and do not invent items that are not in the history."
)

MC_INSTRUCTION = (
    "Which item will this user interact with next? Answer with the letter of one option only."
)
RATING_INSTRUCTION = "How would this user rate the item below, from 1 to 5? Answer with a single number only."
QUALITY_INSTRUCTION = (
    "Rate how well the profile above describes this user's preferences, judged against their history: "
    "accurate, specific and useful for recommending items. Answer with a single integer from 1 (useless) to 10 "
    "(excellent) only."
)


def profile_messages(history_lines: Sequence[str]) -> list[dict]:
    return [{"role": "user", "content": "History: " + ", ".join(history_lines) + "\n\n" + PROFILE_INSTRUCTION}]


@dataclass(frozen=True)
class ProfilePrompt:
    """How a method asks for a profile (history lines -> chat messages) and reads its completion (-> profile)."""

    messages: Callable[[Sequence[str]], list[dict]]
    parse: Callable[[str], str]


# The profile prompts a method can name (`Method.prompt`); the paper's methods all share the plain profile prompt.
PROFILE_PROMPTS: dict[str, ProfilePrompt] = {"profile": ProfilePrompt(profile_messages, str.strip)}


def options_block(options: Sequence[str]) -> str:
    return "\n".join(f"{chr(65 + i)}. {text}" for i, text in enumerate(options))


def multiple_choice_messages(context: str, options: Sequence[str]) -> list[dict]:
    return [{"role": "user", "content": f"User: {context}\n\n{MC_INSTRUCTION}\n{options_block(options)}\nAnswer:"}]


def rating_messages(context: str, item_text: str) -> list[dict]:
    return [{"role": "user", "content": f"User: {context}\n\n{RATING_INSTRUCTION}\nItem: {item_text}\nRating:"}]


def profile_quality_messages(history_text: str, profile: str) -> list[dict]:
    """RLAIF's judge prompt: the user's recent history and a candidate profile, to be scored 1-10."""
    return [{"role": "user", "content": f"History: {history_text}\n\nProfile: {profile}\n\n{QUALITY_INSTRUCTION}\nScore:"}]


_LETTER = re.compile(r"\b([A-D])\b")
_NUMBER = re.compile(r"(?<![\d.])([1-5](?:\.\d+)?)(?![\d.])")


def parse_choice(answer: str, options: Sequence[str]) -> int | None:
    """Index of the chosen option: a standalone letter A-D, else an option text quoted verbatim; else None."""
    match = _LETTER.search(answer)
    if match and ord(match.group(1)) - 65 < len(options):
        return ord(match.group(1)) - 65
    lowered = answer.lower()
    hits = [i for i, text in enumerate(options) if text.lower() in lowered]
    return hits[0] if len(hits) == 1 else None


_SCORE = re.compile(r"(?<![\d.])(10|[1-9])(?![\d])")


def parse_score(answer: str) -> int | None:
    """The first integer 1-10 in a judge's answer, else None."""
    match = _SCORE.search(answer)
    return int(match.group(1)) if match else None


def parse_rating(answer: str) -> float | None:
    match = _NUMBER.search(answer)
    return float(match.group(1)) if match else None
