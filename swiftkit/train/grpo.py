"""`swiftkit grpo`: reinforcement learning with verifiable rewards on TRL's GRPOTrainer.

Each step samples `--num-generations` completions per prompt, scores them with the rewards
(swiftkit/train/rewards.py) and moves the policy towards the completions that beat their group's mean.
Adapter semantics as in `swiftkit dpo`: an SFT artifact's chain is merged in memory; that model is the
starting policy and, with `--beta > 0`, the KL reference (the new LoRA disabled).

Rollouts run on swiftkit's engine (`--rollout-engine swiftkit`, the default on CUDA) or on TRL's own
`generate` (`trl`, the reference). Before and after training, held-out prompts are answered greedily and
scored with the same rewards: the measure of what training changed.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from swiftkit.artifacts import Manifest, partial_dir, write_manifest
from swiftkit.errors import SwiftkitError
from swiftkit.resolve import resolve_model_ref
from swiftkit.train import common, launch, rewards
from swiftkit.train.config import GRPOConfig

# TRL 1.16's GRPO losses.
LOSS_TYPES = ("grpo", "dapo", "dr_grpo", "bnpo", "cispo", "sapo", "vespo", "luspo")


def run(cfg: GRPOConfig) -> Path:
    _check(cfg)
    with common.start(cfg, "grpo") as (cfg, should_train):
        if should_train:
            _train(cfg)
    return Path(cfg.output)


def _check(cfg: GRPOConfig) -> None:
    if cfg.loss_type not in LOSS_TYPES:
        raise SwiftkitError(f"--loss-type {cfg.loss_type}: not a GRPO loss TRL provides", f"choose from: {', '.join(LOSS_TYPES)}")
    per_step = cfg.batch_size * cfg.grad_accum * cfg.nproc
    if per_step % cfg.num_generations:
        raise SwiftkitError(
            f"--batch-size x --grad-accum x --nproc = {per_step} completions a step is not a whole number of groups of "
            f"--num-generations {cfg.num_generations}",
            f"e.g. --batch-size {cfg.num_generations * max(1, cfg.batch_size // cfg.num_generations)}",
        )
    rewards.build_rewards(cfg, load_models=False)


def rollout_engine(cfg: GRPOConfig) -> str:
    """swiftkit or trl: `auto` means swiftkit's engine on CUDA, TRL's generate elsewhere."""
    if cfg.rollout_engine != "auto":
        return cfg.rollout_engine
    import torch

    return "swiftkit" if torch.cuda.is_available() else "trl"


def _train(cfg: GRPOConfig) -> None:
    started = time.time()
    mref = resolve_model_ref(cfg.model)
    # Data before the heavy imports and before the artifact folder: bad input fails fast, leaving nothing.
    tokenizer, data, held = common.prepare_data(cfg, mref, "prompt")
    history = common.run_history(cfg, common.data_entry(data, held))
    train_rows, eval_rows = common.split(cfg, data, held)
    eval_rows = eval_rows[: cfg.eval_rows]
    funcs, reward_tokenizers, names = rewards.build_rewards(cfg)
    from datasets import Dataset
    from trl import GRPOConfig as TRLGRPOConfig

    from swiftkit.loading import serving_info

    common.quiet_workers()
    resume_from = common.last_checkpoint(partial_dir(cfg.output)) if cfg.resume else None
    engine = rollout_engine(cfg)
    with common.writer(cfg) as tmp:
        common.record_run(tmp, history)
        scratch = tmp / "scratch" / f"rank{launch.rank()}"
        model = common.load_for_training(cfg, mref, scratch)
        args = common.trainer_args(cfg, tmp, False)
        args.pop("max_length")  # GRPO bounds the completion instead; prompts were length-checked above
        args = TRLGRPOConfig(
            **args,
            num_generations=cfg.num_generations,
            max_completion_length=cfg.max_completion_length,
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            top_k=cfg.top_k,
            beta=cfg.beta,
            loss_type=cfg.loss_type,
            reward_weights=cfg.reward_weights or None,
            log_completions=False,
        )
        trainer = _trainer_class()(
            model=model,
            reward_funcs=funcs,
            args=args,
            train_dataset=Dataset.from_list(train_rows),
            processing_class=tokenizer,
            reward_processing_classes=reward_tokenizers,
            peft_config=common.lora_config(cfg),
        )
        from swiftkit.train.rollouts import EngineRollouts

        rollouts = EngineRollouts(
            trainer.model,
            tokenizer,
            trainer.eos_token_ids,
            max_seqs=max(cfg.batch_size * cfg.grad_accum, min(len(eval_rows), 64), 1),
            max_model_len=cfg.max_length + cfg.max_completion_length,
            full_finetune=cfg.method == "full",
            seed=cfg.seed,
        )
        trainer.rollouts = rollouts if engine == "swiftkit" else None
        run = common.train_measured(
            trainer,
            f"grpo ({cfg.loss_type}, {cfg.method}, rollouts: {engine})",
            lambda: held_out_rewards(rollouts, tokenizer, eval_rows, funcs, reward_tokenizers, names, cfg),
            resume_from,
            shown=(
                ("reward", "reward"),
                ("kl", "kl"),
                ("completions/mean_length", "len"),
                ("rollout_s", "rollout s"),
                ("step_time", "step s"),
            ),
        )
        if not common.save_trained(trainer, tokenizer, tmp):
            return
        keys = ["eval_reward", *(f"eval_reward/{n}" for n in names)]
        metrics = common.run_metrics(
            run,
            started,
            keys,
            reference=str(mref.path),
            train_rows=len(train_rows),
            eval_rows=len(eval_rows),
            rollout_engine=engine,
            **_rollout_metrics(trainer, run.result),
        )
        write_manifest(
            tmp,
            Manifest(
                stage="grpo",
                **common.adapter_lineage(mref, cfg.method),
                **common.provenance(cfg, data, held, history),
                metrics=metrics,
                serving=serving_info(tokenizer, model),
            ),
        )
    rows = [
        ("model / reference", mref.ref),
        ("prompts", f"{len(train_rows)} train / {len(eval_rows)} held out"),
        ("steps", metrics["steps"]),
        ("rollouts", f"{engine}: {metrics.get('rollout_tokens_per_s', 0):,.0f} tok/s, {metrics.get('rollout_share', 0):.0%} of step time"),
        *common.change_rows(metrics, [(k, f"held-out {k.removeprefix('eval_')} (greedy)") for k in keys]),
    ]
    common.print_summary(f"grpo ({cfg.loss_type}, {cfg.method})", rows, metrics, cfg.output)


def held_out_rewards(
    rollouts, tokenizer, rows: list[dict], funcs: list, reward_tokenizers: list, names: list[str], cfg: GRPOConfig
) -> dict[str, Any]:
    """Greedy answers to the held-out prompts, scored by every reward (and their weighted sum)."""
    if not rows:
        return {}
    from swiftkit.train.rollouts import prompt_ids

    outputs = rollouts.generate(prompt_ids(tokenizer, rows), cfg.max_completion_length, 1.0, greedy=True)
    completions = [[{"role": "assistant", "content": tokenizer.decode(o, skip_special_tokens=True)}] for o in outputs]
    columns = {k: [r.get(k) for r in rows] for k in rows[0] if k != "prompt"}
    weights = cfg.reward_weights or [1.0] * len(funcs)
    metrics: dict[str, Any] = {}
    total = [0.0] * len(rows)
    for func, reward_tokenizer, name, weight in zip(funcs, reward_tokenizers, names, weights, strict=True):
        scores = _score(func, reward_tokenizer or tokenizer, [r["prompt"] for r in rows], completions, columns)
        metrics[f"eval_reward/{name}"] = sum(scores) / len(scores)
        total = [t + weight * s for t, s in zip(total, scores, strict=True)]
    metrics["eval_reward"] = sum(total) / len(total)
    return metrics


def _score(func, tokenizer, prompts: list, completions: list, columns: dict[str, list]) -> list[float]:
    """One reward's scores: a function's (None counts 0), or a reward model's on prompt + completion."""
    import torch

    if not isinstance(func, torch.nn.Module):
        return [0.0 if s is None else float(s) for s in func(prompts=prompts, completions=completions, **columns)]
    texts = [tokenizer.apply_chat_template(p + c, tokenize=False) for p, c in zip(prompts, completions, strict=True)]
    with torch.no_grad():
        batch = tokenizer(texts, return_tensors="pt", padding=True).to(next(func.parameters()).device)
        return func(**batch).logits[:, 0].float().tolist()


def _rollout_metrics(trainer, result) -> dict[str, Any]:
    """Rollout tokens, tokens/s and the share of training time spent generating."""
    out: dict[str, Any] = {"rollout_tokens": trainer.rollout_tokens, "rollout_s": trainer.rollout_seconds}
    runtime = result.metrics.get("train_runtime")
    if trainer.rollout_seconds:
        out["rollout_tokens_per_s"] = trainer.rollout_tokens / trainer.rollout_seconds
        if runtime:
            out["rollout_share"] = trainer.rollout_seconds / runtime
    return out


def _trainer_class():
    """GRPOTrainer whose rollouts run on swiftkit's engine when `rollouts` is set (TRL's generate otherwise),
    timing every rollout either way (`rollout_s` in the logs: generation vs the rest of the step)."""
    from trl import GRPOTrainer

    class SwiftkitGRPOTrainer(GRPOTrainer):
        rollouts = None
        rollout_tokens = 0
        rollout_seconds = 0.0

        def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
            import torch

            start = time.perf_counter()
            if self.rollouts is None or images is not None or multimodal_fields:
                completion_ids, logprobs = super()._generate_single_turn(
                    prompt_ids, images, multimodal_fields, num_generations, has_tool_images
                )
            else:
                completion_ids = self.rollouts.generate(
                    prompt_ids, self.args.max_completion_length, self.args.temperature, self.args.top_p, self.args.top_k
                )
                logprobs = None  # TRL computes the old policy's log-probs itself, as for its own generate
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            seconds = time.perf_counter() - start
            self.rollout_seconds += seconds
            self.rollout_tokens += sum(map(len, completion_ids))
            self._metrics["train"]["rollout_s"].append(seconds)
            return completion_ids, logprobs

    return SwiftkitGRPOTrainer
