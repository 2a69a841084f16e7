"""Configs of the training stages (light module: no torch import)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator

from swiftkit.config import CommandConfig, StageConfig

Dtype = Literal["auto", "float32", "bfloat16", "float16"]


class ModelOptions(CommandConfig):
    """Fields shared by every command that reads a model."""

    model: str = Field(..., description="Model reference: artifact dir, HF model dir, .gguf file, or hub id.")
    dtype: Dtype = Field("auto", description="Weights dtype (auto: bfloat16 on GPU, float32 on CPU).")
    trust_remote_code: bool = Field(False, description="Allow custom model code from the model repo.")
    seed: int = Field(42, description="Random seed.")


class ModelStageConfig(StageConfig, ModelOptions):
    """A stage that reads a model and writes an artifact."""


class TrainConfig(ModelStageConfig):
    """Fields shared by sft and dpo."""

    data: list[str] = Field(..., description="Data: .jsonl/.json/.csv/.parquet file or dataset id (hf:/ms:); SRC#N takes N rows.")
    columns: list[str] = Field(default_factory=list, description="Column map OURS=THEIRS (prompt=question).")
    template: str | None = Field(None, description="Chat template (file or Jinja text) to use instead.")
    max_length: int = Field(1024, ge=1, description="Max tokens per example; longer rows are skipped (counted).")
    method: Literal["lora", "qlora", "full"] = Field("lora", description="lora, qlora (4-bit NF4) or full.")
    lr: float = Field(2e-4, gt=0, description="Peak learning rate.")
    epochs: float = Field(1.0, ge=0, description="Training epochs (ignored when --max-steps > 0).")
    max_steps: int = Field(-1, ge=-1, description="Stop after this many optimizer steps (-1: use --epochs).")
    batch_size: int = Field(4, ge=1, description="Per-device batch size.")
    grad_accum: int = Field(1, ge=1, description="Gradient accumulation steps.")
    warmup_ratio: float = Field(0.0, ge=0, lt=1, description="Fraction of steps for LR warm-up.")
    lora_r: int = Field(16, ge=1, description="LoRA rank.")
    lora_alpha: int = Field(32, ge=1, description="LoRA alpha.")
    lora_dropout: float = Field(0.0, ge=0, lt=1, description="LoRA dropout.")
    lora_targets: list[str] = Field(default_factory=lambda: ["all-linear"], description="LoRA target modules (all-linear, or names).")
    eval_split: float = Field(0.05, ge=0, lt=1, description="Fraction of rows held out for evaluation (0 disables).")
    eval_data: list[str] = Field(default_factory=list, description="Held-out data (as --data); replaces --eval-split.")
    eval_steps: int = Field(0, ge=0, description="Evaluate every N steps (0: at the end only).")
    save_steps: int = Field(0, ge=0, description="Checkpoint every N steps (0: no intermediate checkpoints).")
    logging_steps: int = Field(5, ge=1, description="Log every N steps.")
    report_to: list[str] = Field(default_factory=list, description="Also report to: tensorboard, wandb, ...")
    resume: bool = Field(False, description="Continue an interrupted run at --output from its last complete checkpoint.")
    force: bool = Field(
        False, description="With --resume: continue although the config or data differ from the interrupted run's (both recorded)."
    )
    nproc: int = Field(1, ge=1, description="Processes to launch through torchrun (GPUs, or CPU processes).")
    distributed: Literal["ddp", "fsdp", "deepspeed"] = Field(
        "ddp", description="Multi-process strategy (fsdp / deepspeed ZeRO-3: full fine-tuning only)."
    )

    @field_validator("max_steps")
    @classmethod
    def _something_to_train(cls, max_steps: int, info: ValidationInfo) -> int:
        # Fields validate in order, so --epochs is known here; 0 steps would write a complete-looking,
        # untrained artifact.
        if max_steps <= 0 and info.data.get("epochs", 1.0) <= 0:
            raise ValueError("nothing to train: give --max-steps > 0 or --epochs > 0")
        return max_steps


class SFTConfig(TrainConfig):
    batch_size: int | None = Field(
        None,
        ge=1,
        description="Per-device batch: rows, or packed bins of --max-length tokens (default 4; packed on CUDA: 8192 tokens a step).",
    )
    packing: bool | None = Field(None, description="Pack rows padding-free with isolated attention (default: on with CUDA).")
    assistant_only_loss: bool = Field(True, description="Loss only on assistant tokens.")


class DPOConfig(TrainConfig):
    lr: float = Field(5e-5, gt=0, description="Peak learning rate.")
    beta: float = Field(0.1, gt=0, description="DPO beta (strength of the KL anchor to the reference).")
    loss_type: str = Field("sigmoid", description="TRL loss: sigmoid (DPO), ipo, hinge, apo_zero, ...; sum with +, e.g. sigmoid+sft.")


class MergeConfig(ModelStageConfig):
    dequantize: bool = Field(False, description="Allow merging into a quantized base by dequantizing it.")
    tolerance: float = Field(1e-3, ge=0, description="Max allowed |merged - (base+adapter)| logit difference.")


class KTOConfig(TrainConfig):
    lr: float = Field(5e-5, gt=0, description="Peak learning rate.")
    batch_size: int = Field(4, ge=2, description="Per-device batch size (KTO estimates its KL term within a batch: at least 2).")
    beta: float = Field(0.1, gt=0, description="KTO beta (strength of the anchor to the reference).")
    loss_type: Literal["kto", "apo_zero_unpaired"] = Field("kto", description="TRL KTO loss: kto or apo_zero_unpaired.")
    desirable_weight: float = Field(1.0, gt=0, description="Weight of the desirable rows' loss (balance unequal counts).")
    undesirable_weight: float = Field(1.0, gt=0, description="Weight of the undesirable rows' loss.")


class ORPOConfig(TrainConfig):
    lr: float = Field(5e-5, gt=0, description="Peak learning rate.")
    beta: float = Field(0.1, gt=0, description="ORPO lambda: weight of the odds-ratio term next to the NLL on chosen.")


class SimPOConfig(TrainConfig):
    lr: float = Field(5e-5, gt=0, description="Peak learning rate.")
    beta: float = Field(2.0, gt=0, description="SimPO beta: scale of the length-normalised reward.")
    gamma: float = Field(0.5, ge=0, description="SimPO target reward margin (TRL simpo_gamma).")
    sft_weight: float = Field(0.0, ge=0, description="Weight of an NLL term on the chosen reply (TRL cpo_alpha; 0: pure SimPO).")


class RewardModelConfig(TrainConfig):
    eval_split: float = Field(0.1, ge=0, lt=1, description="Fraction of pairs held out for the pair accuracy (0 disables).")


class GRPOConfig(TrainConfig):
    lr: float = Field(5e-5, gt=0, description="Peak learning rate.")
    batch_size: int = Field(16, ge=1, description="Completions per device and step (prompts x --num-generations).")
    max_length: int = Field(512, ge=1, description="Max prompt tokens; longer prompts are skipped (counted).")
    reward: list[str] = Field(
        default_factory=lambda: ["exact_match"],
        description="Rewards: exact_match, format, json, code_tests, module:function, FILE.py:function, rm:ARTIFACT.",
    )
    reward_weights: list[float] = Field(default_factory=list, description="One weight per --reward (default: all 1).")
    answer_format: str = Field("auto", description="How exact_match/format find the answer: auto, gsm8k, last_number, boxed, regex:RE.")
    format_regex: str | None = Field(None, description="The format reward: the completion must match this regex in full.")
    json_schema: str | None = Field(None, description="The json reward: a JSON schema file (else the row's `schema` column, if any).")
    allow_code_execution: bool = Field(False, description="Allow the code_tests reward to run model-written code (sandboxed).")
    num_generations: int = Field(8, ge=2, description="Completions sampled per prompt (the group whose rewards are compared).")
    max_completion_length: int = Field(256, ge=1, description="Max new tokens per completion.")
    temperature: float = Field(1.0, gt=0, description="Rollout sampling temperature.")
    top_p: float = Field(1.0, gt=0, le=1, description="Rollout nucleus sampling.")
    top_k: int = Field(0, ge=0, description="Rollout top-k (0: off).")
    beta: float = Field(0.04, ge=0, description="KL coefficient to the reference (the input model; 0: no reference pass).")
    loss_type: str = Field("dapo", description="TRL GRPO loss: grpo, dapo, dr_grpo, bnpo, ...")
    rollout_engine: Literal["auto", "swiftkit", "trl"] = Field(
        "auto", description="Who generates rollouts: swiftkit's engine or TRL's generate (auto: swiftkit on CUDA)."
    )
    eval_split: float = Field(0.05, ge=0, lt=1, description="Fraction of prompts held out for the greedy reward before/after (0 disables).")
    eval_rows: int = Field(256, ge=1, description="At most this many held-out prompts are scored (greedy) before and after.")


class DistillConfig(TrainConfig):
    teacher: str = Field(..., description="Teacher model (artifact, HF dir, .gguf or hub id); must share the student's vocabulary.")
    lr: float = Field(1e-4, gt=0, description="Peak learning rate.")
    max_length: int = Field(512, ge=1, description="Max prompt tokens; longer prompts are skipped (counted).")
    max_completion_length: int = Field(64, ge=1, description="Max new tokens the student generates per prompt.")
    temperature: float = Field(1.0, gt=0, description="Student sampling temperature for its on-policy completions.")
    beta: float = Field(0.5, ge=0, le=1, description="Generalised JSD: 0 = forward KL, 1 = reverse KL, between = JSD.")
    eval_rows: int = Field(256, ge=1, description="At most this many held-out prompts compared (greedy, student vs teacher).")
