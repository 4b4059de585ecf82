"""Where one decode step of the JAX sampler goes: a `jax.profiler` trace of `Sampler.generate`, XLA:CPU's
per-thunk times summed over the decode steps and divided by their number, each op named with its HLO shape.

Run on a quiet machine: `.venv/bin/python bench/profile_decode.py [--batch 8] [--new 128] [--temperature 0]`.
"""

import argparse
import collections
import gzip
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=Path(".data/test/store/profiler_base_weights/smollm2-135m-instruct/hf"))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--prompt", type=int, default=272)
    parser.add_argument("--new", type=int, default=128)
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--top-p", type=float, default=0.95)
    parser.add_argument("--top", type=int, default=15, help="print this many ops")
    args = parser.parse_args()

    import jax
    import numpy as np

    from profilekit.llm.model import load_lm
    from profilekit.llm.sampler import Sampler, SamplingConfig

    sampler = Sampler(load_lm(args.model, dtype="bfloat16"), eos_ids=[], pad_id=0)
    prompts = [list(range(1000, 1000 + args.prompt))] * args.batch
    config = SamplingConfig(max_new_tokens=args.new, temperature=args.temperature, top_p=args.top_p)
    sampler.generate(prompts, config)  # compile
    started = time.perf_counter()
    sampler.generate(prompts, config)
    wall = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as trace_dir:
        jax.profiler.start_trace(trace_dir)
        sampler.generate(prompts, config)
        jax.profiler.stop_trace()
        trace = json.load(gzip.open(next(Path(trace_dir).rglob("*.trace.json.gz"))))
    hlo = sampler._generate.lower(
        sampler.state, np.asarray(prompts, np.int32), np.ones((args.batch, args.prompt), bool), sampler.eos_ids,
        np.int32(0), jax.random.PRNGKey(0), max_new=args.new, temperature=args.temperature, top_p=args.top_p,
        cache_size=(args.prompt + args.new + 15) // 16 * 16, samples=1,
    ).compile().as_text()

    total, calls = collections.Counter(), collections.Counter()
    for event in trace["traceEvents"]:
        if event.get("ph") == "X" and not event["name"].startswith(("$", "Thunk", "end:", "Slinky", "Pjit")):
            total[event["name"]] += event["dur"]
            calls[event["name"]] += 1
    # An op of the decode loop runs once per step (or a fixed number of times per step); group the ops of the
    # 30 layers that share a shape and a source op.
    groups, members = collections.Counter(), collections.Counter()
    for name, micros in total.items():
        if calls[name] < args.new:
            continue
        line = re.search(r"^\s*(?:ROOT )?%" + re.escape(name) + r" = (\S+) .*$", hlo, re.M)
        shape = line.group(1) if line else "?"
        origin = re.search(r'op_name="([^"]*)"', line.group(0)) if line else None
        source = origin.group(1).split("/")[-1] if origin else ""
        key = (re.sub(r"\.\d+$", "", name), shape, source)
        groups[key] += micros / args.new
        members[key] += 1
    print(f"batch {args.batch}, {args.new} new tokens, temperature {args.temperature}: {wall:.2f} s, "
          f"{wall / args.new * 1e3:.1f} ms a step (untraced run)")
    print("| op | HLO shape | source op | ops | ms a step |\n|---|---|---|---|---|")
    for (kind, shape, source), micros in groups.most_common(args.top):
        print(f"| {kind} | {shape} | {source} | {members[(kind, shape, source)]} | {micros / 1e3:.2f} |")


if __name__ == "__main__":
    main()
