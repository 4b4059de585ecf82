"""Where the LLM's time goes: a `jax.profiler` trace of one decode loop of the sampler (`decode`) or of one GRPO
update (`update`: reference pass, forward, backward, optimizer), XLA:CPU's per-op times grouped by op kind and
HLO shape (the 30 layers' ops of one shape together).

Run on a quiet machine:
    .venv/bin/python bench/profile_llm.py decode [--batch 8] [--new 128] [--temperature 0]
    .venv/bin/python bench/profile_llm.py update [--prompts 4] [--rollouts 4] [--new 85] [--lora-rank 0]
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


def traced(run, repeat: int) -> tuple[float, dict]:
    """Seconds of one untraced call of `run` (after one compiling call) and the trace of another."""
    import jax

    run()
    started = time.perf_counter()
    run()
    wall = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as trace_dir:
        jax.profiler.start_trace(trace_dir)
        run()
        jax.profiler.stop_trace()
        return wall, json.load(gzip.open(next(Path(trace_dir).rglob("*.trace.json.gz"))))


def grouped(trace: dict, hlo: str, per: int, min_calls: int) -> collections.Counter:
    """Op time per `per` (steps, or 1), grouped by (op kind, HLO shape, source op); ops called fewer than
    `min_calls` times are left out (the decode loop's prefill)."""
    total, calls = collections.Counter(), collections.Counter()
    for event in trace["traceEvents"]:
        # XLA's own ops only: Python frames ("$..."), executor and thread-pool spans and host transfers are not ops.
        if event.get("ph") == "X" and not event["name"].startswith(("$", "Thunk", "end:", "Slinky", "Pjit", "np.")):
            total[event["name"]] += event["dur"]
            calls[event["name"]] += 1
    groups = collections.Counter()
    for name, micros in total.items():
        if calls[name] < min_calls:
            continue
        line = re.search(r"^\s*(?:ROOT )?%" + re.escape(name) + r" = (\S+) .*$", hlo, re.M)
        shape = line.group(1) if line else "?"
        origin = re.search(r'op_name="([^"]*)"', line.group(0)) if line else None
        source = origin.group(1).split("/")[-1] if origin else ""
        groups[(re.sub(r"\.\d+$", "", name), shape, source)] += micros / per
    return groups


def print_groups(groups: collections.Counter, top: int, unit: str) -> None:
    print(f"| op | HLO shape | source op | ms {unit} |\n|---|---|---|---|")
    for (kind, shape, source), micros in groups.most_common(top):
        print(f"| {kind} | {shape} | {source} | {micros / 1e3:.2f} |")
    print(f"all ops: {sum(groups.values()) / 1e3:.1f} ms {unit}")


def profile_decode(args: argparse.Namespace) -> None:
    import jax
    import numpy as np

    from profilekit.llm.model import load_lm
    from profilekit.llm.sampler import Sampler, SamplingConfig

    sampler = Sampler(load_lm(args.model, dtype="bfloat16"), eos_ids=[], pad_id=0)
    prompts = [list(range(1000, 1000 + args.prompt))] * args.batch
    config = SamplingConfig(max_new_tokens=args.new, temperature=args.temperature, top_p=args.top_p)
    wall, trace = traced(lambda: sampler.generate(prompts, config), 1)
    hlo = sampler._generate.lower(
        sampler.state, np.asarray(prompts, np.int32), np.ones((args.batch, args.prompt), bool), sampler.eos_ids,
        np.int32(0), jax.random.PRNGKey(0), max_new=args.new, temperature=args.temperature, top_p=args.top_p,
        cache_size=(args.prompt + args.new + 15) // 16 * 16, samples=1,
    ).compile().as_text()
    print(f"decode: batch {args.batch}, {args.new} new tokens, temperature {args.temperature}: {wall:.2f} s, "
          f"{wall / args.new * 1e3:.1f} ms a step (untraced run, prefill included)")
    print_groups(grouped(trace, hlo, args.new, args.new), args.top, "a decode step")


def profile_update(args: argparse.Namespace) -> None:
    import numpy as np
    import optax

    from profilekit.llm.grpo_step import PolicyTrainer, StepGeometry
    from profilekit.llm.lora import AdapterTrainer, LoraConfig
    from profilekit.llm.model import load_lm

    lm = load_lm(args.model, dtype="bfloat16")
    geometry = StepGeometry(args.rollouts, 0.2, 0.01, 32, 1.0, "bfloat16", True)
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-5))
    trainer = (PolicyTrainer(lm.model, tx, geometry) if not args.lora_rank
               else AdapterTrainer(lm.model, tx, geometry, LoraConfig(rank=args.lora_rank, alpha=2.0 * args.lora_rank), 0))
    rng = np.random.default_rng(0)
    n = args.prompts * args.rollouts
    batch = (rng.integers(1000, 20000, (args.prompts, args.prompt)).astype(np.int32),
             np.ones((args.prompts, args.prompt), bool),
             rng.integers(1000, 20000, (n, args.new)).astype(np.int32),
             np.ones((n, args.new), bool),
             rng.standard_normal(n).astype(np.float32))
    wall, trace = traced(lambda: trainer.step(*batch), 1)
    step_args = ((trainer.params, trainer.rest, trainer.opt_state, trainer.ref_params) if not args.lora_rank
                 else (trainer.params, trainer.opt_state, trainer.base))
    hlo = trainer._step.lower(*step_args, batch).compile().as_text()
    print(f"update: {args.prompts} prompts x {args.prompt} tokens, {n} completions x {args.new} tokens, "
          f"{'LoRA rank ' + str(args.lora_rank) if args.lora_rank else 'full fine-tune'}, bf16: {wall:.2f} s (untraced)")
    print_groups(grouped(trace, hlo, 1, 1), args.top, "an update")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["decode", "update"])
    parser.add_argument("--model", type=Path, default=Path(".data/test/store/profiler_base_weights/smollm2-135m-instruct/hf"))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--prompt", type=int, default=272)
    parser.add_argument("--new", type=int, default=None, help="new tokens (default 128 decode, 85 update)")
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--top-p", type=float, default=0.95)
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--rollouts", type=int, default=4)
    parser.add_argument("--lora-rank", type=int, default=0)
    parser.add_argument("--top", type=int, default=15, help="print this many op groups")
    args = parser.parse_args()
    args.new = args.new or (128 if args.what == "decode" else 85)
    (profile_decode if args.what == "decode" else profile_update)(args)


if __name__ == "__main__":
    main()
