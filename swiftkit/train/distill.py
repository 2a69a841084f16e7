"""`swiftkit distill`: teacher -> student on TRL's DistillationTrainer (on-policy generalised JSD).

The student answers the prompts itself; the teacher's next-token distribution over those same tokens,
computed on the fly, is the target (`--beta` picks forward KL, reverse KL or the JSD between). Both must
share a vocabulary. The student is `--model` (LoRA by default, as every stage); the teacher is any model
reference, its adapter chain merged in memory and frozen.

Before and after training, held-out prompts are answered greedily by both: the share of identical answers
(`agreement`) and, where rows carry an `answer`, the exact match of each, are the measure of the transfer.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from swiftkit.artifacts import Manifest, partial_dir, write_manifest
from swiftkit.errors import SwiftkitError
from swiftkit.resolve import resolve_model_ref
from swiftkit.train import common, launch
from swiftkit.train.config import DistillConfig
from swiftkit.train.rewards import exact_match

EVAL_KEYS = ("eval_agreement", "eval_exact_match")


def run(cfg: DistillConfig) -> Path:
    with common.start(cfg, "distill") as (cfg, should_train):
        if should_train:
            _train(cfg)
    return Path(cfg.output)


def _train(cfg: DistillConfig) -> None:
    started = time.time()
    mref = resolve_model_ref(cfg.model)
    tref = resolve_model_ref(cfg.teacher)
    tokenizer, data, held = common.prepare_data(cfg, mref, "prompt")
    _check_vocabulary(tokenizer, tref, cfg)
    history = common.run_history(cfg, common.data_entry(data, held))
    train_rows, eval_rows = common.split(cfg, data, held)
    eval_rows = eval_rows[: cfg.eval_rows]
    from datasets import Dataset
    from trl import DistillationConfig, DistillationTrainer

    from swiftkit.loading import load_model, serving_info
    from swiftkit.train.rollouts import EngineRollouts, prompt_ids

    common.quiet_workers()
    resume_from = common.last_checkpoint(partial_dir(cfg.output)) if cfg.resume else None
    with common.writer(cfg) as tmp:
        common.record_run(tmp, history)
        scratch = tmp / "scratch" / f"rank{launch.rank()}"
        model = common.load_for_training(cfg, mref, scratch)
        teacher = load_model(tref, dtype=cfg.dtype, trust_remote_code=cfg.trust_remote_code)[0].eval().requires_grad_(False)
        args = common.trainer_args(cfg, tmp, False)
        args.pop("max_length")  # prompts were length-checked; --max-completion-length bounds the rest
        trainer = DistillationTrainer(
            model=model,
            teacher_model=teacher,
            args=DistillationConfig(
                **args, max_completion_length=cfg.max_completion_length, temperature=cfg.temperature, beta=cfg.beta, log_completions=False
            ),
            train_dataset=Dataset.from_list(train_rows),
            processing_class=tokenizer,
            peft_config=common.lora_config(cfg),
        )
        length = cfg.max_length + cfg.max_completion_length
        seqs = max(1, min(len(eval_rows), 64))
        student_gen = EngineRollouts(trainer.model, tokenizer, [tokenizer.eos_token_id], seqs, length, cfg.method == "full", cfg.seed)
        teacher_gen = EngineRollouts(teacher, tokenizer, [tokenizer.eos_token_id], seqs, length, True, cfg.seed)
        prompts = prompt_ids(tokenizer, eval_rows)
        teacher_answers = _answers(teacher_gen, tokenizer, prompts, cfg) if prompts else []
        teacher_scores = _scores(teacher_answers, teacher_answers, eval_rows)
        run = common.train_measured(
            trainer,
            f"distill ({cfg.method}, beta {cfg.beta})",
            lambda: _scores(_answers(student_gen, tokenizer, prompts, cfg), teacher_answers, eval_rows) if prompts else {},
            resume_from,
        )
        if not common.save_trained(trainer, tokenizer, tmp):
            return
        metrics = common.run_metrics(
            run,
            started,
            EVAL_KEYS,
            teacher=str(tref.path),
            teacher_exact_match=teacher_scores.get("eval_exact_match"),
            train_rows=len(train_rows),
            eval_rows=len(eval_rows),
        )
        manifest = Manifest(
            stage="distill",
            **common.adapter_lineage(mref, cfg.method),
            **common.provenance(cfg, data, held, history),
            metrics=metrics,
            serving=serving_info(tokenizer, model),
        )
        write_manifest(tmp, manifest)
    rows = [
        ("student / teacher", f"{mref.ref} / {tref.ref}"),
        ("prompts", f"{len(train_rows)} train / {len(eval_rows)} held out"),
        ("steps", metrics["steps"]),
        *common.change_rows(metrics, [("eval_agreement", "greedy answers = teacher's"), ("eval_exact_match", "held-out exact match")]),
    ]
    if metrics.get("teacher_exact_match") is not None:
        rows.append(("teacher exact match", f"{metrics['teacher_exact_match']:.3f}"))
    common.print_summary(f"distill ({cfg.method})", rows, metrics, cfg.output)


def _check_vocabulary(tokenizer, tref, cfg: DistillConfig) -> None:
    from swiftkit.loading import load_tokenizer

    teacher_tokenizer = load_tokenizer(tref, cfg.trust_remote_code)
    if teacher_tokenizer.get_vocab() != tokenizer.get_vocab():
        raise SwiftkitError(
            f"--teacher {cfg.teacher} has another vocabulary than --model {cfg.model}",
            "distillation compares next-token distributions token by token: use a teacher of the same tokenizer",
        )


def _answers(generator, tokenizer, prompts: list[list[int]], cfg: DistillConfig) -> list[str]:
    outputs = generator.generate(prompts, cfg.max_completion_length, 1.0, greedy=True)
    return [tokenizer.decode(o, skip_special_tokens=True).strip() for o in outputs]


def _scores(answers: list[str], teacher_answers: list[str], rows: list[dict]) -> dict[str, Any]:
    if not answers:
        return {}
    out: dict[str, Any] = {"eval_agreement": sum(a == t for a, t in zip(answers, teacher_answers, strict=True)) / len(answers)}
    if all("answer" in r for r in rows):
        scores = exact_match()(None, answers, answer=[r["answer"] for r in rows])
        out["eval_exact_match"] = sum(scores) / len(scores)
    return out
