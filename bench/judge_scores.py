"""Can RLAIF's judge tell profiles apart? Its prompt (`prompts.profile_quality_messages`) on the Base profiles of a
domain's evaluated users, each against the user's own 10-H, and on three controls for the same history: another
user's Base profile, random letters, and an empty profile. Per kind: the greedy answer's parsed 1-10 score (RLAIF's
reward, `rewards.judge_score_reward` maps it to [0, 1]) and the judge's expected score over its first answer
tokens (digits 1-9, and 10 as "1" then "0"), which varies even when the greedy answer does not. A judge that can
serve as RLAIF's must score a user's own profile above the controls, on the same history.

    .venv/bin/python bench/judge_scores.py [--judge DIR] [--domain ml-1m] [--users 24]

Reads the warehouse of PROFILEKIT_DATA_DIR (the domain's base_profiles, filtered_histories and items: `make run`
first). A measurement, not a test: it depends on the judge and the profiles.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def expected_scores(chat, conversations: list[list[dict]]) -> np.ndarray:
    """E[score] per conversation under the judge's first answer tokens, renormalised over the scores 1-10:
    P(d) = p(d) for d = 2..9, P(10) = p("1") p("0" | "1"), P(1) = p("1") (1 - p("0" | "1"))."""
    digit = [chat.tokenizer.encode(str(d), add_special_tokens=False)[0] for d in range(10)]
    logps = chat.continuation_logps(conversations, [[digit[d], digit[0]] for d in range(1, 10)])
    first = np.exp(logps[:, :, 0])
    ten = first[:, 0] * np.exp(logps[:, 0, 1])
    p = np.concatenate([(first[:, 0] - ten)[:, None], first[:, 1:], ten[:, None]], axis=1)
    return (p * np.arange(1, 11)).sum(axis=1) / p.sum(axis=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--judge", type=Path, default=None, help="HF-layout judge dir (default: the packaged SmolLM2)")
    parser.add_argument("--domain", default="ml-1m")
    parser.add_argument("--users", type=int, default=24)
    parser.add_argument("--dtype", default="bfloat16", help="the judge's weights (the judge_llm resource's default)")
    args = parser.parse_args()

    import duckdb
    from scipy import stats

    from profilekit.profiler import ChatLM
    from profilekit.prompts import parse_score, profile_quality_messages
    from profilekit.protocol import Protocol
    from profilekit.text import history_lines, recent_history_text
    from profilekit.training import GREEDY_ANSWER
    from resources.settings import data_dir, warehouse_path
    from resources.warehouse import WAREHOUSE_SCHEMA

    with duckdb.connect(warehouse_path(), read_only=True) as con:
        profiles = con.execute(
            f"SELECT p.user_id, p.cut, p.profile, h.history_items, h.history_ratings FROM {WAREHOUSE_SCHEMA}.base_profiles p "
            f"JOIN {WAREHOUSE_SCHEMA}.filtered_histories h USING (domain, user_id, cut) WHERE p.domain = ? "
            "ORDER BY p.user_id, p.cut LIMIT ?", [args.domain, args.users]).fetchdf()
        titles = dict(con.execute(f"SELECT item_id, title FROM {WAREHOUSE_SCHEMA}.items WHERE domain = ?",
                                  [args.domain]).fetchall())
    if len(profiles) < 2:
        raise SystemExit(f"fewer than 2 Base profiles of {args.domain} in {warehouse_path()}: run `make run` first")
    judge = args.judge or data_dir() / "store/profiler_base_weights/smollm2-135m-instruct/hf"
    chat = ChatLM(judge, dtype=args.dtype)
    recent = [recent_history_text(history_lines(json.loads(items), json.loads(ratings), titles), Protocol().recent_k)
              for items, ratings in zip(profiles["history_items"], profiles["history_ratings"])]
    rng = np.random.default_rng(0)
    own = profiles["profile"].tolist()
    kinds = {
        "own profile": own,
        "another user's profile": own[1:] + own[:1],
        "random letters": ["".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz    "), size=len(p))) for p in own],
        "empty": [""] * len(own),
    }
    results = {}
    for kind, texts in kinds.items():
        conversations = [profile_quality_messages(r, t) for r, t in zip(recent, texts)]
        greedy = [parse_score(a) for a in chat.generate(conversations, GREEDY_ANSWER).texts]
        results[kind] = (greedy, expected_scores(chat, conversations))
    print(f"judge {judge} ({args.dtype}); {len(own)} {args.domain} users' Base profiles, each against its own 10-H\n")
    print("| profile | greedy scores (count) | unparsed | mean expected score | own - this, paired | t-test p |")
    print("|---|---|---|---|---|---|")
    for kind, (greedy, expected) in results.items():
        counts = ", ".join(f"{s}: {greedy.count(s)}" for s in sorted({s for s in greedy if s is not None}))
        diff = results["own profile"][1] - expected
        test = "" if kind == "own profile" else f"{diff.mean():+.3f} | {stats.ttest_rel(results['own profile'][1], expected).pvalue:.3g}"
        print(f"| {kind} | {counts} | {greedy.count(None)} | {expected.mean():.3f} | {test or ' | '} |")


if __name__ == "__main__":
    main()
