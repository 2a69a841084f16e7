"""`swiftkit kto`: KTO on unpaired feedback (prompt / completion / label) on TRL's KTOTrainer.

Preference pairs are accepted too and split into a desirable and an undesirable row. Adapter semantics as in
`swiftkit dpo`: an SFT artifact's chain is merged in memory; that model is the starting policy and the
frozen reference (the new LoRA disabled; with --method full a second frozen copy).
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

from swiftkit.artifacts import Manifest, partial_dir, write_manifest
from swiftkit.resolve import resolve_model_ref
from swiftkit.train import common, launch
from swiftkit.train.config import KTOConfig

EVAL_KEYS = (
    "eval_loss",
    "eval_rewards/chosen",
    "eval_rewards/rejected",
    "eval_rewards/margins",
    "eval_kl",
    "pref_accuracy",
    "pref_margin",
)

# metric -> summary row, shown as before -> after
SUMMARY_ROWS = (("eval_loss", "held-out loss"), ("pref_accuracy", "held-out pref. accuracy"), ("pref_margin", "held-out logp margin"))


def run(cfg: KTOConfig) -> Path:
    with common.start(cfg, "kto") as (cfg, should_train):
        if should_train:
            _train(cfg)
    return Path(cfg.output)


def unpair(rows: list[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    """KTO rows: each pair becomes a desirable and an undesirable row; the result is shuffled with the seed.

    TRL's KTO reads batches in order (its KL estimate pairs each prompt with its batch neighbour's
    completion), so the order given is the order trained: shuffled, a batch mixes both labels and a pair's
    two halves rarely sit side by side (which would make the KL completion a matching one).
    """
    out = []
    for row in rows:
        if "completion" in row:
            out.append(row)
        else:
            out.append({"prompt": row["prompt"], "completion": row["chosen"], "label": True})
            out.append({"prompt": row["prompt"], "completion": row["rejected"], "label": False})
    random.Random(seed).shuffle(out)
    return out


def _train(cfg: KTOConfig) -> None:
    started = time.time()
    mref = resolve_model_ref(cfg.model)
    # Data before the heavy imports and before the artifact folder: bad input fails fast, leaving nothing.
    tokenizer, data, held = common.prepare_data(cfg, mref, "feedback")
    history = common.run_history(cfg, common.data_entry(data, held))
    train_pairs, eval_pairs = common.split(cfg, data, held)
    # Held-out pairs (if any) also measure the policy's own preference, before and after.
    scored = [r for r in eval_pairs if "chosen" in r]
    train_rows, eval_rows = unpair(train_pairs, cfg.seed), unpair(eval_pairs, cfg.seed)
    from datasets import Dataset
    from trl import KTOConfig as TRLKTOConfig
    from trl import KTOTrainer

    from swiftkit.loading import serving_info

    common.quiet_workers()
    resume_from = common.last_checkpoint(partial_dir(cfg.output)) if cfg.resume else None
    with common.writer(cfg) as tmp:
        common.record_run(tmp, history)
        scratch = tmp / "scratch" / f"rank{launch.rank()}"
        model = common.load_for_training(cfg, mref, scratch)
        # As in dpo: without an explicit reference, full fine-tuning would reload the pre-SFT base.
        ref_model = common.load_for_training(cfg, mref, scratch) if cfg.method == "full" else None
        args = TRLKTOConfig(
            **common.trainer_args(cfg, tmp, bool(eval_rows)),
            beta=cfg.beta,
            loss_type=cfg.loss_type,
            desirable_weight=cfg.desirable_weight,
            undesirable_weight=cfg.undesirable_weight,
        )
        trainer = KTOTrainer(
            model=model,
            ref_model=ref_model,
            args=args,
            train_dataset=Dataset.from_list(train_rows),
            eval_dataset=Dataset.from_list(eval_rows) if eval_rows else None,
            processing_class=tokenizer,
            peft_config=common.lora_config(cfg),
        )
        pairs = common.scored_pairs(cfg, scored)
        run = common.train_measured(
            trainer,
            f"kto ({cfg.loss_type}, {cfg.method})",
            lambda: common.preference_metrics(trainer, tokenizer, eval_rows, pairs),
            resume_from,
        )
        if not common.save_trained(trainer, tokenizer, tmp):
            return
        desirable = sum(r["label"] for r in train_rows)
        metrics = common.run_metrics(
            run,
            started,
            EVAL_KEYS,
            reference=str(mref.path),
            train_rows=len(train_rows),
            desirable_rows=desirable,
            undesirable_rows=len(train_rows) - desirable,
            eval_rows=len(eval_rows),
            eval_pairs_scored=len(scored),
        )
        write_manifest(
            tmp,
            Manifest(
                stage="kto",
                **common.adapter_lineage(mref, cfg.method),
                **common.provenance(cfg, data, held, history),
                metrics=metrics,
                serving=serving_info(tokenizer, model),
            ),
        )
    rows = [
        ("model / reference", mref.ref),
        ("rows", f"{len(train_rows)} train ({desirable} desirable) / {len(eval_rows)} eval"),
        ("steps", metrics["steps"]),
        ("train loss", f"{metrics['train_loss']:.4f}"),
        *common.change_rows(metrics, SUMMARY_ROWS),
    ]
    common.print_summary(f"kto ({cfg.loss_type}, {cfg.method})", rows, metrics, cfg.output)
