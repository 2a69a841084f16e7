"""`swiftkit sft`: supervised fine-tuning on TRL's SFTTrainer + PEFT (LoRA, QLoRA or full).

Reads any model reference (an adapter artifact's chain is merged in memory first and the new adapter
trains on top), renders conversations with the model's chat template (or --template), trains with
loss on assistant tokens only, and writes an adapter artifact (lora/qlora) or model artifact (full).
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

from swiftkit.artifacts import Manifest, partial_dir, write_manifest
from swiftkit.console import console
from swiftkit.data.dataset import (
    has_generation_markers,
)
from swiftkit.resolve import resolve_model_ref
from swiftkit.train import common, launch, packing
from swiftkit.train.config import SFTConfig


def run(cfg: SFTConfig) -> Path:
    with common.start(cfg, "sft") as (cfg, should_train):
        if should_train:
            _train(cfg)
    return Path(cfg.output)


def _train(cfg: SFTConfig) -> None:
    started = time.time()
    cfg = cfg.model_copy(update={"batch_size": packing.batch_size(cfg)})
    mref = resolve_model_ref(cfg.model)
    # Data before the heavy imports and before the artifact folder: bad input fails fast, leaving nothing.
    tokenizer, data, held = common.prepare_data(cfg, mref, "sft")
    history = common.run_history(cfg, common.data_entry(data, held))  # a changed --resume refuses here
    from datasets import Dataset
    from trl import SFTConfig as TRLSFTConfig

    from swiftkit.loading import serving_info

    common.quiet_workers()
    resume_from = common.last_checkpoint(partial_dir(cfg.output)) if cfg.resume else None
    train_rows, eval_rows = common.split(cfg, data, held)
    loss_on = _loss_mode(cfg, tokenizer.chat_template)
    train_rows, eval_rows = _as_loss_rows(train_rows, loss_on), _as_loss_rows(eval_rows, loss_on)

    with common.writer(cfg) as tmp:
        common.record_run(tmp, history)
        model = common.load_for_training(cfg, mref, tmp / "scratch" / f"rank{launch.rank()}")
        packing.prepare_model(cfg, model)
        args = TRLSFTConfig(
            **common.trainer_args(cfg, tmp, bool(eval_rows)),
            **packing.sft_args(cfg),
            assistant_only_loss=loss_on == "assistant",
            completion_only_loss=loss_on == "completion",
        )
        trainer = _recording_trainer(
            model=model,
            args=args,
            train_dataset=Dataset.from_list(train_rows),
            eval_dataset=Dataset.from_list(eval_rows) if eval_rows else None,
            processing_class=tokenizer,
            peft_config=common.lora_config(cfg),
        )
        # Evaluated after the trainer wrapped the model: a no_grad forward of a 4-bit model before
        # get_peft_model breaks QLoRA training (FEASIBILITY.md).
        run = common.train_measured(trainer, f"sft ({cfg.method})", lambda: trainer.evaluate() if eval_rows else {}, resume_from)
        trainer.save_model(str(tmp))  # a collective under FSDP/DeepSpeed: every rank calls it
        per_rank = common.gather(trainer.seen)
        if not launch.is_main():
            return
        common.finish_dir(tmp, tokenizer)
        metrics = _metrics(run, per_rank, started)
        metrics.update(common.throughput(trainer, run.result, run.timing))
        metrics.update(loss_on=loss_on, train_rows=len(train_rows), eval_rows=len(eval_rows))
        manifest = Manifest(
            stage="sft",
            **common.adapter_lineage(mref, cfg.method),
            config={**cfg.model_dump(), "packing": packing.packing_enabled(cfg)},
            data=common.data_entry(data, held),
            **common.resume_entry(history),
            metrics=metrics,
            serving=serving_info(tokenizer, model),
        )
        write_manifest(tmp, manifest)
    rows = [
        ("model", mref.ref),
        ("rows", f"{len(train_rows)} train / {len(eval_rows)} eval"),
        ("steps", metrics["steps"]),
        ("train loss", metrics["train_loss"]),
        *([("eval loss", f"{metrics['eval_loss_before']:.4f} -> {metrics['eval_loss_after']:.4f}")] if eval_rows else []),
    ]
    common.print_summary(f"sft ({cfg.method})", rows, metrics, cfg.output)


def _recording_trainer(**kwargs):
    from trl import SFTTrainer

    class RecordingSFTTrainer(SFTTrainer):
        """Keeps a digest of every sequence this rank trains on: evidence that ranks see different data."""

        def training_step(self, model, inputs, *args, **kw):
            mask = inputs.get("attention_mask")
            for i, ids in enumerate(inputs["input_ids"].tolist()):
                tokens = ids if mask is None else [t for t, m in zip(ids, mask[i].tolist(), strict=True) if m]
                self.seen.append(hashlib.sha256(str(tokens).encode()).hexdigest()[:12])
            return super().training_step(model, inputs, *args, **kw)

    trainer = RecordingSFTTrainer(**kwargs)
    trainer.seen = []
    return trainer


def _loss_mode(cfg: SFTConfig, template: str | None) -> str:
    """Which tokens carry the loss: assistant turns (template with {% generation %}), else the last reply."""
    if not cfg.assistant_only_loss:
        return "all"
    if has_generation_markers(template):
        return "assistant"
    console.print(
        "[yellow]warning:[/] the chat template has no {% generation %} markers: "
        "loss only on each row's last assistant reply"
    )
    return "completion"


def _as_loss_rows(rows: list[dict[str, Any]], loss_on: str) -> list[dict[str, Any]]:
    # TRL's assistant mask needs {% generation %} blocks; most hub templates lack them. Prompt/completion
    # rows give the same masking for the final reply without touching the template.
    if loss_on != "completion":
        return rows
    return [{"prompt": r["messages"][:-1], "completion": r["messages"][-1:]} for r in rows]


def _metrics(run: common.Trained, per_rank: list[list[str]], started: float) -> dict[str, Any]:
    trainer = run.trainer
    metrics: dict[str, Any] = {
        "train_loss": common.train_loss(trainer, run.result, run.timing),
        "steps": trainer.state.global_step,
        "runtime_s": time.time() - started,
        "trainable_parameters": sum(p.numel() for p in trainer.model.parameters() if p.requires_grad),
    }
    for name, values in (("before", run.before), ("after", run.after)):
        for key in ("eval_loss", "eval_mean_token_accuracy"):
            if key in values:
                metrics[f"{key}_{name}"] = values[key]
    if len(per_rank) > 1:
        sets = [set(seen) for seen in per_rank]
        metrics["distributed"] = {
            "world_size": len(per_rank),
            "sequences_per_rank": [len(s) for s in per_rank],
            "shared_sequences": len(set.intersection(*sets)),
            "digests_per_rank": [seen[:64] for seen in per_rank],
        }
    return common.round_metrics(metrics)
