"""What the training stages share: run set-up (output, resume, relaunch), model loading per method, trainer
args, the measure / train / measure / save sequence, and the metrics, manifest keys and summary of a run."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import os
import re
import shutil
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from swiftkit.artifacts import ModelRef, artifact_writer, default_output, partial_dir, read_manifest
from swiftkit.console import console, summary
from swiftkit.data.dataset import (
    Kind,
    TrainingData,
    drop_overlength,
    load_training_data,
    resolve_template,
    split_eval,
)
from swiftkit.errors import ArtifactError, SwiftkitError, disk_full_is_one_line
from swiftkit.locks import output_lock
from swiftkit.train import launch
from swiftkit.train.config import TrainConfig

CHECKPOINTS = "checkpoints"
# In the partial dir: the config and data of each segment of the run (an interrupted run, its resumes).
RUN_RECORD = "run.json"
# Fields that change where a run writes or what it reports, not what it trains. The data is compared by
# fingerprint instead (the same rows under another path or format are the same data).
NOT_COMPARED = frozenset(
    {"output", "overwrite", "resume", "force", "report_to", "logging_steps", "eval_steps", "save_steps", "data", "eval_data"}
)


@contextlib.contextmanager
def start(cfg: TrainConfig, stage: str) -> Iterator[tuple[TrainConfig, bool]]:
    """Resolve --output, lock it and check --resume once, in the launching process; relaunch under
    torchrun if asked. The lock is held (torchrun workers inherit it) until the run ends.

    Yields the resolved config and whether this process should train (False: the workers did).
    """
    if launch.in_worker():
        cfg = cfg.model_copy(update={"nproc": launch.world_size()})
        with output_lock(cfg.output), disk_full_is_one_line(cfg.output):
            yield cfg, True
        return
    cfg = cfg.model_copy(update={"output": str(Path(cfg.output or default_output(stage)).resolve())})
    with output_lock(cfg.output), disk_full_is_one_line(cfg.output):
        _check_output(cfg)
        _check_distributed(cfg)
        if cfg.nproc > 1:
            launch.relaunch(stage, cfg)
            yield cfg, False
        else:
            yield cfg, True


def _check_output(cfg: TrainConfig) -> None:
    final = Path(cfg.output)
    partial = partial_dir(final)
    if read_manifest(final) is not None and not cfg.overwrite:
        what = "already finished" if cfg.resume else "already exists"
        raise ArtifactError(f"output {what}: {final}", "pass --overwrite or choose another --output")
    if cfg.resume:
        checkpoint = last_checkpoint(partial)
        if checkpoint is None:
            raise SwiftkitError(
                f"nothing to resume: no complete checkpoint under {partial / CHECKPOINTS}",
                "--resume continues a run that saved checkpoints (--save-steps N) and was interrupted",
            )
        console.print(f"resuming from {checkpoint}")
        # Later checkpoint folders are saves that were cut off; the resumed run writes them afresh.
        for folder in _checkpoints(partial):
            if checkpoint_step(folder) > checkpoint_step(checkpoint):
                shutil.rmtree(folder)
    elif partial.exists():
        # A stale partial dir from an interrupted run: a fresh run must not inherit its checkpoints.
        shutil.rmtree(partial)


def _check_distributed(cfg: TrainConfig) -> None:
    if cfg.distributed == "ddp":
        return
    if cfg.method != "full":
        raise SwiftkitError(
            f"--distributed {cfg.distributed} is for full fine-tuning",
            "use --method full, or ddp for LoRA/QLoRA",
        )
    if cfg.distributed == "deepspeed" and importlib.util.find_spec("deepspeed") is None:
        raise SwiftkitError(
            "--distributed deepspeed needs the deepspeed package",
            "pip install deepspeed (GPU machines), or use --distributed fsdp",
        )


def last_checkpoint(partial: Path) -> str | None:
    """The newest checkpoint whose save finished (CheckpointMarker); a save cut off by a kill or a full
    disk leaves a folder without the marker, which is skipped."""
    from swiftkit.train.callbacks import CHECKPOINT_COMPLETE

    complete = [p for p in _checkpoints(partial) if (p / CHECKPOINT_COMPLETE).is_file()]
    return str(max(complete, key=checkpoint_step)) if complete else None


def _checkpoints(partial: Path) -> list[Path]:
    folder = partial / CHECKPOINTS
    return [p for p in folder.glob("checkpoint-*") if p.is_dir() and re.fullmatch(r"checkpoint-\d+", p.name)]


def checkpoint_step(path: str | Path) -> int:
    return int(Path(path).name.rpartition("-")[2])


def run_history(cfg: TrainConfig, data: dict[str, Any]) -> list[dict[str, Any]]:
    """The segments of this run, oldest first: the interrupted ones (from the partial dir) and this one.

    A resume whose config or data differ from the interrupted segment would silently credit the new
    values to every step, so it refuses unless --force (then the manifest records both).
    """
    current: dict[str, Any] = {"from_step": 0, "config": cfg.model_dump(mode="json"), "data": data}
    if not cfg.resume:
        return [current]
    partial = partial_dir(cfg.output)
    record = partial / RUN_RECORD
    earlier = json.loads(record.read_text(encoding="utf-8")) if record.is_file() else []
    checkpoint = last_checkpoint(partial)
    current["from_step"] = checkpoint_step(checkpoint) if checkpoint else 0
    changes = _differences(earlier[-1], current) if earlier else []
    if changes and not cfg.force:
        raise SwiftkitError(
            f"--resume: this run differs from the interrupted one ({'; '.join(changes)})",
            "re-run the interrupted command unchanged, or add --force to continue with the new values "
            "(the manifest records both)",
        )
    if changes:
        console.print(f"[yellow]warning:[/] resuming with changes (--force): {'; '.join(changes)}")
    return [*earlier, current]


def _differences(before: dict[str, Any], now: dict[str, Any]) -> list[str]:
    def short(value: Any) -> str:
        text = json.dumps(value)
        return text if len(text) <= 40 else text[:37] + "..."

    changes = [
        f"--{key.replace('_', '-')} {short(before['config'].get(key))} -> {short(value)}"
        for key, value in now["config"].items()
        if key not in NOT_COMPARED and before["config"].get(key) != value
    ]
    for name, old, new in (
        ("data", before["data"], now["data"]),
        ("eval data", before["data"].get("eval", {}), now["data"].get("eval", {})),
    ):
        if old.get("fingerprint") != new.get("fingerprint"):
            changes.append(f"{name} fingerprint {str(old.get('fingerprint'))[:12]} -> {str(new.get('fingerprint'))[:12]}")
    return changes


def record_run(tmp: Path, history: list[dict[str, Any]]) -> None:
    """Keep the run's segments next to its checkpoints, for the next --resume to compare against."""
    if launch.is_main():
        (tmp / RUN_RECORD).write_text(json.dumps(history, indent=1) + "\n", encoding="utf-8")


def resume_entry(history: list[dict[str, Any]]) -> dict[str, Any]:
    """Manifest keys: `resumed`, the earlier segments of a resumed run (their config and data), if any."""
    return {"resumed": history[:-1]} if len(history) > 1 else {}


def writer(cfg: TrainConfig) -> contextlib.AbstractContextManager[Path]:
    """Rank 0 builds the artifact (kept on failure for --resume); other ranks only share its folder."""
    if launch.is_main():
        return artifact_writer(cfg.output, overwrite=cfg.overwrite, keep_partial=True)
    return contextlib.nullcontext(partial_dir(cfg.output))


def quiet_workers() -> None:
    """Only rank 0 talks; HF's own info/warning chatter is replaced by our progress and summary."""
    import datasets
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    # Deprecation notices from inside the libraries (not actionable for a swiftkit user).
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"(transformers|trl|peft)\.")
    if not launch.is_main():
        console.quiet = True


def prepare_data(cfg: TrainConfig, mref: ModelRef, kind: Kind) -> tuple[Any, TrainingData, TrainingData | None]:
    """The tokenizer (with --template applied), the training data and the --eval-data, normalised and
    length-checked. Runs before the artifact folder exists, so bad data leaves nothing behind at --output.
    """
    from swiftkit.loading import check_weights, load_tokenizer

    check_weights(mref)
    data = load_training_data(cfg.data, kind, cfg.columns, cfg.seed)
    held = load_training_data(cfg.eval_data, kind, cfg.columns, cfg.seed) if cfg.eval_data else None
    tokenizer = load_tokenizer(mref, cfg.trust_remote_code)
    template = resolve_template(cfg.template)
    if template:
        tokenizer.chat_template = template
    if not tokenizer.chat_template:
        raise SwiftkitError(f"{mref.ref} has no chat template", "pass --template FILE (a Jinja chat template)")
    data = drop_overlength(data, tokenizer, cfg.max_length, kind)
    return tokenizer, data, drop_overlength(held, tokenizer, cfg.max_length, kind) if held else None


def split(cfg: TrainConfig, data: TrainingData, held: TrainingData | None) -> tuple[list[dict], list[dict]]:
    """(train rows, eval rows): --eval-data when given, else a seeded --eval-split of the data."""
    if held is not None:
        return data.rows, held.rows
    return split_eval(data.rows, cfg.eval_split, cfg.seed)


def data_entry(data: TrainingData, held: TrainingData | None) -> dict[str, Any]:
    """The manifest's `data` block, with the held-out set's own entry when one was given."""
    entry = data.manifest_entry()
    if held is not None:
        entry["eval"] = held.manifest_entry()
    return entry


def load_for_training(cfg: TrainConfig, mref: ModelRef, scratch: Path):
    """The model to train: the input's adapter chain merged in memory; 4-bit NF4 for qlora."""
    from swiftkit.loading import load_model, torch_dtype

    if cfg.method != "qlora":
        model = load_model(mref, dtype=cfg.dtype, trust_remote_code=cfg.trust_remote_code)[0]
        # PEFT leaves the base frozen after merge_and_unload; full fine-tuning must train every weight.
        return model.requires_grad_(cfg.method == "full") if mref.adapters else model
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    if importlib.util.find_spec("bitsandbytes") is None:
        raise SwiftkitError("--method qlora needs bitsandbytes", "pip install 'swiftkit[qlora]'")
    if mref.is_quantized:
        raise SwiftkitError(f"{mref.path} is already quantized", "qlora quantizes a full-precision model itself")
    source = mref.base_path
    if mref.adapters:
        # Merge the chain in full precision, then quantize that: merging into 4-bit weights degrades them.
        merged = load_model(mref, dtype=cfg.dtype, trust_remote_code=cfg.trust_remote_code)[0]
        merged.save_pretrained(scratch)
        source = scratch
    dtype = torch_dtype(cfg.dtype)
    bnb = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_compute_dtype=dtype,
        bnb_4bit_use_double_quant=True,
    )
    model = AutoModelForCausalLM.from_pretrained(source, quantization_config=bnb, dtype=dtype, trust_remote_code=cfg.trust_remote_code)
    # bitsandbytes repacks 4-bit weights for its CPU inference kernel on the first no-grad eval-mode
    # forward (our eval-before-training); that kernel's in-place bias add then breaks backward
    # ("a view of a leaf Variable ... in-place"). Keep the training layout.
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False
    return model


def lora_config(cfg: TrainConfig, task_type: str = "CAUSAL_LM", modules_to_save: list[str] | None = None):
    """The --lora-* flags as PEFT's LoraConfig (None for --method full); `modules_to_save` train in full."""
    if cfg.method == "full":
        return None
    from peft import LoraConfig

    targets: Any = "all-linear" if cfg.lora_targets == ["all-linear"] else cfg.lora_targets
    return LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=targets,
        task_type=task_type,
        modules_to_save=modules_to_save,
    )


def trainer_args(cfg: TrainConfig, tmp: Path, has_eval: bool) -> dict[str, Any]:
    """Keyword arguments shared by every stage's TRL config (SFTConfig, DPOConfig, KTOConfig, RewardConfig, ...)."""
    import torch

    from swiftkit.loading import torch_dtype

    dtype = torch_dtype(cfg.dtype)
    if "tensorboard" in cfg.report_to:
        # transformers 5 reads the TensorBoard folder from this variable; keep the logs in the artifact.
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(tmp / "logs")
    args: dict[str, Any] = dict(
        output_dir=str(tmp / CHECKPOINTS),
        learning_rate=cfg.lr,
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        warmup_steps=cfg.warmup_ratio,
        logging_steps=cfg.logging_steps,
        save_strategy="steps" if cfg.save_steps > 0 else "no",
        save_steps=cfg.save_steps if cfg.save_steps > 0 else 500,
        eval_strategy="steps" if cfg.eval_steps > 0 and has_eval else "no",
        eval_steps=cfg.eval_steps if cfg.eval_steps > 0 else None,
        seed=cfg.seed,
        data_seed=cfg.seed,
        report_to=cfg.report_to or "none",
        disable_tqdm=True,
        max_length=cfg.max_length,
        include_num_input_tokens_seen="non_padding",
        bf16=dtype == torch.bfloat16,
        fp16=dtype == torch.float16,
        use_cpu=not torch.cuda.is_available(),
        ddp_find_unused_parameters=False,
        dataloader_num_workers=0,
        save_only_model=False,
    )
    args.update(_distributed_args(cfg))
    return args


def _distributed_args(cfg: TrainConfig) -> dict[str, Any]:
    if cfg.distributed == "fsdp":
        return {
            "fsdp": "full_shard auto_wrap",
            "fsdp_config": {"auto_wrap_policy": "TRANSFORMER_BASED_WRAP", "use_orig_params": True},
        }
    if cfg.distributed == "deepspeed":
        # ZeRO-3 shards parameters, gradients and optimizer state; "auto" sizes come from the args.
        return {
            "deepspeed": {
                "zero_optimization": {"stage": 3, "stage3_gather_16bit_weights_on_model_save": True},
                "train_batch_size": "auto",
                "train_micro_batch_size_per_gpu": "auto",
                "gradient_accumulation_steps": "auto",
                "bf16": {"enabled": "auto"},
                "fp16": {"enabled": "auto"},
            }
        }
    return {}


def prepare_trainer(trainer, description: str, shown: tuple[tuple[str, str], ...] = ()):
    """Swap HF's tqdm/printer for the rich progress bar (with the `shown` (log key, label) metrics live);
    add per-step timing (returned, for the metrics)."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from swiftkit.train.callbacks import CheckpointMarker, RichProgress, StepTiming

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(RichProgress(description, shown))
    trainer.add_callback(CheckpointMarker())
    timing = StepTiming()
    trainer.add_callback(timing)
    return timing


@dataclasses.dataclass
class Trained:
    """A finished `trainer.train()`: TRL's result, the step timing, and the held-out measures before and after."""

    trainer: Any
    result: Any
    timing: Any
    before: dict[str, Any]
    after: dict[str, Any]


def train_measured(trainer, description: str, measure: Callable[[], dict[str, Any]], resume_from: str | None,
                   shown: tuple[tuple[str, str], ...] = ()) -> Trained:
    """Train under our progress bar and step timing, calling `measure` (the held-out metrics) before and after."""
    timing = prepare_trainer(trainer, description, shown)
    before = measure()
    result = trainer.train(resume_from_checkpoint=resume_from)
    return Trained(trainer, result, timing, before, measure())


def scored_pairs(cfg: TrainConfig, pairs: list[dict]) -> list[dict]:
    """The held-out pairs our own forward passes score: none under fsdp/zero-3 (they don't fit sharded models)."""
    return pairs if cfg.distributed == "ddp" else []


def preference_metrics(trainer, tokenizer, eval_rows: list[dict], pairs: list[dict]) -> dict[str, Any]:
    """TRL's own metrics on the held-out rows, plus the policy's preference on the held-out `pairs`
    (`pref_accuracy`, `pref_margin`, `pref_chosen_logp`; nothing when there are none)."""
    from swiftkit.train.scoring import preference_scores

    metrics = trainer.evaluate() if eval_rows else {}
    scores = preference_scores(trainer.model, tokenizer, pairs) if pairs else {}
    return {**metrics, **{f"pref_{k}": v for k, v in scores.items()}}


def save_trained(trainer, tokenizer, tmp: Path) -> bool:
    """Save the trained model (a collective under FSDP/DeepSpeed: every rank calls it), then on rank 0 finish
    the folder. True on rank 0, the one that goes on to write the manifest."""
    trainer.save_model(str(tmp))
    if not launch.is_main():
        return False
    finish_dir(tmp, tokenizer)
    return True


def run_metrics(run: Trained, started: float, keys: Iterable[str], **extra: Any) -> dict[str, Any]:
    """The manifest's metrics: mean train loss, steps, wall time since `started`, each of `keys` measured
    before and after (`eval_loss_before`, `eval_loss_after`), throughput, then the stage's own `extra`."""
    trainer = run.trainer
    return round_metrics({
        "train_loss": train_loss(trainer, run.result, run.timing),
        "steps": trainer.state.global_step,
        "runtime_s": time.time() - started,
        **{f"{k}_{when}": values[k] for when, values in (("before", run.before), ("after", run.after)) for k in keys if k in values},
        **throughput(trainer, run.result, run.timing),
        **extra,
    })


def throughput(trainer, result, timing) -> dict[str, Any]:
    """Tokens seen, overall tokens/s (TRL's train_runtime, warm-up included), steady-state tokens/s and
    peak GPU memory (swiftkit.train.callbacks.StepTiming). A resumed trainer's token count includes the
    steps before its checkpoint but its runtime does not: tokens/s counts only the tokens this run saw."""
    tokens = trainer.state.num_input_tokens_seen
    runtime = result.metrics.get("train_runtime")
    resumed = {"resumed_from_step": timing.start_step, "tokens_before_resume": timing.start_tokens} if timing.start_step else {}
    return round_metrics({
        "train_tokens": tokens,
        "tokens_per_second": (tokens - timing.start_tokens) / max(runtime or 0.0, 1e-9),
        "train_runtime_s": runtime,
        **resumed,
        **timing.metrics(),
    })


def train_loss(trainer, result, timing) -> float:
    """Mean loss over every step of the run. The Trainer averages only the steps this process ran; for a
    resumed run the steps before the checkpoint come from its restored log history, which
    CheckpointMarker makes end exactly at the checkpoint."""
    start = timing.start_step
    if not start:
        return result.training_loss
    covered, total = 0, 0.0
    for entry in trainer.state.log_history:
        if "loss" in entry and entry["step"] <= start:
            total += entry["loss"] * (entry["step"] - covered)
            covered = entry["step"]
    ran = trainer.state.global_step - start
    return (total + result.training_loss * ran) / max(covered + ran, 1)


def speed_rows(metrics: dict[str, Any]) -> list[tuple[str, str]]:
    """Summary-table rows for the numbers `throughput` put in the metrics."""
    rows = [("tokens/s", f"{metrics['tokens_per_second']:,.0f}")]
    if "steady_tokens_per_second" in metrics:
        rows.append((
            "tokens/s steady",
            f"{metrics['steady_tokens_per_second']:,.0f} (after {metrics['warmup_steps']} warm-up steps, {metrics['warmup_s']:.1f}s)",
        ))
    if "peak_memory_gib" in metrics:
        rows.append(("peak GPU memory", f"{metrics['peak_memory_gib']:.1f} GiB"))
    return rows


def change_rows(metrics: dict[str, Any], labels: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Summary-table rows `before -> after` for each (metric, label) in `labels` that was measured."""
    return [
        (label, f"{metrics[f'{key}_before']:.3f} -> {metrics[f'{key}_after']:.3f}") for key, label in labels if f"{key}_after" in metrics
    ]


def print_summary(title: str, rows: list[tuple[str, Any]], metrics: dict[str, Any], artifact: str) -> None:
    """The end-of-run table: the stage's own rows, then speed and wall time."""
    summary(title, [*rows, *speed_rows(metrics), ("time", f"{metrics['runtime_s']:.0f}s")], artifact=artifact)


def finish_dir(tmp: Path, tokenizer) -> None:
    """Drop resumable state (checkpoints, scratch) from a finished artifact; add the tokenizer."""
    for name in (CHECKPOINTS, "scratch"):
        shutil.rmtree(tmp / name, ignore_errors=True)
    (tmp / RUN_RECORD).unlink(missing_ok=True)
    tokenizer.save_pretrained(tmp)


def provenance(cfg: TrainConfig, data: TrainingData, held: TrainingData | None, history: list[dict[str, Any]]) -> dict[str, Any]:
    """Manifest keys: the run's config, its data and, for a resumed run, the earlier segments."""
    return {"config": cfg.model_dump(), "data": data_entry(data, held), **resume_entry(history)}


def adapter_lineage(mref: ModelRef, method: str) -> dict[str, Any]:
    """Manifest keys: an adapter's base is the full-weights model; earlier adapters form its chain."""
    if method == "full":
        return {"kind": "model", "parents": [str(mref.path)]}
    return {
        "kind": "adapter",
        "parents": [str(mref.path)],
        "base_model": str(mref.base_path),
        "adapter_chain": [str(p) for p in mref.adapters],
    }


def gather(value: Any) -> list[Any]:
    """Every rank's `value` (a one-item list when not distributed)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return [value]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, value)
    return out


def round_metrics(metrics: dict[str, Any], digits: int = 6) -> dict[str, Any]:
    return {k: round(v, digits) if isinstance(v, float) else v for k, v in metrics.items()}
