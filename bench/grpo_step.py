"""Seconds per GRPO step and peak memory: the project's step vs tunix's GRPOLearner vs trl's GRPOTrainer.

All three run the same step geometry on the same model: B chat prompts (the profiler prompt over a fixed movie
history) x G rollouts each, at most N new tokens at temperature 1.0 (top-p 1.0), one PPO-clipped update per batch
with beta·k3-KL to a frozen reference (beta 0.01, epsilon 0.2), adamw at 1e-5 after clipping the gradient norm to 1.0,
float32 weights, and the same cheap reward (a hash of the completion text, so reward cost is excluded and groups are
rarely constant). A step is everything from sampling the rollouts to having the updated weights in the sampler:

- ours: the project's trainer itself (`profilekit.training.train_profiler`, per-step seconds from its log):
  `Sampler.generate` (each prompt prefilled once, its KV cache shared by its G rollouts), reward,
  `PolicyTrainer.step` (reference log-probs and the policy's forward + backward in one jitted function; no
  old-policy pass since there is one update per batch), then `write_into` + `reload_weights`; "ours" in f32,
  "ours-bf16" in bf16 (bf16 sampler weights, bf16 dots with f32 accumulation and masters; the update's dots
  through whichever of XLA:CPU's paths `profilekit.llm.grpo_step.faster_cpu_dot_path` finds faster on this CPU);
  "ours-bf16-ynn" and "ours-bf16-eigen" the same with the update's dots forced through YNNPACK (XLA:CPU's default,
  as the sampler's) or through Eigen;
- ours-lora: the same trainer in bf16 with LoRA (--lora-rank, --lora-alpha, on every projection of every layer):
  `AdapterTrainer.step` (the base weights are the reference, no dW dots, optimizer over the adapters only), then
  the adapters merged into the sampler's weights;
- tunix: one `GRPOLearner` global step: rollout of B·G rows (each prompt prefilled G times, left-padded to
  --tunix-prompt-length), reference log-probs pass, reward and advantages, one actor train step (no old-policy
  pass when num_iterations is 1, and no weight sync: on one mesh the rollout shares the actor's weights);
- trl: one optimizer step of `GRPOTrainer` (timed from `on_step_begin` to `on_step_end`): transformers `generate`
  for B·G rows, reference log-probs pass, loss forward + backward, gradient clipping, optimizer step (trl skips
  the old-policy pass when generation and optimizer steps are aligned, as here).

The first step (--warmup steps) includes JIT compilation (JAX) or first-call warm-up (torch), so it is reported
apart; "steady" is the mean of the remaining steps, and every step's time is printed too. Each contender runs alone
in its own subprocess, one after another, so its peak RSS (ru_maxrss, which includes loading the model and its
reference copy) is its own. Completions stop at EOS, so the tokens actually generated per rollout differ between
contenders; they are reported next to the times.

These are measurements for docs, not tests: they depend on the machine and on what else runs on it.

    .venv/bin/python bench/grpo_step.py [--model DIR] [--prompts 4] [--rollouts 4] [--new-tokens 85] [--steps 3]
                                        [--warmup 1] [--lora-rank 16] [--lora-alpha 32]
                                        [--only ours,ours-bf16,ours-bf16-ynn,ours-bf16-eigen,ours-lora,tunix,trl]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from profilekit.training import GRPOConfig

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

DEFAULT_MODEL = ROOT / ".data/store/profiler_base_weights/smollm2-135m-instruct/hf"
CONTENDERS = ("ours", "ours-bf16", "ours-bf16-ynn", "ours-bf16-eigen", "ours-lora", "tunix", "trl")
MOVIES = [
    "[Toy Story (1995) | 5]", "[Heat (1995) | 4]", "[Fargo (1996) | 5]", "[Casablanca (1942) | 4]",
    "[Alien (1979) | 4]", "[The Godfather (1972) | 5]", "[Jumanji (1995) | 3]", "[Braveheart (1995) | 4]",
    "[Apollo 13 (1995) | 4]", "[Pulp Fiction (1994) | 5]", "[Forrest Gump (1994) | 4]", "[The Lion King (1994) | 3]",
    "[Twelve Monkeys (1995) | 4]", "[Se7en (1995) | 5]", "[The Usual Suspects (1995) | 5]",
    "[Batman Forever (1995) | 2]",
    "[GoldenEye (1995) | 3]", "[Babe (1995) | 3]", "[Clueless (1995) | 2]", "[Die Hard (1988) | 4]",
    "[Star Wars (1977) | 5]", "[Blade Runner (1982) | 4]", "[Groundhog Day (1993) | 4]", "[Speed (1994) | 3]",
    "[Schindler's List (1993) | 5]",
]


# Heavy imports (JAX, torch, the project's modules, which import JAX) live inside the functions, so the parent
# process stays light and each worker loads only its own framework.


def profiler_conversations(count: int, history_lines: int) -> list[list[dict]]:
    """`count` profiler chats, each over `history_lines` consecutive lines of a different rotation of MOVIES, so
    the prompts differ but have nearly the same length (11 lines: ~270 SmolLM2 tokens with the chat template)."""
    from profilekit.prompts import profile_messages

    rotations = [MOVIES[5 * i % len(MOVIES):] + MOVIES[: 5 * i % len(MOVIES)] for i in range(count)]
    return [profile_messages(lines[:history_lines]) for lines in rotations]


def text_reward(text: str) -> float:
    """Deterministic, near-free and almost never equal within a group (so advantages are non-zero)."""
    return zlib.crc32(text.encode()) / 2**32


def prompt_token_counts(tokenizer: PreTrainedTokenizerBase, conversations: list[list[dict]]) -> list[int]:
    """Chat-templated prompt lengths, as `ChatLM.encode_chat` and trl tokenize them."""
    encoded = [tokenizer.apply_chat_template(m, add_generation_prompt=True, tokenize=True) for m in conversations]
    return [len(e["input_ids"] if hasattr(e, "keys") else e) for e in encoded]


def shared_config(args: argparse.Namespace) -> GRPOConfig:
    """The project's trainer config at this geometry: the single source of every hyperparameter all three use."""
    from profilekit.training import GRPOConfig

    return GRPOConfig(steps=args.steps, users_per_step=args.prompts, rollouts=args.rollouts,
                      max_new_tokens=args.new_tokens)


def run_ours(args: argparse.Namespace, dtype: str = "float32", lora: bool = False) -> dict:
    """The project's own trainer (`train_profiler`, one call for all steps) with a method whose only reward term is
    the completion hash; with bf16 the sampler holds bf16 weights and the step computes in bf16 (f32 masters);
    with `lora` only adapters of rank --lora-rank are trained. The step time is the trainer's own per-step record
    (sampling to weights back in the sampler)."""
    from dataclasses import replace

    from profilekit.methods import Method, Term, reward_term
    from profilekit.profiler import ChatLM
    from profilekit.training import RewardModels, TrainingExamples, train_profiler

    @reward_term("completion_hash")
    def _completion_hash(inputs):
        return inputs.grid([text_reward(t) for t in inputs.profiles]), {}

    config = replace(shared_config(args), compute_dtype=dtype, remat=args.remat, save_every=args.steps + 1,
                     lora_rank=args.lora_rank if lora else 0, lora_alpha=args.lora_alpha)
    chat = ChatLM(args.model, dtype=dtype)
    conversations = profiler_conversations(args.prompts, args.history_lines)
    n = len(conversations)
    data = TrainingExamples(messages=conversations, recent=[""] * n, target_ids=[""] * n, negative_ids=[[]] * n,
                            options=[[]] * n, answers=[0] * n)
    with tempfile.TemporaryDirectory() as checkpoints:
        result = train_profiler(chat, data, Method("bench", (Term("completion_hash"),)), config, checkpoints,
                                RewardModels(), log=lambda _: None)
    return {"step_seconds": [r["seconds"] for r in result.log],
            "rollout_seconds": [r["seconds_rollout"] for r in result.log],
            "update_seconds": [r["seconds_update"] for r in result.log],
            "prompt_tokens": [len(chat.encode_chat(m)) for m in conversations],
            "completion_tokens": sum(r["completion_tokens_mean"] for r in result.log) / len(result.log)}


def run_ours_ynn_update(args: argparse.Namespace) -> dict:
    """ours-bf16 with the update's dots through YNNPACK (XLA:CPU's default, as the sampler's)."""
    from profilekit.llm import grpo_step

    grpo_step.faster_cpu_dot_path = lambda dtype: "ynnpack"
    return run_ours(args, "bfloat16")


def run_ours_eigen_update(args: argparse.Namespace) -> dict:
    """ours-bf16 with the update's dots through Eigen (`grpo_step.EIGEN_DOTS`)."""
    from profilekit.llm import grpo_step

    grpo_step.faster_cpu_dot_path = lambda dtype: "eigen"
    return run_ours(args, "bfloat16")


def run_tunix(args: argparse.Namespace) -> dict:
    import jax
    import numpy as np
    import optax
    from flax import nnx
    from transformers import AutoTokenizer
    from tunix.rl import rl_cluster as rl_cluster_lib
    from tunix.rl.grpo.grpo_learner import GRPOConfig as TunixGRPOConfig
    from tunix.rl.grpo.grpo_learner import GRPOLearner
    from tunix.rl.rollout.base_rollout import RolloutConfig

    from profilekit.llm.model import load_lm

    config = shared_config(args)
    tokenizer = AutoTokenizer.from_pretrained(str(args.model))
    conversations = profiler_conversations(args.prompts, args.history_lines)
    # tunix samples from strings; its tokenizer adapter prepends BOS (<|im_start|> for SmolLM2) and then drops it
    # as a duplicate of the template's first token, so it sees the same ids as the other two contenders.
    texts = np.array(
        [tokenizer.apply_chat_template(m, add_generation_prompt=True, tokenize=False) for m in conversations]
    )
    # jax.make_mesh defaults to Explicit axes, which tunix's models cannot trace under; tunix itself builds Auto ones.
    mesh = jax.make_mesh((1, 1), ("fsdp", "tp"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
    rollout = RolloutConfig(
        max_tokens_to_generate=config.max_new_tokens,
        max_prompt_length=args.tunix_prompt_length,
        # The smallest cache that holds prompt + completion: tunix's default (1024) would make every decode step
        # attend over more padding than this geometry needs.
        kv_cache_size=args.tunix_prompt_length + config.max_new_tokens,
        temperature=config.temperature,
        top_p=1.0,
    )
    training = rl_cluster_lib.RLTrainingConfig(
        actor_optimizer=optax.chain(optax.clip_by_global_norm(config.max_grad_norm), optax.adamw(config.learning_rate)),
        eval_every_n_steps=args.steps,  # required field; no eval set is given, so it never triggers
        max_steps=args.steps,
        # No checkpoint directory: tunix then saves nothing (with one, it saves every 180 s, inside the timed steps).
        checkpoint_root_directory=None,
    )
    cluster = rl_cluster_lib.RLCluster(
        actor=load_lm(args.model).model,
        reference=load_lm(args.model).model,
        tokenizer=tokenizer,
        cluster_config=rl_cluster_lib.ClusterConfig(
            role_to_mesh={rl_cluster_lib.Role.ACTOR: mesh, rl_cluster_lib.Role.REFERENCE: mesh,
                          rl_cluster_lib.Role.ROLLOUT: mesh},
            rollout_engine="vanilla",
            offload_to_cpu=False,
            training_config=training,
            rollout_config=rollout,
        ),
    )

    def profile_reward(prompts: list[str], completions: list[str], **_) -> list[float]:
        return [text_reward(c.strip()) for c in completions]

    learner = GRPOLearner(
        rl_cluster=cluster,
        algo_config=TunixGRPOConfig(num_generations=config.rollouts, num_iterations=1, beta=config.beta,
                                    epsilon=config.epsilon, kl_loss_mode="low_var_kl"),
        reward_fns=profile_reward,
    )
    starts: list[float] = []

    def batches():
        # The learner pulls one batch at the start of each global step (rollout included), so the pull times are
        # the step boundaries. Prompts must be a numpy array: the learner repeats them G times with np.repeat.
        for step in range(args.steps):
            rollout.seed = step  # read at every rollout; a fixed seed would replay the same random stream
            starts.append(time.perf_counter())
            yield {"prompts": texts}

    learner.train(batches())
    jax.block_until_ready(nnx.state(cluster.actor_trainer.model))
    ends = [*starts[1:], time.perf_counter()]
    lengths = cluster.actor_trainer.metrics_logger.get_metric_history("completions", "mean_length", "train")
    return {"step_seconds": [e - s for s, e in zip(starts, ends)],
            "prompt_tokens": prompt_token_counts(tokenizer, conversations),
            "completion_tokens": float(np.mean(lengths))}


def run_trl(args: argparse.Namespace) -> dict:
    import numpy as np
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig as TRLGRPOConfig
    from trl import GRPOTrainer

    config = shared_config(args)
    tokenizer = AutoTokenizer.from_pretrained(str(args.model))
    conversations = profiler_conversations(args.prompts, args.history_lines)
    seconds: list[float] = []
    generated: list[int] = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, *_, **__):
            self.started = time.perf_counter()

        def on_step_end(self, *_, **__):
            seconds.append(time.perf_counter() - self.started)

    def profile_reward(completions: list[list[dict]], completion_ids: list[list[int]], **_) -> list[float]:
        # trl keeps the EOS in completion_ids; the other two contenders count tokens without it.
        generated.extend(sum(t != tokenizer.eos_token_id for t in ids) for ids in completion_ids)
        return [text_reward(c[0]["content"].strip()) for c in completions]

    with tempfile.TemporaryDirectory() as output_dir:
        trl_args = TRLGRPOConfig(
            output_dir=output_dir,
            use_cpu=True,
            bf16=False,  # trl's default is bf16; the other two train in float32
            gradient_checkpointing=False,  # trl's default is on; the others do not recompute the whole model
            # One optimizer step = B prompts x G completions, generated in one batch and trained in one micro-batch.
            per_device_train_batch_size=args.prompts * config.rollouts,
            gradient_accumulation_steps=1,
            num_generations=config.rollouts,
            max_completion_length=config.max_new_tokens,
            temperature=config.temperature,
            top_p=1.0,
            beta=config.beta,
            epsilon=config.epsilon,
            # The objective the other two compute (per-rollout token mean, then mean over rollouts); trl's default
            # is "dapo". The cost is the same either way.
            loss_type="grpo",
            learning_rate=config.learning_rate,
            lr_scheduler_type="constant",
            weight_decay=1e-4,  # optax.adamw's default, used by the other two
            max_grad_norm=config.max_grad_norm,
            max_steps=args.steps,
            shuffle_dataset=False,
            report_to="none",
            logging_strategy="no",
            save_strategy="no",
            eval_strategy="no",
        )
        trainer = GRPOTrainer(
            model=AutoModelForCausalLM.from_pretrained(str(args.model), dtype=torch.float32),
            reward_funcs=profile_reward,
            args=trl_args,
            # One row per prompt and step: trl's sampler repeats each prompt G times itself.
            train_dataset=Dataset.from_list([{"prompt": m} for _ in range(args.steps) for m in conversations]),
            processing_class=tokenizer,
            callbacks=[StepTimer()],
        )
        trainer.train()
    return {"step_seconds": seconds,
            "prompt_tokens": prompt_token_counts(tokenizer, conversations),
            "completion_tokens": float(np.mean(generated))}


RUNNERS = {"ours": run_ours, "ours-bf16": lambda args: run_ours(args, "bfloat16"), "ours-bf16-ynn": run_ours_ynn_update,
           "ours-bf16-eigen": run_ours_eigen_update,
           "ours-lora": lambda args: run_ours(args, "bfloat16", lora=True), "tunix": run_tunix, "trl": run_trl}


def worker(args: argparse.Namespace) -> None:
    """Run one contender and print its result as the last line of stdout."""
    result = RUNNERS[args.worker](args)
    result.update(contender=args.worker, peak_rss_kb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    print(json.dumps(result), flush=True)


def run_contender(name: str, argv: list[str]) -> dict | None:
    """The contender's result, or None when its subprocess failed (its stderr has already been shown)."""
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", name, *argv],
                          stdout=subprocess.PIPE, text=True)
    lines = proc.stdout.strip().splitlines()
    # Anything the libraries printed to stdout goes to stderr, so the parent's stdout is only the report.
    sys.stderr.write("".join(f"[{name}] {line}\n" for line in lines[:-1]))
    if proc.returncode != 0 or not lines:
        print(f"{name}: worker failed with exit status {proc.returncode}", file=sys.stderr)
        return None
    return json.loads(lines[-1])


def _ratio(value: float, base: float | None) -> str:
    return "-" if base is None else f"{value / base:.2f}x"


def _steady(result: dict, warmup: int) -> float:
    rest = result["step_seconds"][warmup:]
    return sum(rest) / len(rest)


def roofline_seconds(model: Path, result: dict, rollouts: int, bf16: bool, remat: bool, lora: bool = False,
                     gflops: float = 370.0, bandwidth: float = 25.0) -> float:
    """A floor for one step on this machine (DATA.md: 370 GFLOP/s bf16, half in f32, 25 GB/s): decode steps that
    stream the weights or run their dots, whichever is slower, plus the update's dots (reference forward, policy
    forward and backward, and a second forward when layers are rematerialised), each prompt prefilled once. With
    LoRA the backward pass has no weight-gradient dots (half the backward); the adapters' own dots are left out."""
    config = json.loads((model / "config.json").read_text())
    d, f = config["hidden_size"], config["intermediate_size"]
    head = config.get("head_dim") or d // config["num_attention_heads"]
    kv = config.get("num_key_value_heads", config["num_attention_heads"]) * head
    params = config["num_hidden_layers"] * (2 * d * config["num_attention_heads"] * head + 2 * d * kv + 3 * d * f)
    params += config["vocab_size"] * d
    peak = (gflops if bf16 else gflops / 2) * 1e9
    rows, new = len(result["prompt_tokens"]) * rollouts, result["completion_tokens"]
    decode = new * max(params * (2 if bf16 else 4) / (bandwidth * 1e9), 2 * params * rows / peak)
    tokens = sum(result["prompt_tokens"]) + rows * new
    passes = 1 + 1 + (1 if lora else 2) + (1 if remat else 0)
    return decode + 2 * params * tokens * (1 + passes) / peak


def report(results: dict[str, dict | None], warmup: int, args: argparse.Namespace) -> None:
    ours = results.get("ours")
    base_steady = _steady(ours, warmup) if ours else None
    base_rss = ours["peak_rss_kb"] if ours else None
    print("| contender | warm-up step(s) s | steady s/step | roofline s/step | roofline / steady | peak RSS GiB | "
          "tokens/rollout | steady time / ours | peak RSS / ours |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, result in results.items():
        if result is None:
            print(f"| {name} | failed | | | | | | | |")
            continue
        warm = " + ".join(f"{s:.2f}" for s in result["step_seconds"][:warmup])
        steady = _steady(result, warmup)
        bf16 = name in ("ours-bf16", "ours-bf16-ynn", "ours-bf16-eigen", "ours-lora")
        floor = roofline_seconds(args.model, result, args.rollouts, bf16,
                                 args.remat if name.startswith("ours") else name == "trl", lora=name == "ours-lora")
        print(
            f"| {name} | {warm} | {steady:.2f} | {floor:.2f} | {floor / steady:.0%} | "
            f"{result['peak_rss_kb'] / 2**20:.2f} | {result['completion_tokens']:.1f} | "
            f"{_ratio(steady, base_steady)} | {_ratio(result['peak_rss_kb'], base_rss)} |"
        )
    for name, result in results.items():
        if result is not None:
            print(f"{name} seconds per step: " + ", ".join(f"{s:.2f}" for s in result["step_seconds"]))
            if "rollout_seconds" in result:
                print(f"{name} of which sampling the rollouts: " + ", ".join(f"{s:.2f}" for s in result["rollout_seconds"])
                      + "; the update (reference pass, forward, backward, optimizer, weights back): "
                      + ", ".join(f"{s:.2f}" for s in result["update_seconds"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="HF-layout chat model directory")
    parser.add_argument("--prompts", type=int, default=4, help="B: prompts per step")
    parser.add_argument("--rollouts", type=int, default=4, help="G: rollouts per prompt")
    parser.add_argument("--new-tokens", type=int, default=85, help="N: max new tokens per rollout")
    parser.add_argument("--steps", type=int, default=3, help="GRPO steps, warm-up included")
    parser.add_argument("--warmup", type=int, default=1, help="leading steps reported apart (compilation, warm-up)")
    parser.add_argument("--history-lines", type=int, default=11, help="movie lines per prompt (11: ~270 tokens)")
    parser.add_argument("--tunix-prompt-length", type=int, default=512,
                        help="tunix's static prompt width (its own choice for a ~270-token prompt: next power of 2)")
    parser.add_argument("--remat", action=argparse.BooleanOptionalAction, default=True,
                        help="ours: recompute each layer in the backward pass (--no-remat keeps activations)")
    parser.add_argument("--lora-rank", type=int, default=16, help="ours-lora: adapter rank")
    parser.add_argument("--lora-alpha", type=float, default=32.0, help="ours-lora: adapter scale numerator (alpha / rank)")
    parser.add_argument("--only", default=",".join(CONTENDERS), help="comma-separated subset of %(default)s")
    parser.add_argument("--worker", choices=CONTENDERS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not 1 <= args.warmup < args.steps:
        parser.error("need 1 <= --warmup < --steps: steady time is the mean of the steps after the warm-up")
    if args.worker:
        worker(args)
        return
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    if unknown := set(names) - set(CONTENDERS):
        parser.error(f"unknown contenders {sorted(unknown)}; choose from {','.join(CONTENDERS)}")
    argv = ["--model", str(args.model), "--prompts", str(args.prompts), "--rollouts", str(args.rollouts),
            "--new-tokens", str(args.new_tokens), "--steps", str(args.steps), "--warmup", str(args.warmup),
            "--history-lines", str(args.history_lines), "--tunix-prompt-length", str(args.tunix_prompt_length),
            "--remat" if args.remat else "--no-remat", "--lora-rank", str(args.lora_rank), "--lora-alpha",
            str(args.lora_alpha)]
    results = {}
    for name in names:  # one at a time: concurrent contenders would share the cores and distort each other
        print(f"running {name} ...", file=sys.stderr, flush=True)
        results[name] = run_contender(name, argv)
    done = next((r for r in results.values() if r is not None), None)
    print(f"model {args.model}; B={args.prompts} prompts x G={args.rollouts} rollouts, at most {args.new_tokens} new "
          f"tokens, {args.steps} steps ({args.warmup} warm-up, steady = mean of the rest)"
          + (f"; prompt tokens {done['prompt_tokens']}" if done else ""))
    report(results, args.warmup, args)
    if any(r is None for r in results.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
