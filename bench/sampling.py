"""Tokens/s of the JAX sampler vs transformers `generate` on the same model, dtype, prompts and token count.

Run on a quiet machine: `.venv/bin/python bench/sampling.py [--batches 1 8 32] [--dtype float32]`.
Both generate exactly --new tokens per row (EOS disabled), greedily, from the same ~265-token chat prompt.
The last column reuses one prefill for all rows of the batch, as GRPO's G rollouts of one prompt do.
"""

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from profilekit.llm.export import export_gguf_to_hf, packaged_gguf  # noqa: E402
from profilekit.llm.model import load_lm  # noqa: E402
from profilekit.llm.sampler import Sampler, SamplingConfig  # noqa: E402
from resources.llm import packaged_weights_dir  # noqa: E402
from resources.model_store import LocalModelStore  # noqa: E402
from resources.settings import data_dir  # noqa: E402


def prompt_ids(tokenizer, target_len: int) -> list[int]:
    titles = ["Heat (1995)", "Fargo (1996)", "Toy Story (1995)", "Alien (1979)", "Casablanca (1942)"]
    lines, ids = [], []
    while len(ids) < target_len:
        lines.append(f"[{titles[len(lines) % 5]} | {1 + len(lines) % 5}]")
        msg = [{"role": "user", "content": "History: " + ", ".join(lines) + "\nSummarise this user's taste."}]
        out = tokenizer.apply_chat_template(msg, add_generation_prompt=True, tokenize=True)
        ids = list(out["input_ids"] if hasattr(out, "keys") else out)
    return ids


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--new", type=int, default=128)
    parser.add_argument("--prompt", type=int, default=265)
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 2)

    store = LocalModelStore(root=str(data_dir() / "store"))
    path = export_gguf_to_hf(packaged_gguf(store.source_cache), packaged_weights_dir(store))
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path))
    ids = prompt_ids(tokenizer, args.prompt)
    torch_model = AutoModelForCausalLM.from_pretrained(str(path), dtype=getattr(torch, args.dtype)).eval()
    sampler = Sampler(load_lm(path, dtype=args.dtype), eos_ids=[], pad_id=tokenizer.pad_token_id)
    config = SamplingConfig(max_new_tokens=args.new, temperature=0.0, prompt_bucket=64)

    print(f"prompt {len(ids)} tokens, {args.new} new tokens, dtype {args.dtype}, {torch.get_num_threads()} torch threads")
    print("| batch | JAX tok/s | transformers tok/s | ratio | JAX, prompt prefilled once for the batch (GRPO rollouts) | ratio |")
    print("|---|---|---|---|---|---|")
    for batch in args.batches:
        prompts = [ids] * batch
        sampler.generate(prompts, config)  # compile this shape once; not timed
        started = time.perf_counter()
        out = sampler.generate(prompts, config)
        jax_tps = sum(len(t) for t in out.tokens) / (time.perf_counter() - started)
        sampler.generate([ids], config, samples=batch)
        started = time.perf_counter()
        shared = sampler.generate([ids], config, samples=batch)
        shared_tps = sum(len(t) for t in shared.tokens) / (time.perf_counter() - started)

        inputs = torch.tensor(prompts)
        with torch.no_grad():
            torch_model.generate(inputs[:, :8], max_new_tokens=2, do_sample=False, pad_token_id=0)  # warm-up
            started = time.perf_counter()
            gen = torch_model.generate(
                inputs, attention_mask=torch.ones_like(inputs), max_new_tokens=args.new, min_new_tokens=args.new,
                do_sample=False, pad_token_id=tokenizer.pad_token_id,
            )
        hf_tps = (gen.shape[1] - inputs.shape[1]) * batch / (time.perf_counter() - started)
        assert all(len(t) == args.new for t in out.tokens)
        same = float(np.mean([a == b for a, b in zip(out.tokens[0], gen[0, inputs.shape[1]:].tolist())]))
        print(
            f"| {batch} | {jax_tps:.1f} | {hf_tps:.1f} | {jax_tps / hf_tps:.2f}x | {shared_tps:.1f} | {shared_tps / hf_tps:.2f}x |"
            f"  (greedy token agreement, row 0: {same:.2f})"
        )


if __name__ == "__main__":
    main()
