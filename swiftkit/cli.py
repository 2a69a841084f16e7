"""The typer app: one command per stage, no logic.

Each stage command is generated from its pydantic config class, so the flags, `--config` YAML
keys and recipe keys are the same list. The stage's `run(config)` is imported only when the
command runs, keeping `swiftkit --help` fast.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import logging
import os
import sys
import typing
from pathlib import Path
from typing import Annotated, Any

import typer

try:  # typer >= 0.25 vendors its own click; its exceptions and ParameterSource are not click's
    from typer import _click as click
except ImportError:  # pragma: no cover - older typer uses the click package
    import click
from pydantic.fields import FieldInfo

from swiftkit.config import CommandConfig, build_config, read_yaml
from swiftkit.console import console
from swiftkit.errors import SwiftkitError

app = typer.Typer(
    name="swiftkit",
    help="Take a language model through its whole life: download, sft, dpo, merge, quantize, eval, serve.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
_debug = {"on": False}
# command name -> (config class, "module:function"): the same table recipes use to run stages.
STAGES: dict[str, tuple[type[CommandConfig], str]] = {}


@app.callback()
def _root(debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False) -> None:
    _debug["on"] = debug


def _cli_type(annotation: Any) -> tuple[Any, dict[str, Any]]:
    """Map a config field's type to what typer understands (Optional stripped; typer handles Literal)."""
    origin = typing.get_origin(annotation)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)) and len(args) == 1:
        return _cli_type(args[0])
    if origin is list:
        inner, extra = _cli_type(args[0]) if args else (str, {})
        return list[inner], extra
    return annotation, {}


def _extra(info: FieldInfo) -> dict[str, Any]:
    return info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}


def _is_positional(info: FieldInfo) -> bool:
    return bool(_extra(info).get("positional"))


def _parameter(name: str, info: FieldInfo) -> inspect.Parameter:
    extra = _extra(info)
    cli_type, kwargs = _cli_type(info.annotation)
    default = None if info.is_required() else info.get_default(call_default_factory=True)
    if default == []:
        default = None
    help_text = info.description or ""
    if extra.get("positional"):
        marker = typer.Argument(help=help_text, show_default=default is not None, **kwargs)
    else:
        flags = [f"--{name.replace('_', '-')}", *extra.get("flags", [])]
        if cli_type is bool:
            flags = [f"--{name.replace('_', '-')}/--no-{name.replace('_', '-')}"]
        marker = typer.Option(*flags, help=help_text, **kwargs)
    # Required fields are optional here: --config may supply them, and pydantic reports what is missing.
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=Annotated[cli_type, marker])


def stage_command(name: str, config_cls: type[CommandConfig], run_target: str, help: str, parent: typer.Typer = app) -> None:
    """Register `swiftkit NAME`: flags from `config_cls`, then `run_target` ('module:function')."""
    # Sub-commands are keyed with their group ("bench serve"), so they never shadow a stage.
    STAGES[name if parent is app else f"{parent.info.name} {name}"] = (config_cls, run_target)
    params = [
        inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context),
        inspect.Parameter(
            "config",
            inspect.Parameter.KEYWORD_ONLY,
            default=None,
            annotation=Annotated[Path | None, typer.Option("--config", help="YAML file of the same fields (flags override it).")],
        ),
    ]
    # Positional arguments first, in declaration order, then options.
    ordered = sorted(config_cls.model_fields.items(), key=lambda kv: not _is_positional(kv[1]))
    params += [_parameter(n, i) for n, i in ordered]

    def command(ctx: typer.Context, config: Path | None = None, **values: Any) -> None:
        given = {
            key: value
            for key, value in values.items()
            if ctx.get_parameter_source(key).name not in ("DEFAULT", "DEFAULT_MAP")
            and value is not None  # a list option given no values arrives as None
        }
        file_values = read_yaml(config) if config else {}
        cfg = build_config(config_cls, file_values, given, source="options")
        run_stage(run_target, cfg)

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    command.__doc__ = help
    parent.command(name, help=help)(command)


def run_stage(run_target: str, cfg: CommandConfig) -> Any:
    module, func = run_target.split(":")
    return getattr(importlib.import_module(module), func)(cfg)


def _register() -> None:
    from swiftkit.eval.config import CompareConfig, EvalConfig
    from swiftkit.hub.config import DownloadConfig, ModelsConfig, PushConfig
    from swiftkit.info import InfoConfig
    from swiftkit.quant.config import QuantizeConfig
    from swiftkit.toy import ToyConfig
    from swiftkit.train.config import DPOConfig, MergeConfig, SFTConfig

    stage_command(
        "toy", ToyConfig, "swiftkit.toy:run", "Build the offline toy model (Qwen2 architecture, own tokenizer, briefly pre-trained)."
    )
    stage_command("sft", SFTConfig, "swiftkit.train.sft:run", "Supervised fine-tuning: LoRA (default), QLoRA or full, on TRL's SFTTrainer.")
    stage_command("dpo", DPOConfig, "swiftkit.train.dpo:run", "Preference training (DPO and other TRL losses) on a base or SFT artifact.")
    from swiftkit.train.config import KTOConfig, ORPOConfig, RewardModelConfig, SimPOConfig

    stage_command("kto", KTOConfig, "swiftkit.train.kto:run", "KTO on unpaired good/bad feedback or split pairs; reference = the input.")
    stage_command("orpo", ORPOConfig, "swiftkit.train.reference_free:run_orpo", "ORPO: reference-free preference training.")
    stage_command("simpo", SimPOConfig, "swiftkit.train.reference_free:run_simpo", "SimPO: reference-free preference training.")
    stage_command("rm", RewardModelConfig, "swiftkit.train.rm:run", "Reward model from preference pairs; held-out pair accuracy.")
    stage_command("merge", MergeConfig, "swiftkit.train.merge:run", "Merge a LoRA adapter (or adapter chain) into its base, verified.")
    stage_command(
        "quantize",
        QuantizeConfig,
        "swiftkit.quant.quantize:run",
        "Quantize a model (GPTQ, AWQ, bitsandbytes) and verify the written checkpoint.",
    )
    from swiftkit.gguf.config import ExportConfig, ImportConfig

    stage_command("import", ImportConfig, "swiftkit.gguf.importer:run", "Import a .gguf file as a safetensors model artifact.")
    stage_command(
        "export",
        ExportConfig,
        "swiftkit.gguf.export:run",
        "Export a model to GGUF (llama.cpp quant types) or Ollama, verified in llama.cpp against transformers.",
    )
    stage_command("info", InfoConfig, "swiftkit.info:run", "Show an artifact's lineage back to the base model, with eval results.")
    stage_command(
        "eval",
        EvalConfig,
        "swiftkit.eval.evaluate:run",
        "Evaluate models or an endpoint on benchmarks (lm-evaluation-harness); writes eval artifacts.",
    )
    stage_command(
        "compare",
        CompareConfig,
        "swiftkit.eval.compare:run",
        "Put eval artifacts side by side with deltas to the first (CI gates: --fail-under, --max-drop).",
    )
    stage_command(
        "download",
        DownloadConfig,
        "swiftkit.hub.download:run",
        "Download a model from the Hugging Face hub or ModelScope, verified, as an artifact.",
    )
    stage_command(
        "push",
        PushConfig,
        "swiftkit.hub.push:run",
        "Publish an artifact (with a generated model card) to the Hugging Face hub or ModelScope.",
    )
    stage_command("models", ModelsConfig, "swiftkit.hub.cache:run", "List the models cached locally (hub ids used as --model), with sizes.")
    from swiftkit.serve.config import ServeConfig

    stage_command("serve", ServeConfig, "swiftkit.serve.server:run", "OpenAI-compatible HTTP server with a continuous-batching engine.")
    from swiftkit.recipes import RecipeCopyConfig, RecipeListConfig, RunConfig
    from swiftkit.smoke import SmokeConfig

    stage_command("smoke", SmokeConfig, "swiftkit.smoke:run", "Serve a model, ask it one question through the openai SDK, stop.")
    stage_command("run", RunConfig, "swiftkit.recipes:run", "Run a recipe: chained stages, cached by fingerprint, with @stage references.")
    recipe_app = typer.Typer(name="recipe", help="List or copy bundled recipes.", no_args_is_help=True)
    stage_command("list", RecipeListConfig, "swiftkit.recipes:list_recipes", "List bundled recipes.", parent=recipe_app)
    stage_command("cp", RecipeCopyConfig, "swiftkit.recipes:copy_recipe", "Copy a bundled recipe to edit.", parent=recipe_app)
    app.add_typer(recipe_app, name="recipe")
    from swiftkit.serve.config import InferConfig

    stage_command(
        "infer", InferConfig, "swiftkit.serve.infer:run", "Batch inference over a prompts file through the serving engine (resumable)."
    )
    from swiftkit.serve.config import ChatConfig

    stage_command("chat", ChatConfig, "swiftkit.serve.chat:run", "Interactive terminal chat with streaming, history and /reset.")
    from swiftkit.bench.config import BenchServeConfig

    bench = typer.Typer(name="bench", help="Benchmarks.", no_args_is_help=True)
    stage_command(
        "serve",
        BenchServeConfig,
        "swiftkit.bench.serve:run",
        "Load-test an OpenAI endpoint: tok/s, req/s, TTFT and ITL percentiles (+ in-process baseline).",
        parent=bench,
    )
    from swiftkit.bench.config import BenchEngineConfig

    stage_command(
        "engine",
        BenchEngineConfig,
        "swiftkit.bench.engine:run",
        "Generation speed in-process: swiftkit's engines vs HF generate (tok/s, step latency, ratio, logit fidelity).",
        parent=bench,
    )
    from swiftkit.bench.train_config import BenchTrainConfig

    stage_command(
        "train",
        BenchTrainConfig,
        "swiftkit.bench.train:run",
        "Fine-tuning speed: the plain padded PEFT path vs swiftkit sft's packed path (tok/s, peak memory, ratio).",
        parent=bench,
    )
    app.add_typer(bench, name="bench", help="Benchmarks.")


_register()


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app, turning SwiftkitError into one red line and exit code 2."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Import-time noise from optional kernels (torchao's CUDA-only .so files, torch's pytree notices,
    # bitsandbytes' hub-only `kernels` package) that says nothing actionable to a swiftkit user.
    # httpx logs every request at INFO once a library (lm-eval) configures the root logger.
    for noisy in ("torchao", "torch.utils._pytree", "bitsandbytes.backends.cpu.ops", "httpx", "httpx2", "tokenicer"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    with contextlib.suppress(ImportError):  # GPTQModel's import banner, printed whenever peft loads it
        from logbar import LogBar

        LogBar.shared().setLevel(logging.ERROR)
    try:
        app(args=argv, standalone_mode=False)
    except SwiftkitError as exc:
        if _debug["on"]:
            console.print_exception()
        console.print(f"[bold red]error:[/] {exc.message}", highlight=False)
        if exc.hint:
            console.print(f"[yellow]hint:[/] {exc.hint}", highlight=False)
        sys.exit(2)
    except typer.Abort:
        console.print("[red]aborted[/]")
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        console.print("[red]interrupted[/]")
        sys.exit(130)
    except Exception as exc:  # a bug, not a user mistake: still one line unless --debug
        if _debug["on"]:
            raise
        console.print(f"[bold red]internal error:[/] {type(exc).__name__}: {exc}", highlight=False)
        console.print("[yellow]hint:[/] re-run with `swiftkit --debug ...` for the traceback and report it")
        sys.exit(1)
