"""Tokens/s of the JAX sampler (f32, bf16) vs transformers `generate` (f32, bf16) on the same model and prompts.

Run on a quiet machine: `.venv/bin/python bench/sampling.py [--batches 1 8 32] [--only ours-f32,ours-bf16,...]`.
Every contender runs alone in its own subprocess, one after another. All generate exactly --new tokens per row
(EOS disabled), greedily, from the same ~265-token chat prompt; the first call of each shape is not timed (JAX
compiles it). "shared" reuses one prefill for all rows of the batch, as GRPO's G rollouts of one prompt do.

Each line also prints its roofline: the decode-bound tokens/s if every step only streamed the weights and the
KV cache from memory at --bandwidth GB/s or ran its dots at --gflops (bf16) / --gflops / 2 (f32), whichever is
slower (defaults: this machine's measured 25 GB/s and 370 GFLOP/s, docs in DATA.md), and measured / roofline.
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

CONTENDERS = ("ours-f32", "ours-bf16", "transformers-f32", "transformers-bf16")


def model_dir(args: argparse.Namespace) -> Path:
    if args.model is not None:
        return args.model
    from profilekit.llm.export import export_gguf_to_hf, packaged_gguf
    from resources.llm import packaged_weights_dir
    from resources.model_store import LocalModelStore
    from resources.settings import data_dir

    store = LocalModelStore(root=str(data_dir() / "store"))
    return export_gguf_to_hf(packaged_gguf(store.source_cache), packaged_weights_dir(store))


def prompt_ids(tokenizer, target_len: int) -> list[int]:
    titles = ["Heat (1995)", "Fargo (1996)", "Toy Story (1995)", "Alien (1979)", "Casablanca (1942)"]
    lines, ids = [], []
    while len(ids) < target_len:
        lines.append(f"[{titles[len(lines) % 5]} | {1 + len(lines) % 5}]")
        msg = [{"role": "user", "content": "History: " + ", ".join(lines) + "\nSummarise this user's taste."}]
        out = tokenizer.apply_chat_template(msg, add_generation_prompt=True, tokenize=True)
        ids = list(out["input_ids"] if hasattr(out, "keys") else out)
    return ids


def roofline(config: dict, dtype: str, batch: int, prompt: int, new: int, gflops: float, bandwidth: float) -> float:
    """Decode tokens/s if a step costs max(weights + mean KV cache bytes / bandwidth, 2·params·batch / peak)."""
    d, layers, vocab = config["hidden_size"], config["num_hidden_layers"], config["vocab_size"]
    head = config.get("head_dim") or d // config["num_attention_heads"]
    kv = config.get("num_key_value_heads", config["num_attention_heads"]) * head
    per_layer = d * config["num_attention_heads"] * head * 2 + d * kv * 2 + 3 * d * config["intermediate_size"]
    params = layers * per_layer + vocab * d
    width = 2 if dtype == "bfloat16" else 4
    cache = 2 * layers * kv * (prompt + new / 2) * batch * 4  # ours keeps an f32 cache (see profilekit.llm.forward)
    seconds = max((params * width + cache) / (bandwidth * 1e9), 2 * params * batch / ((gflops if width == 2 else gflops / 2) * 1e9))
    return batch / seconds


def run_ours(args, path: Path, dtype: str, ids: list[int]) -> list[dict]:
    from profilekit.llm.model import load_lm
    from profilekit.llm.sampler import Sampler, SamplingConfig

    sampler = Sampler(load_lm(path, dtype=dtype), eos_ids=[], pad_id=0)
    config = SamplingConfig(max_new_tokens=args.new, temperature=0.0)
    rows = []
    for batch in args.batches:
        out = {}
        for name, prompts, samples in (("batch", [ids] * batch, 1), ("shared", [ids], batch)):
            sampler.generate(prompts, config, samples=samples)  # compile this shape once; not timed
            started = time.perf_counter()
            gen = sampler.generate(prompts, config, samples=samples)
            out[name] = sum(len(t) for t in gen.tokens) / (time.perf_counter() - started)
        rows.append({"batch": batch, "tok_s": out["batch"], "shared_tok_s": out["shared"], "first": gen.tokens[0]})
    return rows


def run_transformers(args, path: Path, dtype: str, ids: list[int]) -> list[dict]:
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(os.cpu_count() or 2)
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=getattr(torch, dtype)).eval()
    rows = []
    for batch in args.batches:
        inputs = torch.tensor([ids] * batch)
        with torch.no_grad():
            model.generate(inputs[:, :8], max_new_tokens=2, do_sample=False, pad_token_id=0)  # warm-up
            started = time.perf_counter()
            gen = model.generate(inputs, attention_mask=torch.ones_like(inputs), max_new_tokens=args.new,
                                 min_new_tokens=args.new, do_sample=False, pad_token_id=0)
        seconds = time.perf_counter() - started
        rows.append({"batch": batch, "tok_s": (gen.shape[1] - inputs.shape[1]) * batch / seconds,
                     "first": gen[0, inputs.shape[1]:].tolist()})
    return rows


def worker(args: argparse.Namespace) -> None:
    from transformers import AutoTokenizer

    path = model_dir(args)
    ids = prompt_ids(AutoTokenizer.from_pretrained(str(path)), args.prompt)
    family, dtype = args.worker.rsplit("-", 1)
    dtype = {"f32": "float32", "bf16": "bfloat16"}[dtype]
    rows = (run_ours if family == "ours" else run_transformers)(args, path, dtype, ids)
    config = json.loads((path / "config.json").read_text())
    for row in rows:
        row["roofline"] = roofline(config, dtype, row["batch"], len(ids), args.new, args.gflops, args.bandwidth)
    print(json.dumps({"contender": args.worker, "prompt": len(ids), "rows": rows}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="HF-layout model dir (default: packaged SmolLM2)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--new", type=int, default=128)
    parser.add_argument("--prompt", type=int, default=265)
    parser.add_argument("--gflops", type=float, default=370.0, help="bf16 dot peak; f32 is half")
    parser.add_argument("--bandwidth", type=float, default=25.0, help="memory bandwidth, GB/s")
    parser.add_argument("--only", default=",".join(CONTENDERS))
    parser.add_argument("--worker", choices=CONTENDERS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    argv = sys.argv[1:]
    results = {}
    for name in [n.strip() for n in args.only.split(",") if n.strip()]:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), *argv, "--worker", name],
                              stdout=subprocess.PIPE, text=True, check=False)
        lines = proc.stdout.strip().splitlines()
        results[name] = json.loads(lines[-1]) if proc.returncode == 0 and lines else None
    base = results.get("transformers-f32")
    base_rows = {r["batch"]: r for r in base["rows"]} if base else {}
    print(f"{args.new} new tokens, greedy, EOS disabled; prompt {next((r['prompt'] for r in results.values() if r), '?')}"
          " tokens; ratios against transformers f32 at the same batch")
    print("| contender | batch | tok/s | roofline tok/s | of roofline | / transformers f32 | shared prefill tok/s | "
          "row 0 greedy tokens equal to transformers f32's, position by position |")
    print("|---|---|---|---|---|---|---|---|")
    for name, result in results.items():
        if result is None:
            print(f"| {name} | failed | | | | | | |")
            continue
        for row in result["rows"]:
            ref = base_rows.get(row["batch"])
            ratio = f"{row['tok_s'] / ref['tok_s']:.2f}x" if ref else "-"
            agree = f"{sum(a == b for a, b in zip(row['first'], ref['first'])) / len(ref['first']):.2f}" if ref else "-"
            shared = f"{row['shared_tok_s']:.1f}" if "shared_tok_s" in row else "-"
            print(f"| {name} | {row['batch']} | {row['tok_s']:.1f} | {row['roofline']:.0f} | "
                  f"{row['tok_s'] / row['roofline']:.0%} | {ratio} | {shared} | {agree} |")
    if any(r is None for r in results.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
