"""Stage configs: one pydantic model per stage, filled from `--config FILE.yaml` then CLI flags.

A config's fields *are* the command's flags (`max_length` <-> `--max-length`) and a recipe stage's
keys, so there is exactly one list of options per stage. Config classes live in light modules
(no torch import) so `swiftkit --help` stays instant.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from swiftkit.errors import SwiftkitError

C = TypeVar("C", bound="CommandConfig")


def positional(default: Any = ..., description: str = "", **kwargs: Any) -> Any:
    """A field given as a positional CLI argument (still a named key in YAML/recipes)."""
    return Field(default, description=description, json_schema_extra={"positional": True}, **kwargs)


class CommandConfig(BaseModel):
    """Options of a command that writes no artifact (info, run, recipe list, ...)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class StageConfig(CommandConfig):
    """Fields every artifact-writing stage shares. See docs/contract.md for the shared flag table."""

    output: str | None = Field(None, description="Artifact directory to write (default: runs/<stage>-<time>).")
    seed: int = Field(42, description="Random seed.")
    overwrite: bool = Field(False, description="Replace an existing artifact at --output.")


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, turning every failure into one actionable line."""
    path = Path(path)
    if not path.is_file():
        raise SwiftkitError(f"config file not found: {path}", "check the path given to --config")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise SwiftkitError(f"{path} is not a UTF-8 text file ({exc.reason})", "give a YAML file") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SwiftkitError(f"invalid YAML in {path}{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SwiftkitError(f"{path} must hold a mapping of option: value, not {type(data).__name__}")
    return normalise_keys(data)


def normalise_keys(values: dict[str, Any]) -> dict[str, Any]:
    """Accept both `max-length` (flag spelling) and `max_length` (field spelling)."""
    return {str(k).replace("-", "_"): v for k, v in values.items()}


def build_config(cls: type[C], *layers: dict[str, Any], source: str = "config") -> C:
    """Merge layers left to right (later wins) and validate; errors name the offending field."""
    merged: dict[str, Any] = {}
    for layer in layers:
        merged.update(normalise_keys(layer))
    try:
        return cls(**merged)
    except ValidationError as exc:
        raise SwiftkitError(f"invalid {source}: {describe_validation_error(exc)}") from None


def describe_validation_error(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        if not err["loc"]:  # a check across fields (a model validator): its message says it all
            parts.append(err["msg"].removeprefix("Value error, "))
            continue
        field = ".".join(str(p) for p in err["loc"])
        # a nested YAML key (models.0.colour) has no flag spelling
        flag = "--" + field.replace("_", "-") if len(err["loc"]) == 1 else field
        msg = "unknown option" if err["type"] == "extra_forbidden" else err["msg"]
        parts.append(f"{flag}: {msg}")
    return "; ".join(parts)
