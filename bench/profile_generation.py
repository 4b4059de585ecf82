"""Seconds per user of profile generation (what `base_profiles` / `generated_profiles` cost) at several generation
batch sizes, on a domain's real evaluated users: their profiler prompts (history up to the token budget), temperature
0.7, top-p 0.95, at most 128 new tokens, stopping at EOS, no generation cache.

Run on a quiet machine after `make run` has filled the warehouse:
    .venv/bin/python bench/profile_generation.py [--domain ml-1m] [--users 64] [--batches 8 16 32] \
        [--dtypes bfloat16 float32]
Each (weights dtype, batch size) contender runs alone in its own process, one after another. A first pass over the users compiles the prompt
shapes (reported apart); the second pass is timed.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def worker(args: argparse.Namespace) -> None:
    import duckdb

    from profilekit.llm.sampler import SamplingConfig
    from profilekit.profiler import ChatLM, generate_profiles
    from profilekit.protocol import Protocol, eval_examples
    from resources.warehouse import WAREHOUSE_SCHEMA

    with duckdb.connect(str(args.warehouse), read_only=True) as con:
        histories, items = (
            con.execute(f"SELECT * FROM {WAREHOUSE_SCHEMA}.{table} WHERE domain = ?", [args.domain]).df()
            for table in ("filtered_histories", "items")
        )
    examples = eval_examples(histories, Protocol()).head(args.users)
    chat = ChatLM(args.model, dtype=args.dtype, batch_size=args.batch)
    config = SamplingConfig(max_new_tokens=128, temperature=0.7, top_p=0.95)
    timings = []
    for _ in range(2):
        started = time.perf_counter()
        profiles, _ = generate_profiles(chat, examples, items, 512, config, progress=None)
        timings.append(time.perf_counter() - started)
    print(json.dumps({"dtype": args.dtype, "batch": args.batch, "users": len(examples), "first_pass_s": timings[0],
                      "seconds_per_user": timings[1] / len(examples),
                      "profile_tokens_mean": float(profiles["profile_tokens"].mean()),
                      "tokens_per_s": float(profiles["profile_tokens"].sum()) / timings[1]}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--domain", default="ml-1m")
    parser.add_argument("--users", type=int, default=64)
    parser.add_argument("--batches", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--model", type=Path, default=Path(".data/store/profiler_base_weights/smollm2-135m-instruct/hf"))
    parser.add_argument("--warehouse", type=Path, default=Path(".data/warehouse.duckdb"))
    parser.add_argument("--dtypes", nargs="+", default=["bfloat16"], choices=["bfloat16", "float32"],
                        help="the weights' dtype (the LLM resources' `dtype`)")
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--dtype", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.batch is not None:
        worker(args)
        return
    rows = []
    for dtype in args.dtypes:
        for batch in args.batches:
            print(f"running {dtype} batch {batch} ...", file=sys.stderr, flush=True)
            out = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--batch", str(batch), "--dtype", dtype],
                                 capture_output=True, text=True)
            lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
            if out.returncode or not lines:
                print(out.stderr[-2000:], file=sys.stderr)
                continue
            rows.append(json.loads(lines[-1]))
    base = rows[0]["seconds_per_user"] if rows else None
    print(f"{args.domain}: first {args.users} evaluated users, temperature 0.7, at most 128 new tokens, EOS stops")
    first = f"{args.dtypes[0]} batch {args.batches[0]}"
    print(f"| weights | batch | seconds per user | vs {first} | tokens/s | mean profile tokens | first pass (compiles) s |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['dtype']} | {row['batch']} | {row['seconds_per_user']:.2f} | {base / row['seconds_per_user']:.2f}x | "
              f"{row['tokens_per_s']:.1f} | {row['profile_tokens_mean']:.1f} | {row['first_pass_s']:.1f} |")


if __name__ == "__main__":
    main()
