"""GRPO rollouts: swiftkit's engine vs TRL's own generate, same policy, same steps, ratio in one run (issue 15).

A random-init architecture (bf16 on CUDA, fp32 on CPU) with a LoRA policy, `--prompts` prompts of
`--prompt-tokens` words x `--generations` completions of up to `--tokens` new tokens a step. Each engine
trains `--steps` steps from the same seed; the first step (CUDA-graph capture, allocator growth) is reported
apart. Rollout time is measured inside the trainer around generation (swiftkit/train/grpo.py), step time by a
callback; tokens are what was generated (a random model rarely samples its eos).

With `--check-toy ARTIFACT` it first checks greedy equality: rollouts of swiftkit's engine = TRL's generate,
in fp32, on that (toy or SFT) artifact, as tests/train/test_grpo.py does on the CPU.

    python benchmarks/grpo_rollouts.py --arch qwen2.5-1.5b --steps 4 [--check-toy DIR] [--output OUT.json]
"""

from __future__ import annotations

import argparse
import json
import random
import time

import torch
from transformers import TrainerCallback


class StepClock(TrainerCallback):
    """Wall time of each step, and the trainer's cumulative rollout seconds / tokens at each step's end."""

    def __init__(self, trainer):
        self.trainer = trainer
        self.marks: list[float] = []
        self.rollouts: list[tuple[float, int]] = [(0.0, 0)]

    def on_step_begin(self, args, state, control, **kw):
        if not self.marks:
            self.marks.append(time.perf_counter())

    def on_step_end(self, args, state, control, **kw):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.marks.append(time.perf_counter())
        self.rollouts.append((self.trainer.rollout_seconds, self.trainer.rollout_tokens))


def build_trainer(model, tokenizer, prompts: list[str], cfg, engine: str):
    from datasets import Dataset
    from peft import LoraConfig
    from trl import GRPOConfig

    from swiftkit.train.grpo import _trainer_class
    from swiftkit.train.rollouts import EngineRollouts

    rng = random.Random(0)

    def noisy_length(prompts, completions, **kw):  # any reward with spread: the loss must be a real one
        return [len(c) / 1000 + rng.random() for c in completions]

    on_cuda = torch.cuda.is_available()
    args = GRPOConfig(
        output_dir="/tmp/grpo-bench", per_device_train_batch_size=cfg.prompts * cfg.generations, num_generations=cfg.generations,
        max_completion_length=cfg.tokens, max_steps=cfg.steps, logging_steps=1, report_to="none", bf16=on_cuda,
        use_cpu=not on_cuda, save_strategy="no", disable_tqdm=True, learning_rate=1e-5, beta=0.0, seed=0,
    )  # fmt: skip
    trainer = _trainer_class()(model=model, reward_funcs=noisy_length, args=args, train_dataset=Dataset.from_list(
        [{"prompt": p} for p in prompts]), processing_class=tokenizer,
        peft_config=LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"))
    if engine == "swiftkit":
        trainer.rollouts = EngineRollouts(trainer.model, tokenizer, trainer.eos_token_ids, cfg.prompts * cfg.generations,
                                          cfg.prompt_tokens + cfg.tokens + 8, full_finetune=False, seed=0)
    return trainer


def bench(cfg) -> dict:
    from swiftkit.bench.engine import word_tokenizer
    from swiftkit.bench.train import random_model

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    rng = random.Random(0)
    results = {}
    for engine in cfg.engines.split(","):
        torch.manual_seed(0)
        model = random_model(cfg.arch, dtype, device)
        tokenizer = word_tokenizer(model.config.vocab_size)
        tokenizer.padding_side = "left"
        model.config.eos_token_id = model.generation_config.eos_token_id = tokenizer.eos_token_id
        model.config.pad_token_id = model.generation_config.pad_token_id = tokenizer.pad_token_id
        prompts = [" ".join(f"w{rng.randrange(10, 2000)}" for _ in range(cfg.prompt_tokens)) for _ in range(cfg.prompts * cfg.steps)]
        trainer = build_trainer(model, tokenizer, prompts, cfg, engine)
        clock = StepClock(trainer)
        trainer.add_callback(clock)
        trainer.train()
        steps = [b - a for a, b in zip(clock.marks, clock.marks[1:], strict=False)]
        seconds = [b[0] - a[0] for a, b in zip(clock.rollouts, clock.rollouts[1:], strict=False)]
        tokens = [b[1] - a[1] for a, b in zip(clock.rollouts, clock.rollouts[1:], strict=False)]
        results[engine] = {
            "first_step_s": steps[0], "first_rollout_s": seconds[0],
            "step_s": sum(steps[1:]) / max(len(steps) - 1, 1),
            "rollout_s": sum(seconds[1:]) / max(len(seconds) - 1, 1),
            "rollout_tok_s": sum(tokens[1:]) / max(sum(seconds[1:]), 1e-9),
            "tokens_per_rollout": sum(tokens[1:]) / max(len(tokens) - 1, 1),
        }  # fmt: skip
        print(engine, json.dumps(results[engine]), flush=True)
        del trainer, model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if {"trl", "swiftkit"} <= results.keys():
        results["ratio"] = {
            "rollout_tok_s": results["swiftkit"]["rollout_tok_s"] / results["trl"]["rollout_tok_s"],
            "step_s": results["trl"]["step_s"] / results["swiftkit"]["step_s"],
        }
    return results


def check_toy(path: str) -> dict:
    """Greedy rollouts on swiftkit's engine = TRL's generate, fp32, on the artifact (LoRA weights perturbed)."""
    from datasets import Dataset
    from peft import LoraConfig
    from trl import GRPOConfig

    from swiftkit.loading import load_model, load_tokenizer
    from swiftkit.resolve import resolve_model_ref
    from swiftkit.train.grpo import _trainer_class
    from swiftkit.train.rollouts import EngineRollouts

    mref = resolve_model_ref(path)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model, tokenizer = load_model(mref, dtype="float32")[0].to(device), load_tokenizer(mref)
    # Plain text in the toy's pre-training style (the base toy answers a chat prompt with eos at once).
    rows = [{"prompt": f"the larger of {a} and {b} is"} for a, b in ((12, 85), (70, 7), (33, 34), (5, 61))]
    args = GRPOConfig(output_dir="/tmp/unused", per_device_train_batch_size=4, num_generations=2, max_completion_length=12,
                      use_cpu=device.type == "cpu", report_to="none", generation_kwargs={"do_sample": False})
    trainer = _trainer_class()(model=model, reward_funcs=lambda prompts, completions, **kw: [0.0] * len(completions), args=args,
                               train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                               peft_config=LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"))
    torch.manual_seed(0)
    for name, param in trainer.model.named_parameters():
        if "lora_B" in name:
            param.data.normal_(0, 0.02)
    ids = [tokenizer(r["prompt"])["input_ids"] for r in rows]
    trl_ids, _ = trainer._generate_single_turn(ids, None, {}, 1)
    engine = EngineRollouts(trainer.model, tokenizer, trainer.eos_token_ids, 8, 64, full_finetune=False, seed=0)
    ours = engine.generate(ids, 12, 1.0, greedy=True)
    trl_ids = [list(map(int, t)) for t in trl_ids]
    return {"device": str(device), "equal": trl_ids == ours, "trl": trl_ids, "swiftkit": ours}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--arch", default="qwen2.5-1.5b")
    parser.add_argument("--engines", default="trl,swiftkit")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--generations", type=int, default=8)
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--check-toy")
    parser.add_argument("--output")
    cfg = parser.parse_args()
    report = {"device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu", "config": vars(cfg)}
    if cfg.check_toy:
        report["check"] = check_toy(cfg.check_toy)
        print("greedy equality", report["check"]["device"], report["check"]["equal"], flush=True)
    report["bench"] = bench(cfg) if cfg.engines else {}
    print(json.dumps(report["bench"], indent=1))
    if cfg.output:
        with open(cfg.output, "w") as fh:
            json.dump(report, fh, indent=1)


if __name__ == "__main__":
    main()
