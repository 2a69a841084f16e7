"""`swiftkit rm`: a reward model from preference pairs on TRL's RewardTrainer (Bradley-Terry loss).

The input model (an SFT artifact's chain merged in memory) gets a one-logit sequence-classification head
(`AutoModelForSequenceClassification`, the backbone's weights copied in). LoRA (default) trains adapters
plus the new head (`modules_to_save`); they are merged before saving, so the artifact is a plain
sequence-classification model that `from_pretrained` loads without PEFT or the base — a causal-LM
adapter chain could not describe a new head. With --method full every weight trains.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from swiftkit.artifacts import Manifest, partial_dir, write_manifest
from swiftkit.errors import SwiftkitError
from swiftkit.resolve import resolve_model_ref
from swiftkit.train import common, launch
from swiftkit.train.config import RewardModelConfig

Messages = list[dict[str, Any]]

# Held-out metrics recorded before and after training.
EVAL_KEYS = ("eval_loss", "pair_accuracy", "reward_margin")
# metric -> summary row, shown as before -> after
SUMMARY_ROWS = (("eval_loss", "held-out loss"), ("pair_accuracy", "held-out pair accuracy"), ("reward_margin", "held-out reward margin"))


def run(cfg: RewardModelConfig) -> Path:
    if cfg.method == "qlora":
        raise SwiftkitError("swiftkit rm trains with --method lora or full", "a 4-bit base with a new head is not supported yet")
    if cfg.distributed != "ddp":
        # The merged head model is saved by rank 0 alone, which needs every weight on it (not sharded).
        raise SwiftkitError(f"swiftkit rm does not support --distributed {cfg.distributed} yet", "use ddp (the default)")
    with common.start(cfg, "rm") as (cfg, should_train):
        if should_train:
            _train(cfg)
    return Path(cfg.output)


def reward_scores(model, tokenizer, conversations: list[Messages]) -> list[float]:
    """The reward (the head's one logit) of each whole conversation, rendered as TRL's RewardTrainer does.
    One row at a time: no padding, so nothing depends on how the head finds the last token."""
    import torch

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    scores = []
    with torch.no_grad():
        for messages in conversations:
            out = tokenizer.apply_chat_template(messages, tokenize=True)
            ids = list(out["input_ids"] if hasattr(out, "keys") else out)
            scores.append(float(model(input_ids=torch.tensor([ids], device=device)).logits[0, 0]))
    model.train(was_training)
    return scores


def pair_accuracy(model, tokenizer, rows: list[dict[str, Messages]]) -> dict[str, float]:
    """Share of pairs whose chosen reply scores above the rejected one, and the mean reward margin."""
    chosen = reward_scores(model, tokenizer, [r["prompt"] + r["chosen"] for r in rows])
    rejected = reward_scores(model, tokenizer, [r["prompt"] + r["rejected"] for r in rows])
    margins = [c - r for c, r in zip(chosen, rejected, strict=True)]
    return {"pair_accuracy": sum(m > 0 for m in margins) / len(margins), "reward_margin": sum(margins) / len(margins)}


def _reward_model(cfg: RewardModelConfig, mref):
    """The input's backbone under a fresh one-logit head (seeded, so a run is reproducible)."""
    from transformers import AutoModelForSequenceClassification, set_seed

    from swiftkit.loading import load_model

    causal = load_model(mref, dtype=cfg.dtype, trust_remote_code=cfg.trust_remote_code)[0]
    config = causal.config
    config.num_labels = 1
    set_seed(cfg.seed)
    model = AutoModelForSequenceClassification.from_config(config, dtype=causal.dtype, trust_remote_code=cfg.trust_remote_code)
    prefix = model.base_model_prefix
    getattr(model, prefix).load_state_dict(getattr(causal, prefix).state_dict())
    return model.requires_grad_(True)


def _train(cfg: RewardModelConfig) -> None:
    started = time.time()
    mref = resolve_model_ref(cfg.model)
    # Data before the heavy imports and before the artifact folder: bad input fails fast, leaving nothing.
    tokenizer, data, held = common.prepare_data(cfg, mref, "preference")
    history = common.run_history(cfg, common.data_entry(data, held))
    train_rows, eval_rows = common.split(cfg, data, held)
    from datasets import Dataset
    from trl import RewardConfig, RewardTrainer

    from swiftkit.loading import serving_info

    common.quiet_workers()
    resume_from = common.last_checkpoint(partial_dir(cfg.output)) if cfg.resume else None
    with common.writer(cfg) as tmp:
        common.record_run(tmp, history)
        trainer = RewardTrainer(
            model=_reward_model(cfg, mref),
            args=RewardConfig(**common.trainer_args(cfg, tmp, bool(eval_rows))),
            train_dataset=Dataset.from_list(train_rows),
            eval_dataset=Dataset.from_list(eval_rows) if eval_rows else None,
            processing_class=tokenizer,
            peft_config=common.lora_config(cfg, task_type="SEQ_CLS", modules_to_save=["score"]),  # the new head trains in full
        )
        pairs = common.scored_pairs(cfg, eval_rows)

        def measure() -> dict[str, Any]:
            return {
                **(trainer.evaluate() if eval_rows else {}),
                **(pair_accuracy(trainer.model, tokenizer, pairs) if pairs else {}),
            }

        run = common.train_measured(trainer, f"rm ({cfg.method})", measure, resume_from)
        # Not save_trained: LoRA and the head are merged first, so the artifact is a plain model.
        model = trainer.model.merge_and_unload() if cfg.method != "full" else trainer.model
        if not launch.is_main():
            return
        model.save_pretrained(tmp)
        common.finish_dir(tmp, tokenizer)
        metrics = common.run_metrics(run, started, EVAL_KEYS, train_rows=len(train_rows), eval_rows=len(eval_rows))
        write_manifest(
            tmp,
            Manifest(
                stage="rm",
                kind="model",
                parents=[str(mref.path)],
                base_model=str(mref.base_path),
                task="reward",
                **common.provenance(cfg, data, held, history),
                metrics=metrics,
                serving=serving_info(tokenizer, model),
            ),
        )
    rows = [
        ("model", mref.ref),
        ("rows", f"{len(train_rows)} train / {len(eval_rows)} eval pairs"),
        ("steps", metrics["steps"]),
        ("train loss", f"{metrics['train_loss']:.4f}"),
        *common.change_rows(metrics, SUMMARY_ROWS),
    ]
    common.print_summary(f"rm ({cfg.method})", rows, metrics, cfg.output)
