"""`swiftkit dpo`: preference training on TRL's DPOTrainer (LoRA by default).

Adapter semantics (docs/contract.md "Adapter chains"): given an SFT adapter artifact, its chain is merged
into the base in memory; that merged SFT model is both the starting policy (a new LoRA trains on top) and
the frozen reference (the LoRA disabled) — never the pre-SFT base. With --method full the reference is a
second, frozen copy of the same merged model.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from swiftkit.artifacts import Manifest, partial_dir, write_manifest
from swiftkit.console import summary
from swiftkit.errors import SwiftkitError
from swiftkit.resolve import resolve_model_ref
from swiftkit.train import common, launch
from swiftkit.train.config import DPOConfig

# TRL 1.16's DPOTrainer loss types; ORPO / KTO / SimPO are separate trainers (not wired up here).
LOSS_TYPES = (
    "sigmoid",
    "hinge",
    "ipo",
    "exo_pair",
    "nca_pair",
    "robust",
    "bco_pair",
    "sppo_hard",
    "aot",
    "aot_unpaired",
    "apo_zero",
    "apo_down",
    "discopop",
    "sft",
    "sigmoid_norm",
)
REFERENCE_CHECK = "reference_check.json"


def loss_types(spec: str) -> list[str]:
    """`sigmoid` or a sum of equally weighted losses, e.g. `sigmoid+sft` (DPO plus an NLL term on chosen)."""
    parts = [p.strip() for p in spec.split("+")]
    unknown = [p for p in parts if p not in LOSS_TYPES]
    if unknown:
        raise SwiftkitError(
            f"--loss-type {spec}: {unknown[0]!r} is not a DPO loss TRL provides",
            f"choose from: {', '.join(LOSS_TYPES)} (combine with +, e.g. sigmoid+sft)",
        )
    return parts


def run(cfg: DPOConfig) -> Path:
    loss_types(cfg.loss_type)
    with common.start(cfg, "dpo") as (cfg, should_train):
        if should_train:
            _train(cfg)
    return Path(cfg.output)


def _train(cfg: DPOConfig) -> None:
    started = time.time()
    mref = resolve_model_ref(cfg.model)
    # Data before the heavy imports and before the artifact folder: bad input fails fast, leaving nothing.
    tokenizer, data, held = common.prepare_data(cfg, mref, "preference")
    history = common.run_history(cfg, common.data_entry(data, held))  # a changed --resume refuses here
    train_rows, eval_rows = common.split(cfg, data, held)
    from datasets import Dataset
    from trl import DPOConfig as TRLDPOConfig
    from trl import DPOTrainer

    from swiftkit.loading import serving_info
    from swiftkit.train.scoring import preference_scores

    common.quiet_workers()
    resume_from = common.last_checkpoint(partial_dir(cfg.output)) if cfg.resume else None

    with common.writer(cfg) as tmp:
        common.record_run(tmp, history)
        scratch = tmp / "scratch" / f"rank{launch.rank()}"
        model = common.load_for_training(cfg, mref, scratch)
        # Full fine-tuning needs an explicit frozen reference: left to itself TRL would reload the
        # model's config path, i.e. the pre-SFT base.
        ref_model = common.load_for_training(cfg, mref, scratch) if cfg.method == "full" else None
        args = TRLDPOConfig(**common.trainer_args(cfg, tmp, bool(eval_rows)), beta=cfg.beta, loss_type=loss_types(cfg.loss_type))
        trainer = DPOTrainer(
            model=model,
            ref_model=ref_model,
            args=args,
            train_dataset=Dataset.from_list(train_rows),
            eval_dataset=Dataset.from_list(eval_rows) if eval_rows else None,
            processing_class=tokenizer,
            peft_config=common.lora_config(cfg),
        )
        timing = common.prepare_trainer(trainer, f"dpo ({cfg.loss_type}, {cfg.method})")
        score = eval_rows and cfg.distributed == "ddp"  # own forward passes don't fit sharded (fsdp/zero-3) models
        before = {
            **(trainer.evaluate() if eval_rows else {}),
            **_prefixed(preference_scores(trainer.model, tokenizer, eval_rows) if score else {}),
        }
        result = trainer.train(resume_from_checkpoint=resume_from)
        after = {
            **(trainer.evaluate() if eval_rows else {}),
            **_prefixed(preference_scores(trainer.model, tokenizer, eval_rows) if score else {}),
        }
        check = _reference_check(trainer, eval_rows, str(mref.path)) if score else None
        trainer.save_model(str(tmp))
        if not launch.is_main():
            return
        common.finish_dir(tmp)
        tokenizer.save_pretrained(tmp)
        if check:
            (tmp / REFERENCE_CHECK).write_text(json.dumps(check, indent=1) + "\n")
        metrics = _metrics(result, before, after, trainer, started, timing)
        metrics.update(common.throughput(trainer, result, timing))
        metrics.update(reference=str(mref.path), train_rows=len(train_rows), eval_rows=len(eval_rows))
        manifest = Manifest(
            stage="dpo",
            **common.adapter_lineage(mref, cfg.method),
            config=cfg.model_dump(),
            data=common.data_entry(data, held),
            **common.resume_entry(history),
            metrics=metrics,
            serving=serving_info(tokenizer, model),
        )
        write_manifest(tmp, manifest)
    rows = [
        ("model / reference", mref.ref),
        ("rows", f"{len(train_rows)} train / {len(eval_rows)} eval"),
        ("steps", metrics["steps"]),
    ]
    if "pref_accuracy_after" in metrics:
        rows += [
            (
                "held-out pref. accuracy",
                f"{metrics['pref_accuracy_before']:.3f} -> {metrics['pref_accuracy_after']:.3f}",
            ),
            (
                "held-out logp margin",
                f"{metrics['pref_margin_before']:.3f} -> {metrics['pref_margin_after']:.3f}",
            ),
        ]
    if "eval_rewards/margins_after" in metrics:
        rows.append(
            (
                "reward margin / accuracy",
                f"{metrics['eval_rewards/margins_after']:.3f} / {metrics['eval_rewards/accuracies_after']:.3f}",
            )
        )
    summary(
        f"dpo ({cfg.loss_type}, {cfg.method})",
        [*rows, *common.speed_rows(metrics), ("time", f"{metrics['runtime_s']:.0f}s")],
        artifact=cfg.output,
    )


def _prefixed(scores: dict[str, float]) -> dict[str, float]:
    return {f"pref_{k}": v for k, v in scores.items()}


def _reference_check(trainer, eval_rows: list[dict], reference: str, rows: int = 4) -> dict[str, Any]:
    """Reference log-probs TRL itself computes on the first held-out rows, saved so anyone can check
    them against the model the manifest names as reference."""
    batch = next(iter(trainer.get_eval_dataloader()))
    ref = trainer.ref_model if trainer.ref_model is not None else trainer.model
    chosen, rejected = trainer.compute_ref_log_probs(ref, batch)
    n = min(rows, len(chosen))
    return {
        "reference": reference,
        "rows": eval_rows[:n],
        "chosen_logps": [float(x) for x in chosen[:n]],
        "rejected_logps": [float(x) for x in rejected[:n]],
    }


def _metrics(result, before: dict, after: dict, trainer, started: float, timing) -> dict[str, Any]:
    metrics: dict[str, Any] = {
        "train_loss": common.train_loss(trainer, result, timing),
        "steps": trainer.state.global_step,
        "runtime_s": time.time() - started,
    }
    keys = (
        "eval_loss",
        "eval_rewards/chosen",
        "eval_rewards/rejected",
        "eval_rewards/accuracies",
        "eval_rewards/margins",
        "pref_accuracy",
        "pref_margin",
        "pref_chosen_logp",
    )
    for name, values in (("before", before), ("after", after)):
        for key in keys:
            if key in values:
                metrics[f"{key}_{name}"] = values[key]
    return common.round_metrics(metrics)
