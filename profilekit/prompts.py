"""Prompts of the profiler and the QA judge (METHOD §2, §7), DUET's joint user+item prompt and rating judge and
BUMP's listwise judges (DUET_BUMP A3, B3; our own wording), and parsing of every answer.

Bump PROMPT_VERSION whenever a template changes: it is recorded with every generated profile.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

PROMPT_VERSION = "v2"

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
class ItemEvidence:
    """What a joint user+item prompt (DUET) shows of the target item: its text and other users' ratings of it
    strictly before the target's timestamp (`[User k | rating]`, oldest first), with their mean."""

    text: str
    lines: tuple[str, ...] = ()
    mean_rating: float | None = None


@dataclass(frozen=True)
class TagScaffold:
    """A format's fixed text around free segments (`profilekit.llm.sampler.Scaffold` in a model's tokens):
    `pieces[0]`, segment 0, `pieces[1]`, ..., `pieces[n]`, with at most `budgets[i]` tokens in segment i. A segment
    ends where the model starts to write `stop_text` (a tag of its own), which is not kept."""

    pieces: tuple[str, ...]
    budgets: tuple[int, ...]
    stop_text: str = "<"


@dataclass(frozen=True)
class ProfilePrompt:
    """How a method asks for a profile (history lines [+ item evidence] -> chat messages) and reads its completion
    (-> the profile that every target-agnostic use sees). `item_aware` prompts take the target item's evidence in
    training; everywhere else they get None (DUET's blank item block), so the target cannot reach the profile."""

    messages: Callable[..., list[dict]]
    parse: Callable[[str], str]
    item_aware: bool = False
    scaffold: TagScaffold | None = None  # the format's tags, written by the sampler rather than the model

    def chat(self, history_lines: Sequence[str], item: ItemEvidence | None = None) -> list[dict]:
        return self.messages(history_lines, item) if self.item_aware else self.messages(history_lines)


DUET_SYSTEM = (
    "You build profiles for a recommender system. From rating histories, describe the user's rating habits "
    "(generous or strict, biases) and tastes, and the item's character and how it has been received. For the "
    "user and for the item, write first a cue (a few words naming one salient tendency), then a constructed "
    "prompt (one sentence saying which aspects the profile should cover), then the profile itself (one to three "
    "sentences that expand the cue as the constructed prompt asks). Do not copy the history. Output exactly one "
    "<user_profile> block and one <item_profile> block, each holding <cue>, <constructed_prompt> and <profile>, "
    "every tag closed, nothing outside the tags."
)
DUET_SKELETON = (
    "<user_profile>\n<cue></cue>\n<constructed_prompt></constructed_prompt>\n<profile></profile>\n</user_profile>\n"
    "<item_profile>\n<cue></cue>\n<constructed_prompt></constructed_prompt>\n<profile></profile>\n</item_profile>"
)
# (choice, beyond DUET_BUMP) DUET's six tags written by the sampler: SmolLM2-135M writes the structure in prose and
# never the tags (docs/RESULTS.md), so unscaffolded every reward is the format penalty. The model still writes
# every cue, constructed prompt and profile, each up to its budget (cue, prompt, profile: 12, 24, 48 tokens).
DUET_SCAFFOLD = TagScaffold(
    ("<user_profile>\n<cue>", "</cue>\n<constructed_prompt>", "</constructed_prompt>\n<profile>",
     "</profile>\n</user_profile>\n<item_profile>\n<cue>", "</cue>\n<constructed_prompt>",
     "</constructed_prompt>\n<profile>", "</profile>\n</item_profile>"),
    (12, 24, 48, 12, 24, 48),
)
NO_ITEM_EVIDENCE = "[no earlier ratings of this item]"


def _mean_text(value: float | None) -> str:
    return "none (no earlier ratings)" if value is None else f"{value:.1f}"


_LINE_RATING = re.compile(r"\|\s*([\d.]+)\]$")


def duet_profile_messages(history_lines: Sequence[str], item: ItemEvidence | None) -> list[dict]:
    """DUET's single-pass prompt: user block (cue -> constructed prompt -> profile) and item block, in one
    completion. `item=None` is the blank mode of every target-agnostic use: no title, no ratings of any item."""
    # The user's mean over the shown lines, as DUET's "User Avg Rating"; lines are ours (`[title | rating]`).
    ratings = [float(m.group(1)) for m in (_LINE_RATING.search(x) for x in history_lines) if m]
    item_title = item.text if item is not None else "(not given)"
    item_lines = ", ".join(item.lines) if item is not None and item.lines else NO_ITEM_EVIDENCE
    user = (
        "Task: write structured profiles of this user and of the item from the rating data below.\n\n"
        "User block: find a cue in the user's ratings (preferences, rating behaviour, any other dimension; a few "
        "words, no full sentence); turn it into a constructed prompt naming what the profile should describe "
        "(tendencies, main interests, dislikes, habits); then write the profile.\n"
        f"Item block (item: {item_title}): find a cue in how other users rated it (appeal, strengths, weaknesses, "
        "audience); turn it into a constructed prompt (character, reception, which users it suits); then write "
        "the profile.\n\n"
        f"User's ratings, oldest first, as [item | rating]: {', '.join(history_lines)}\n"
        f"Earlier ratings of the item by other users: {item_lines}\n"
        f"User mean rating: {_mean_text(sum(ratings) / len(ratings) if ratings else None)}\n"
        f"Item mean rating: {_mean_text(item.mean_rating if item is not None else None)}\n\n"
        f"Answer in exactly this format:\n{DUET_SKELETON}"
    )
    return [{"role": "system", "content": DUET_SYSTEM}, {"role": "user", "content": user}]


DUET_SCOPES = ("user_profile", "item_profile")
DUET_FIELDS = ("cue", "constructed_prompt", "profile")


def _tag(name: str, close: bool = False) -> re.Pattern:
    return re.compile(rf"<\s*{'/' if close else ''}\s*{name}\s*>", re.IGNORECASE)


def parse_duet(text: str) -> dict[str, dict[str, str | None]]:
    """The six fields of a DUET completion, `{"user": {cue, constructed_prompt, profile}, "item": {...}}`.

    Scope-aware and case-insensitive: a scope runs from its open tag to its close tag (or, unclosed, to the other
    scope's open tag or the end); inside it a field is the text up to the first matching close tag after its
    open tag. A field that is absent, unclosed or blank is None."""
    out: dict[str, dict[str, str | None]] = {}
    for scope, other in (DUET_SCOPES, DUET_SCOPES[::-1]):
        fields: dict[str, str | None] = dict.fromkeys(DUET_FIELDS)
        start = _tag(scope).search(text)
        if start:
            end = _tag(scope, close=True).search(text, start.end()) or _tag(other).search(text, start.end())
            body = text[start.end(): end.start() if end else len(text)]
            for name in DUET_FIELDS:
                opened = _tag(name).search(body)
                closed = _tag(name, close=True).search(body, opened.end()) if opened else None
                value = body[opened.end(): closed.start()].strip() if closed else ""
                fields[name] = value or None
        out[scope.split("_")[0]] = fields
    return out


DUET_PARSERS = ("strict", "lenient")


def duet_valid(parsed: dict[str, dict[str, str | None]], mode: str = "strict") -> bool:
    """strict: all six fields present (the released reward's format check); lenient: the two profiles only."""
    if mode not in DUET_PARSERS:
        raise ValueError(f"DUET parser mode must be one of {DUET_PARSERS}, got {mode!r}")
    needed = DUET_FIELDS if mode == "strict" else ("profile",)
    return all(parsed[s][f] is not None for s in ("user", "item") for f in needed)


_ANY_TAG = re.compile(r"<[^<>]*>")


def duet_user_profile(text: str) -> str:
    """The profile every target-agnostic use reads: the user block's <profile>; when the model broke the format,
    the completion without its tags (choice: an empty context would hide that the profiler said anything)."""
    profile = parse_duet(text)["user"]["profile"]
    return profile if profile is not None else " ".join(_ANY_TAG.sub(" ", text).split())


def duet_item_profile(text: str) -> str:
    """The item block's <profile> of a target-mode completion, "" when the model did not write one (the native
    rating row then reads the user profile and 10H alone; no fallback to raw text, which may echo the prompt)."""
    return parse_duet(text)["item"]["profile"] or ""


DUET_JUDGE_INSTRUCTION = (
    "Predict the rating this user would give the item, from {low:.2f} to {high:.2f}, using only the profiles "
    "below; treat the profiles as the main evidence and use the whole scale with 0.01 precision. Answer with "
    "exactly one tag holding a number with two decimals, e.g. <rating>{example:.2f}</rating>, and nothing else."
)


def duet_rating_example(low: float, high: float) -> float:
    """The rating the judge's instruction shows as its format example (4.36 on a 1-5 scale)."""
    return round(low + 0.84 * (high - low), 2)


def duet_rating_messages(user_profile: str, item_profile: str, item_text: str, low: float = 1.0, high: float = 5.0,
                         recent: str | None = None) -> list[dict]:
    """DUET's rating judge. The training reward shows both profiles and the item text (the released judge);
    `recent` adds the user's 10 latest ratings (the paper's evaluation predictor, `judge_sees_recent`)."""
    history = f"Recent ratings: {recent}\n" if recent else ""
    instruction = DUET_JUDGE_INSTRUCTION.format(low=low, high=high, example=duet_rating_example(low, high))
    content = (f"Item: {item_text}\n{history}User profile: {user_profile}\nItem profile: {item_profile}\n\n"
               f"{instruction}\nRating:")
    return [{"role": "user", "content": content}]


_TWO_DECIMALS = re.compile(r"(?<![\d.])(\d\.\d{2})(?![\d.])")


def parse_duet_rating(answer: str, low: float = 1.0, high: float = 5.0, two_decimals: bool = False) -> float | None:
    """The judge's rating: inside <rating> when present, else the whole answer; `two_decimals` accepts only
    numbers written as d.dd (the released regex), otherwise any number within the scale."""
    tagged = re.search(r"<\s*rating\s*>(.*?)<\s*/\s*rating\s*>", answer, re.IGNORECASE | re.DOTALL)
    body = tagged.group(1) if tagged else answer
    if not two_decimals:
        return parse_rating(body, low, high)
    for match in _TWO_DECIMALS.finditer(body):
        if low <= float(match.group(1)) <= high:
            return float(match.group(1))
    return None


# The profile prompts a method can name (`Method.prompt`): the plain profile prompt of the paper's methods and
# BUMP, and DUET's joint user+item prompt with its tags scaffolded, or as specified (the model writes the tags).
PROFILE_PROMPTS: dict[str, ProfilePrompt] = {
    "profile": ProfilePrompt(profile_messages, str.strip),
    "duet": ProfilePrompt(duet_profile_messages, duet_user_profile, item_aware=True, scaffold=DUET_SCAFFOLD),
    "duet-free": ProfilePrompt(duet_profile_messages, duet_user_profile, item_aware=True),
}


BUMP_FORWARD_INSTRUCTION = (
    "Above is a description of a user, then numbered interactions. Order all the interactions from the one this "
    "user most likely made to the least likely. Answer only with the numbers joined by ' > '."
)
BUMP_BACKWARD_INSTRUCTION = (
    "Above is one interaction, then numbered user descriptions. Order all the descriptions from the user who most "
    "likely made this interaction to the least likely. Answer only with the numbers joined by ' > '."
)


def _numbered(texts: Sequence[str]) -> str:
    return "\n".join(f"[{k + 1}] {t}" for k, t in enumerate(texts))


def bump_forward_messages(profile: str, interactions: Sequence[str]) -> list[dict]:
    """BUMP forward judge: rank held-out interactions for one profile."""
    return [{"role": "user", "content": f"User: {profile}\n\n{_numbered(interactions)}\n\n{BUMP_FORWARD_INSTRUCTION}\nRanking:"}]


def bump_backward_messages(interaction: str, profiles: Sequence[str]) -> list[dict]:
    """BUMP backward judge: rank user profiles for one held-out interaction."""
    return [{"role": "user", "content": f"Interaction: {interaction}\n\n{_numbered(profiles)}\n\n{BUMP_BACKWARD_INSTRUCTION}\nRanking:"}]


BUMP_POINTWISE_INSTRUCTION = {
    "forward": "Did this user make this interaction? Answer Yes or No.",
    "backward": "Was this interaction made by the user described? Answer Yes or No.",
}


def bump_pointwise_messages(direction: str, query: str, candidate: str) -> list[dict]:
    """BUMP's pointwise judge (a labelled deviation): one (query, candidate) pair, answered Yes or No."""
    user, interaction = (query, candidate) if direction == "forward" else (candidate, query)
    return [{"role": "user", "content": f"User: {user}\nInteraction: {interaction}\n\n"
                                        f"{BUMP_POINTWISE_INSTRUCTION[direction]}\nAnswer:"}]


_LABEL = re.compile(r"\d+")


def parse_ranking(answer: str, n: int) -> list[int]:
    """The candidates (0-based) a listwise judge ranked, best first: labels 1..n in order of first appearance,
    invalid and repeated labels dropped. Candidates it left out are not in the list (see `positive_rank`)."""
    seen: list[int] = []
    for match in _LABEL.finditer(answer):
        label = int(match.group()) - 1
        if 0 <= label < n and label not in seen:
            seen.append(label)
    return seen


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
_NUMBER = re.compile(r"(?<![\d.])(\d+(?:\.\d+)?)(?![\d.])")


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


def parse_rating(answer: str, low: float = 1.0, high: float = 5.0) -> float | None:
    """The first number within the rating scale [low, high] (half-star scales read "0.5"), else None."""
    for match in _NUMBER.finditer(answer):
        if low <= float(match.group(1)) <= high:
            return float(match.group(1))
    return None
