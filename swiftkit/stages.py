"""The stage registry: every swiftkit command, its config class and the function that runs it.

One table read by both the CLI (which builds a typer command from each entry) and recipes (which
run the same entries by name), so neither imports the other. Config classes and run functions are
named as "module:attribute" and imported only when used, keeping this module dependency-free.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from swiftkit.errors import SwiftkitError

if TYPE_CHECKING:
    from swiftkit.config import CommandConfig


@dataclass(frozen=True)
class Stage:
    name: str  # "sft"; a group's sub-command is "GROUP NAME" ("bench serve"), so it never shadows a stage
    config: str  # "module:ConfigClass"
    target: str  # "module:function" that runs it
    help: str

    def config_class(self) -> type[CommandConfig]:
        return _attribute(self.config)

    def run(self, cfg: CommandConfig) -> Any:
        return _attribute(self.target)(cfg)


def _attribute(ref: str) -> Any:
    module, name = ref.split(":")
    return getattr(importlib.import_module(module), name)


# Sub-command groups: name -> help.
GROUPS = {"recipe": "List or copy bundled recipes.", "bench": "Benchmarks.",
          "keys": "Tenant API keys of `swiftkit serve --database` (stored hashed)."}

_T = "swiftkit.train"
STAGES: dict[str, Stage] = {
    s.name: s
    for s in [
        Stage("toy", "swiftkit.toy:ToyConfig", "swiftkit.toy:run",
              "Build the offline toy model (Qwen2 architecture, own tokenizer, briefly pre-trained)."),
        Stage("sft", f"{_T}.config:SFTConfig", f"{_T}.sft:run",
              "Supervised fine-tuning: LoRA (default), QLoRA or full, on TRL's SFTTrainer."),
        Stage("dpo", f"{_T}.config:DPOConfig", f"{_T}.dpo:run",
              "Preference training (DPO and other TRL losses) on a base or SFT artifact."),
        Stage("kto", f"{_T}.config:KTOConfig", f"{_T}.kto:run",
              "KTO on unpaired good/bad feedback or split pairs; reference = the input."),
        Stage("orpo", f"{_T}.config:ORPOConfig", f"{_T}.reference_free:run_orpo", "ORPO: reference-free preference training."),
        Stage("simpo", f"{_T}.config:SimPOConfig", f"{_T}.reference_free:run_simpo", "SimPO: reference-free preference training."),
        Stage("rm", f"{_T}.config:RewardModelConfig", f"{_T}.rm:run", "Reward model from preference pairs; held-out pair accuracy."),
        Stage("grpo", f"{_T}.config:GRPOConfig", f"{_T}.grpo:run",
              "GRPO: RL with verifiable rewards (exact match, format, JSON, tests, your function, a reward model)."),
        Stage("distill", f"{_T}.config:DistillConfig", f"{_T}.distill:run",
              "Distil a teacher into a student on the student's own completions (TRL's DistillationTrainer)."),
        Stage("merge", f"{_T}.config:MergeConfig", f"{_T}.merge:run",
              "Merge a LoRA adapter (or adapter chain) into its base, verified."),
        Stage("quantize", "swiftkit.quant.config:QuantizeConfig", "swiftkit.quant.quantize:run",
              "Quantize a model (GPTQ, AWQ, bitsandbytes) and verify the written checkpoint."),
        Stage("import", "swiftkit.gguf.config:ImportConfig", "swiftkit.gguf.importer:run",
              "Import a .gguf file as a safetensors model artifact."),
        Stage("export", "swiftkit.gguf.config:ExportConfig", "swiftkit.gguf.export:run",
              "Export a model to GGUF (llama.cpp quant types) or Ollama, verified in llama.cpp against transformers."),
        Stage("info", "swiftkit.info:InfoConfig", "swiftkit.info:run",
              "Show an artifact's lineage back to the base model, with eval results."),
        Stage("eval", "swiftkit.eval.config:EvalConfig", "swiftkit.eval.evaluate:run",
              "Evaluate models or an endpoint on benchmarks (lm-evaluation-harness); writes eval artifacts."),
        Stage("compare", "swiftkit.eval.config:CompareConfig", "swiftkit.eval.compare:run",
              "Put eval artifacts side by side with deltas to the first (CI gates: --fail-under, --max-drop)."),
        Stage("download", "swiftkit.hub.config:DownloadConfig", "swiftkit.hub.download:run",
              "Download a model from the Hugging Face hub or ModelScope, verified, as an artifact."),
        Stage("push", "swiftkit.hub.config:PushConfig", "swiftkit.hub.push:run",
              "Publish an artifact (with a generated model card) to the Hugging Face hub or ModelScope."),
        Stage("models", "swiftkit.hub.config:ModelsConfig", "swiftkit.hub.cache:run",
              "List the models cached locally (hub ids used as --model), with sizes."),
        Stage("serve", "swiftkit.serve.config:ServeConfig", "swiftkit.serve.deployment:run",
              "OpenAI-compatible HTTP server with a continuous-batching engine."),
        Stage("smoke", "swiftkit.smoke:SmokeConfig", "swiftkit.smoke:run",
              "Serve a model, ask it one question through the openai SDK, stop."),
        Stage("run", "swiftkit.recipes:RunConfig", "swiftkit.recipes:run",
              "Run a recipe: chained stages, cached by fingerprint, with @stage references."),
        Stage("recipe list", "swiftkit.recipes:RecipeListConfig", "swiftkit.recipes:list_recipes", "List bundled recipes."),
        Stage("recipe cp", "swiftkit.recipes:RecipeCopyConfig", "swiftkit.recipes:copy_recipe", "Copy a bundled recipe to edit."),
        Stage("keys create", "swiftkit.serve.config:KeysCreateConfig", "swiftkit.serve.keys:create",
              "Create a tenant API key (allowed models, rpm/tpm limits, token quota, expiry); prints it once."),
        Stage("keys list", "swiftkit.serve.config:KeysListConfig", "swiftkit.serve.keys:list_keys",
              "List the keys: id, tenant, limits, state (never the secrets)."),
        Stage("keys revoke", "swiftkit.serve.config:KeysRevokeConfig", "swiftkit.serve.keys:revoke",
              "Revoke a key by id: servers refuse it within a second."),
        Stage("usage", "swiftkit.serve.config:UsageConfig", "swiftkit.serve.keys:usage",
              "Usage per tenant, model and UTC day from the serving database (table, CSV or JSON)."),
        Stage("infer", "swiftkit.serve.config:InferConfig", "swiftkit.serve.infer:run",
              "Batch inference over a prompts file through the serving engine (resumable)."),
        Stage("chat", "swiftkit.serve.config:ChatConfig", "swiftkit.serve.chat:run",
              "Interactive terminal chat with streaming, history and /reset."),
        Stage("bench serve", "swiftkit.bench.config:BenchServeConfig", "swiftkit.bench.serve:run",
              "Load-test an OpenAI endpoint: tok/s, req/s, TTFT and ITL percentiles (+ in-process baseline)."),
        Stage("bench engine", "swiftkit.bench.config:BenchEngineConfig", "swiftkit.bench.engine:run",
              "Generation speed in-process: swiftkit's engines vs HF generate (tok/s, step latency, ratio, logit fidelity)."),
        Stage("bench train", "swiftkit.bench.train_config:BenchTrainConfig", "swiftkit.bench.train:run",
              "Fine-tuning speed: the plain padded PEFT path vs swiftkit sft's packed path (tok/s, peak memory, ratio)."),
        Stage("bench eval", "swiftkit.bench.eval_config:BenchEvalConfig", "swiftkit.bench.eval:run",
              "Eval speed: the same tasks and rows through lm-eval's hf backend and swiftkit's engine (wall time, ratio, score deltas)."),
    ]
}  # fmt: skip


def stage(name: str) -> Stage:
    """The stage a recipe or the CLI names, or a one-line error listing the known ones."""
    if name not in STAGES:
        raise SwiftkitError(f"unknown command `{name}`", f"commands: {', '.join(sorted(STAGES))}")
    return STAGES[name]
