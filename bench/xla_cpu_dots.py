"""GFLOP/s of XLA:CPU's matmul paths for the GRPO update's dots, per XLA_FLAGS setting, bf16 against f32.

The update's dots are the profiler's projections over a batch of rollouts; the largest is the MLP's up-projection,
(16 rollouts x 440 tokens) x 576 x 1536 for SmolLM2-135M. Each is timed forward (x @ W), as the weight gradient
(x^T @ dY) and as the input gradient (dY @ W^T), in bf16 with f32 accumulation (the trainer's `compute_dtype`) and
in f32. Which library runs a dot depends on the flags: YNNPACK for bf16 dots by default in jaxlib 0.10, Eigen
(upcast to f32) without it, oneDNN behind an experimental flag. Every flag setting runs alone in its own
subprocess, one after another; run it on a quiet machine:

    .venv/bin/python bench/xla_cpu_dots.py [--tokens 7040] [--repeats 10]
"""

import argparse
import json
import os
import subprocess
import sys
import time

SETTINGS = {
    "default": "",
    "no-ynn (Eigen)": "--xla_cpu_experimental_ynn_fusion_type=",
    "oneDNN": "--xla_cpu_experimental_onednn_custom_call=true --xla_cpu_experimental_ynn_fusion_type=",
    "no-xnnpack": "--xla_cpu_use_xnnpack=false",
}
D_MODEL, D_FF = 576, 1536


def worker(tokens: int, repeats: int) -> dict[str, float]:
    import jax
    import jax.numpy as jnp

    key = jax.random.PRNGKey(0)
    x = jax.random.normal(key, (tokens, D_MODEL), jnp.float32)
    w = jax.random.normal(key, (D_MODEL, D_FF), jnp.float32)
    dy = jax.random.normal(key, (tokens, D_FF), jnp.float32)

    def dot(contract):
        return jax.jit(lambda a, b: jax.lax.dot_general(a, b, (contract, ((), ())), preferred_element_type=jnp.float32))

    shapes = {"forward": (dot(((1,), (0,))), x, w), "weight grad": (dot(((0,), (0,))), x, dy),
              "input grad": (dot(((1,), (1,))), dy, w)}
    flops = 2 * tokens * D_MODEL * D_FF
    out = {}
    for dtype in (jnp.bfloat16, jnp.float32):
        for name, (fn, a, b) in shapes.items():
            a, b = a.astype(dtype), b.astype(dtype)
            fn(a, b).block_until_ready()
            t0 = time.perf_counter()
            for _ in range(repeats):
                fn(a, b).block_until_ready()
            out[f"{name} {jnp.dtype(dtype).name}"] = flops * repeats / (time.perf_counter() - t0) / 1e9
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=16 * 440)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.tokens, args.repeats)))
        return
    results = {}
    for label, flags in SETTINGS.items():
        env = os.environ | {"XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"}
        proc = subprocess.run([sys.executable, __file__, "--worker", "--tokens", str(args.tokens), "--repeats",
                               str(args.repeats)], env=env, capture_output=True, text=True, check=True)
        results[label] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"{label}: done", file=sys.stderr, flush=True)
    columns = list(results["default"])
    print("| XLA_FLAGS setting | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for label, row in results.items():
        cells = [f"{row[c]:.0f} ({row[c] / results['default'][c]:.2f}x)" for c in columns]
        print(f"| {label} | " + " | ".join(cells) + " |")
    print("\nGFLOP/s (ratio to the default flags, same dot and dtype)")


if __name__ == "__main__":
    main()
