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
# Held-out metrics recorded before and after training.
EVAL_KEYS = (
    "eval_loss",
    "eval_rewards/chosen",
    "eval_rewards/rejected",
    "eval_rewards/accuracies",
    "eval_rewards/margins",
    "pref_accuracy",
    "pref_margin",
    "pref_chosen_logp",
)
# metric -> summary row, shown as before -> after
SUMMARY_ROWS = (("pref_accuracy", "held-out pref. accuracy"), ("pref_margin", "held-out logp margin"))


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
        pairs = common.scored_pairs(cfg, eval_rows)
        run = common.train_measured(
            trainer,
            f"dpo ({cfg.loss_type}, {cfg.method})",
            lambda: common.preference_metrics(trainer, tokenizer, eval_rows, pairs),
            resume_from,
        )
        check = _reference_check(trainer, eval_rows, str(mref.path)) if pairs else None
        if not common.save_trained(trainer, tokenizer, tmp):
            return
        if check:
            (tmp / REFERENCE_CHECK).write_text(json.dumps(check, indent=1) + "\n")
        metrics = common.run_metrics(
            run, started, EVAL_KEYS, reference=str(mref.path), train_rows=len(train_rows), eval_rows=len(eval_rows)
        )
        manifest = Manifest(
            stage="dpo",
            **common.adapter_lineage(mref, cfg.method),
            **common.provenance(cfg, data, held, history),
            metrics=metrics,
            serving=serving_info(tokenizer, model),
        )
        write_manifest(tmp, manifest)
    rows = [
        ("model / reference", mref.ref),
        ("rows", f"{len(train_rows)} train / {len(eval_rows)} eval"),
        ("steps", metrics["steps"]),
        *common.change_rows(metrics, SUMMARY_ROWS),
    ]
    if "eval_rewards/margins_after" in metrics:
        rows.append(
            (
                "reward margin / accuracy",
                f"{metrics['eval_rewards/margins_after']:.3f} / {metrics['eval_rewards/accuracies_after']:.3f}",
            )
        )
    common.print_summary(f"dpo ({cfg.loss_type}, {cfg.method})", rows, metrics, cfg.output)


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

