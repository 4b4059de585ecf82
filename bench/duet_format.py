"""DUET's format compliance on the real profiler: the share of sampled completions that DUET's strict and lenient
parsers accept, and of each of the six fields, for the plain prompt, with the assistant turn started by a prefix
(by default DUET's first two tags), and with the sampler writing all six tags (`prompts.DUET_SCAFFOLD`, the `duet`
method). For the scaffolded completions it also asks the rating judge (the frozen profiler), as DUET's reward
does: how often its rating parses, the reward, and how much the reward varies within a user's group of samples
(GRPO's signal). A measurement, not a timing.

Run after `make run` has filled the warehouse (DUET's prompt shows the target item's earlier ratings, so the
domain's interactions are read too):
    .venv/bin/python bench/duet_format.py [--domain ml-1m] [--users 8] [--samples 4] [--prefix "<user_profile>\n<cue>"]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

if TYPE_CHECKING:
    from profilekit.profiler import ChatLM
    from profilekit.training import TrainingExamples

PREFIX = "<user_profile>\n<cue>"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--domain", default="ml-1m")
    parser.add_argument("--users", type=int, default=8, help="the first train users by id")
    parser.add_argument("--samples", type=int, default=4, help="completions per user, temperature 0.7")
    parser.add_argument("--max-new-tokens", type=int, default=160)
    parser.add_argument("--prefix", default=PREFIX, help="what the assistant turn starts with ('\\n' for a newline)")
    parser.add_argument("--scaffold-only", action="store_true", help="only the scaffolded completions")
    parser.add_argument("--answers", type=int, default=0,
                        help="print this many of the judge's raw answers and how its read ratings spread")
    parser.add_argument("--model", type=Path, default=Path(".data/store/profiler_base_weights/smollm2-135m-instruct/hf"))
    parser.add_argument("--warehouse", type=Path, default=Path(".data/warehouse.duckdb"))
    args = parser.parse_args()

    from dataclasses import replace

    import duckdb
    import numpy as np

    from profilekit.llm.sampler import SamplingConfig
    from profilekit.methods import METHODS, RewardInputs
    from profilekit.profiler import ChatLM
    from profilekit.prompts import DUET_FIELDS, DUET_PARSERS, PROFILE_PROMPTS, duet_valid, parse_duet
    from profilekit.training import GREEDY_ANSWER, training_examples
    from resources.warehouse import WAREHOUSE_SCHEMA

    with duckdb.connect(str(args.warehouse), read_only=True) as con:
        histories, candidates, items, interactions = (
            con.execute(f"SELECT * FROM {WAREHOUSE_SCHEMA}.{table} WHERE domain = ?", [args.domain]).df()
            for table in ("filtered_histories", "candidate_sets", "items", "interactions")
        )
    users = sorted(histories.loc[histories["split"] == "train", "user_id"].unique())[: args.users]
    histories, candidates = (t[t["user_id"].isin(users)] for t in (histories, candidates))
    chat = ChatLM(args.model, dtype="bfloat16", batch_size=32)
    data = training_examples(histories, candidates, items, lambda xs: [len(chat.tokenizer.encode(x)) for x in xs], 512,
                             10, 0, PROFILE_PROMPTS["duet"], interactions)
    sampling = SamplingConfig(args.max_new_tokens, 0.7, 1.0, 0, 16)
    # The scaffold is fitted to DUET's own completion budget, as the `duet` method's training and profiles are.
    scaffolded = chat.sampling_for(PROFILE_PROMPTS["duet"], replace(sampling, max_new_tokens=METHODS["duet"].min_new_tokens))
    for label, prefix, config in (("prefix ''", "", sampling),
                                  (f"prefix {args.prefix!r}", args.prefix.replace("\\n", "\n"), sampling),
                                  ("scaffold (duet)", "", scaffolded))[2 if args.scaffold_only else 0:]:
        forced = chat.tokenizer.encode(prefix, add_special_tokens=False) if prefix else []
        generated = chat.sampler.generate([chat.encode_chat(m) + forced for m in data.messages], config,
                                          samples=args.samples)
        texts = [prefix + chat.tokenizer.decode(t, skip_special_tokens=True) for t in generated.tokens]
        parsed = [parse_duet(t) for t in texts]
        shares = {mode: float(np.mean([duet_valid(p, mode) for p in parsed])) for mode in DUET_PARSERS}
        fields = {f"{scope}.{name}": round(float(np.mean([p[scope][name] is not None for p in parsed])), 2)
                  for scope in ("user", "item") for name in DUET_FIELDS}
        print(f"{label}: {len(parsed)} completions, strict {shares['strict']:.3f}, "
              f"lenient {shares['lenient']:.3f}; fields present: {fields}", flush=True)
        if config.scaffold is not None:
            inputs = RewardInputs([PROFILE_PROMPTS["duet"].parse(t) for t in texts], list(range(len(data))),
                                  args.samples, data, chat, judge=chat, answer_sampling=GREEDY_ANSWER,
                                  completions=texts, completion_tokens=[len(t) for t in generated.tokens])
            rewards, terms = METHODS["duet"].rewards(inputs)
            print(f"  judge's rating parsed {terms['duet_rating/valid_frac']:.3f}, reward mean {rewards.mean():.3f}, "
                  f"mean |error| {terms['duet_rating/abs_err']:.3f}, within-user sd of the reward "
                  f"{float(rewards.std(axis=1).mean()):.3f}, users with any spread "
                  f"{int((rewards.std(axis=1) > 0).sum())}/{len(data)}", flush=True)
            if args.answers:
                show_judge_answers(chat, texts, data, args.samples, args.answers)
            print(f"  field budgets {config.scaffold.budgets}, completion tokens at most {config.scaffold.max_tokens}; "
                  f"example: {texts[0]!r}", flush=True)


def show_judge_answers(chat: ChatLM, texts: list[str], data: TrainingExamples, samples: int, shown: int) -> None:
    """The judge's raw answers to the rating question of the `duet` reward (greedy, its 16 new tokens), and the
    read ratings' spread, which shows whether the judge reads the profiles or copies its instruction's example."""
    from collections import Counter
    from dataclasses import replace

    from profilekit.prompts import duet_rating_messages, parse_duet, parse_duet_rating
    from profilekit.training import GREEDY_ANSWER

    low, high = data.rating_scale[:2]
    rows = [i // samples for i in range(len(texts))]
    parsed = [parse_duet(t) for t in texts]
    conversations = [duet_rating_messages(p["user"]["profile"], p["item"]["profile"], data.item_texts[r], low, high)
                     for p, r in zip(parsed, rows)]
    answers = chat.generate(conversations, replace(GREEDY_ANSWER, max_new_tokens=16)).texts
    ratings = [parse_duet_rating(a, low, high) for a in answers]
    for answer, rating, row in list(zip(answers, ratings, rows))[:shown]:
        print(f"    y={data.target_ratings[row]} read={rating} answer={answer!r}", flush=True)
    print(f"  read ratings: {sorted(Counter(ratings).items(), key=lambda kv: (kv[0] is None, kv[0] or 0))}; "
          f"true ratings: {sorted(Counter(data.target_ratings[r] for r in rows).items())}", flush=True)


if __name__ == "__main__":
    main()
