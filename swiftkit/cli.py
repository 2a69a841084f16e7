"""The typer app: one command per registry entry (swiftkit/stages.py), no logic.

Each stage command is generated from its pydantic config class, so the flags, `--config` YAML
keys and recipe keys are the same list. The stage's `run(config)` is imported only when the
command runs, keeping `swiftkit --help` fast.
"""

from __future__ import annotations

import contextlib
import inspect
import io
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

from swiftkit.config import build_config, read_yaml
from swiftkit.console import console
from swiftkit.errors import SwiftkitError
from swiftkit.stages import GROUPS, STAGES, Stage

app = typer.Typer(
    name="swiftkit",
    help="Take a language model through its whole life: download, sft, dpo, merge, quantize, eval, serve.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
_debug = {"on": False}


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


def stage_command(stage: Stage, parent: typer.Typer) -> None:
    """Register one registry entry as a command: flags from its config class, then its run function."""
    config_cls = stage.config_class()
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
    # Nested lists (a deployment's `models:`) are YAML only: no flag spells them.
    params += [_parameter(n, i) for n, i in ordered if not _extra(i).get("yaml_only")]

    def command(ctx: typer.Context, config: Path | None = None, **values: Any) -> None:
        given = {
            key: value
            for key, value in values.items()
            if ctx.get_parameter_source(key).name not in ("DEFAULT", "DEFAULT_MAP")
            and value is not None  # a list option given no values arrives as None
        }
        file_values = read_yaml(config) if config else {}
        stage.run(build_config(config_cls, file_values, given, source="options"))

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    command.__doc__ = stage.help
    parent.command(stage.name.rpartition(" ")[2], help=stage.help)(command)


def _register() -> None:
    groups = {name: typer.Typer(name=name, help=help, no_args_is_help=True) for name, help in GROUPS.items()}
    for stage in STAGES.values():
        group, _, _ = stage.name.rpartition(" ")
        stage_command(stage, groups[group] if group else app)
    for name, group in groups.items():
        app.add_typer(group, name=name, help=GROUPS[name])


_register()


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app, turning SwiftkitError into one red line and exit code 2."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Import-time noise from optional kernels (torchao's CUDA-only .so files, torch's pytree notices,
    # bitsandbytes' hub-only `kernels` package) that says nothing actionable to a swiftkit user.
    # httpx logs every request at INFO once a library (lm-eval) configures the root logger.
    for noisy in ("torchao", "torch.utils._pytree", "bitsandbytes.backends.cpu.ops", "httpx", "httpx2", "tokenicer"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    # GPTQModel's import banner, printed whenever peft loads it. Importing logbar creates its shared
    # logger, which prints a blank line "to clear space": into the void, so a command's stdout (`keys
    # list --format json`, a new key's secret) starts with its own output.
    with contextlib.suppress(ImportError), contextlib.redirect_stdout(io.StringIO()):
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
