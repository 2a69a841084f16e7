"""`swiftkit orpo` and `swiftkit simpo`: reference-free preference training (docs/align.md).

TRL 1.16 keeps both under `trl.experimental`: ORPOTrainer, and CPOTrainer with loss_type="simpo". Neither
keeps a reference model, so neither needs an SFT stage first; given an SFT artifact, its chain is merged in
memory and a new LoRA trains on top, as in `swiftkit dpo`.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from swiftkit.artifacts import Manifest, partial_dir, write_manifest
from swiftkit.resolve import resolve_model_ref
from swiftkit.train import common, launch
from swiftkit.train.config import ORPOConfig, SimPOConfig

# Logged by both trainers on the held-out split; rewards are their own (log-odds / length-normalised logp).
EVAL_KEYS = ("eval_loss", "eval_rewards/accuracies", "eval_rewards/margins", "pref_accuracy", "pref_margin")

# metric -> summary row, shown as before -> after
SUMMARY_ROWS = (("eval_loss", "held-out loss"), ("pref_accuracy", "held-out pref. accuracy"), ("pref_margin", "held-out logp margin"))


def run_orpo(cfg: ORPOConfig) -> Path:
    return _run(cfg, "orpo")


def run_simpo(cfg: SimPOConfig) -> Path:
    return _run(cfg, "simpo")


def _run(cfg, stage: str) -> Path:
    with common.start(cfg, stage) as (cfg, should_train):
        if should_train:
            _train(cfg, stage)
    return Path(cfg.output)


def _trainer_classes(cfg, stage: str) -> tuple[type, type, dict[str, Any]]:
    """(trainer, its config class, the method's own arguments)."""
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # the "unstable API" notice is ours to carry, not the user's
    if stage == "orpo":
        from trl.experimental.orpo import ORPOConfig as TRLConfig
        from trl.experimental.orpo import ORPOTrainer

        return ORPOTrainer, TRLConfig, {"beta": cfg.beta}
    from trl.experimental.cpo import CPOConfig as TRLConfig
    from trl.experimental.cpo import CPOTrainer

    return CPOTrainer, TRLConfig, {"loss_type": "simpo", "beta": cfg.beta, "simpo_gamma": cfg.gamma, "cpo_alpha": cfg.sft_weight}


def _counting(trainer_cls: type) -> type:
    """The trainer, counting real tokens as sft and dpo do. These older-style trainers feed the model
    `chosen_*` / `rejected_*` columns, and the Trainer only counts an `input_ids` column (so it saw 0)."""

    class Counting(trainer_cls):
        def _track_num_input_tokens(self, inputs):
            import torch

            if "chosen_attention_mask" not in inputs:
                return super()._track_num_input_tokens(inputs)
            tokens = inputs["chosen_attention_mask"].sum() + inputs["rejected_attention_mask"].sum()
            tokens = torch.as_tensor(tokens, device=self.args.device, dtype=torch.int64)
            self.state.num_input_tokens_seen += self.accelerator.gather(tokens).sum().item()

    return Counting


def _train(cfg, stage: str) -> None:
    started = time.time()
    mref = resolve_model_ref(cfg.model)
    # Data before the heavy imports and before the artifact folder: bad input fails fast, leaving nothing.
    tokenizer, data, held = common.prepare_data(cfg, mref, "preference")
    history = common.run_history(cfg, common.data_entry(data, held))
    train_rows, eval_rows = common.split(cfg, data, held)
    from datasets import Dataset

    from swiftkit.loading import serving_info

    trainer_cls, config_cls, method_args = _trainer_classes(cfg, stage)
    common.quiet_workers()
    resume_from = common.last_checkpoint(partial_dir(cfg.output)) if cfg.resume else None
    with common.writer(cfg) as tmp:
        common.record_run(tmp, history)
        model = common.load_for_training(cfg, mref, tmp / "scratch" / f"rank{launch.rank()}")
        trainer = _counting(trainer_cls)(
            model=model,
            # remove_unused_columns=False: their collator needs the raw columns (they would set it, with a warning).
            args=config_cls(**common.trainer_args(cfg, tmp, bool(eval_rows)), **method_args, remove_unused_columns=False),
            train_dataset=Dataset.from_list(train_rows),
            eval_dataset=Dataset.from_list(eval_rows) if eval_rows else None,
            processing_class=tokenizer,
            peft_config=common.lora_config(cfg),
        )
        pairs = common.scored_pairs(cfg, eval_rows)
        run = common.train_measured(
            trainer,
            f"{stage} ({cfg.method})",
            lambda: common.preference_metrics(trainer, tokenizer, eval_rows, pairs),
            resume_from,
        )
        if not common.save_trained(trainer, tokenizer, tmp):
            return
        metrics = common.run_metrics(run, started, EVAL_KEYS, train_rows=len(train_rows), eval_rows=len(eval_rows))
        write_manifest(
            tmp,
            Manifest(
                stage=stage,
                **common.adapter_lineage(mref, cfg.method),
                **common.provenance(cfg, data, held, history),
                metrics=metrics,
                serving=serving_info(tokenizer, model),
            ),
        )
    rows = [
        ("model", mref.ref),
        ("rows", f"{len(train_rows)} train / {len(eval_rows)} eval"),
        ("steps", metrics["steps"]),
        ("train loss", f"{metrics['train_loss']:.4f}"),
        *common.change_rows(metrics, SUMMARY_ROWS),
    ]
    common.print_summary(f"{stage} ({cfg.method})", rows, metrics, cfg.output)
