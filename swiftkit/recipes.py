"""`swiftkit run RECIPE.yaml`: an ordered list of named stages, each a swiftkit command.

A stage's keys are exactly its command's fields; `@NAME` / `@NAME/sub/path` refer to an earlier
stage's output. A stage is skipped when its fingerprint (command, resolved config, and the
fingerprints of the stages it refers to) matches the last successful run recorded in
`<workdir>/.recipe-state.json` and its artifact is still there.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field
from rich.table import Table

from swiftkit.artifacts import is_complete, read_manifest
from swiftkit.config import CommandConfig, build_config, positional, read_yaml
from swiftkit.console import console, out
from swiftkit.errors import SwiftkitError
from swiftkit.stages import stage as stage_entry

RECIPES_DIR = Path(__file__).resolve().parent.parent / "recipes"
STATE_FILE = ".recipe-state.json"
# Keys of a recipe stage that belong to the recipe, not to the command.
STAGE_KEYS = ("name", "command")


class RunConfig(CommandConfig):
    recipe: str = positional(description="Recipe YAML file, or the name of a bundled recipe (see `swiftkit recipe list`).")
    set: list[str] = Field(default_factory=list, description="Override a stage field: STAGE.FIELD=VALUE (YAML value).")
    from_stage: str | None = Field(None, description="Re-run from this stage on, even if cached.", json_schema_extra={"flags": ["--from"]})
    only: str | None = Field(None, description="Run only this stage (earlier outputs must exist).")
    dry_run: bool = Field(False, description="Validate every stage's config and references, run nothing.")
    workdir: str | None = Field(None, description="Where stage outputs go by default (default: runs/<recipe name>).")


class RecipeListConfig(CommandConfig):
    pass


class RecipeCopyConfig(CommandConfig):
    name: str = positional(description="Bundled recipe name.")
    dest: str = positional(description="Where to write your copy.")
    overwrite: bool = Field(False, description="Replace an existing file at DEST.")


def find_recipe(ref: str) -> Path:
    path = Path(ref)
    if path.is_file():
        return path
    bundled = RECIPES_DIR / (ref if ref.endswith(".yaml") else f"{ref}.yaml")
    if bundled.is_file():
        return bundled
    raise SwiftkitError(f"recipe not found: {ref}", "give a YAML path or a name from `swiftkit recipe list`")


def load_recipe(path: Path, overrides: list[str]) -> tuple[str, list[dict[str, Any]]]:
    raw = read_yaml(path)
    stages = raw.get("stages")
    if not isinstance(stages, list) or not stages:
        raise SwiftkitError(f"{path}: a recipe needs a non-empty `stages:` list")
    seen: set[str] = set()
    for i, stage in enumerate(stages):
        if not isinstance(stage, dict) or "name" not in stage or "command" not in stage:
            raise SwiftkitError(f"{path}: stage {i + 1} needs `name:` and `command:`")
        if stage["name"] in seen:
            raise SwiftkitError(f"{path}: stage name `{stage['name']}` is used twice")
        seen.add(stage["name"])
    for item in overrides:
        _apply_override(stages, item)
    return str(raw.get("name") or path.stem), stages


def _apply_override(stages: list[dict[str, Any]], item: str) -> None:
    import yaml

    key, sep, value = item.partition("=")
    stage_name, dot, field = key.partition(".")
    if not sep or not dot:
        raise SwiftkitError(f"bad --set {item!r}", "use --set STAGE.FIELD=VALUE, e.g. --set sft.max_steps=10")
    for stage in stages:
        if stage["name"] == stage_name:
            stage[field.replace("-", "_")] = yaml.safe_load(value)
            return
    raise SwiftkitError(f"--set {item!r}: no stage named `{stage_name}`")


def resolve_refs(value: Any, outputs: dict[str, Path], stage: str) -> Any:
    """Replace `@NAME` / `@NAME/sub/path` strings (also inside lists) by earlier stages' paths."""
    if isinstance(value, list):
        return [resolve_refs(v, outputs, stage) for v in value]
    if isinstance(value, str) and value.startswith("@"):
        name, _, sub = value[1:].partition("/")
        if name not in outputs:
            raise SwiftkitError(f"`@{name}` is not an earlier stage of the recipe")
        return str(outputs[name] / sub) if sub else str(outputs[name])
    return value


def referenced(value: Any) -> set[str]:
    if isinstance(value, list):
        return set().union(*(referenced(v) for v in value)) if value else set()
    if isinstance(value, str) and value.startswith("@"):
        return {value[1:].split("/")[0]}
    return set()


@dataclass
class PlannedStage:
    name: str
    command: str
    config: Any
    output: Path | None
    fingerprint: str
    refs: set[str]
    cached: bool


def run(cfg: RunConfig) -> dict[str, Path]:
    path = find_recipe(cfg.recipe)
    name, stages = load_recipe(path, cfg.set)
    workdir = Path(cfg.workdir or Path("runs") / name)
    names = [s["name"] for s in stages]
    for flag, value in (("--from", cfg.from_stage), ("--only", cfg.only)):
        if value and value not in names:
            raise SwiftkitError(f"{flag} {value}: no such stage (stages: {', '.join(names)})")
    state_file = workdir / STATE_FILE
    state = json.loads(state_file.read_text()) if state_file.is_file() else {}
    # Every stage is validated before any runs: a typo in the last stage costs no training time.
    plan = _plan(path, stages, workdir, state, cfg.from_stage)
    report: list[tuple[str, str, str, str]] = []
    results: dict[str, Any] = {}
    ran: set[str] = set()
    for step in plan:
        where = str(step.output or "-")
        if cfg.dry_run:
            report.append((step.name, step.command, "valid", where))
            continue
        if cfg.only and cfg.only != step.name:
            before_only = names.index(step.name) < names.index(cfg.only)
            if before_only and step.output is not None and not is_complete(step.output):
                raise SwiftkitError(
                    f"--only {cfg.only}: earlier stage `{step.name}` has no artifact at {step.output}",
                    "run the recipe without --only first",
                )
            report.append((step.name, step.command, "not run", where))
            continue
        if step.cached and not step.refs & ran:
            console.log(f"[dim]stage {step.name}: unchanged, using {step.output}[/]")
            report.append((step.name, step.command, "cached", where))
            continue
        console.rule(f"[bold]stage {step.name}[/] ({step.command})")
        started = time.time()
        results[step.name] = _execute(step)
        ran.add(step.name)
        if step.output is not None:
            state[step.name] = step.fingerprint
            workdir.mkdir(parents=True, exist_ok=True)
            state_file.write_text(json.dumps(state, indent=2))
        report.append((step.name, step.command, f"ran {time.time() - started:.0f}s", where))
    _print_report(name, report)
    outputs = {step.name: step.output.resolve() for step in plan if step.output is not None}
    if not cfg.dry_run:
        print_effects(stages, outputs, results)
    return outputs


def _plan(path: Path, stages: list[dict[str, Any]], workdir: Path, state: dict[str, str], from_stage: str | None) -> list[PlannedStage]:
    lines = _stage_lines(path)
    outputs: dict[str, Path] = {}
    fingerprints: dict[str, str] = {}
    forced = False
    plan = []
    for index, stage in enumerate(stages):
        sname, command = stage["name"], stage["command"]
        try:
            config_cls = stage_entry(command).config_class()
            fields = {k: v for k, v in stage.items() if k not in STAGE_KEYS}
            if "output" in config_cls.model_fields:
                fields.setdefault("output", str(workdir / sname))
            resolved = {k: _resolve_field(k, v, outputs, sname) for k, v in fields.items()}
            refs = referenced(list(fields.values()))
            fingerprint = _fingerprint(command, resolved, [fingerprints[r] for r in sorted(refs)])
            output = Path(resolved["output"]) if resolved.get("output") else None
            forced = forced or from_stage == sname
            cached = output is not None and state.get(sname) == fingerprint and is_complete(output) and not forced
            if "overwrite" in config_cls.model_fields and not cached:
                resolved["overwrite"] = True  # the recipe owns its stage outputs
            stage_cfg = build_config(config_cls, resolved, source=f"stage `{sname}` ({command})")
        except SwiftkitError as exc:
            line = _line_of(exc.message, lines, index)
            raise SwiftkitError(f"{path}, line {line}: stage `{sname}`: {exc.message}", exc.hint) from None
        fingerprints[sname] = fingerprint
        if output is not None:
            outputs[sname] = output.resolve()
        plan.append(PlannedStage(sname, command, stage_cfg, output, fingerprint, refs, cached))
    return plan


def _resolve_field(key: str, value: Any, outputs: dict[str, Path], stage: str) -> Any:
    try:
        return resolve_refs(value, outputs, stage)
    except SwiftkitError as exc:
        raise SwiftkitError(f"`{key}`: {exc.message}") from None


def _execute(step: PlannedStage) -> Any:
    try:
        return stage_entry(step.command).run(step.config)
    except SwiftkitError as exc:
        raise SwiftkitError(
            f"stage `{step.name}` ({step.command}) failed: {exc.message}",
            exc.hint or "earlier stages' artifacts are kept; fix and re-run (cached stages are skipped)",
        ) from None


def _stage_lines(path: Path) -> dict[tuple[int, str | None], int]:
    """1-based line numbers of each stage and each of its keys, for error messages."""
    import yaml

    lines: dict[tuple[int, str | None], int] = {}
    root = yaml.compose(path.read_text(encoding="utf-8"))
    if not isinstance(root, yaml.MappingNode):
        return lines
    for key, value in root.value:
        if key.value == "stages" and isinstance(value, yaml.SequenceNode):
            for index, item in enumerate(value.value):
                lines[(index, None)] = item.start_mark.line + 1
                if isinstance(item, yaml.MappingNode):
                    for field_key, _ in item.value:
                        lines[(index, str(field_key.value).replace("-", "_"))] = field_key.start_mark.line + 1
    return lines


def _line_of(message: str, lines: dict[tuple[int, str | None], int], index: int) -> int | str:
    """The line of the first field the message names (`--max-steps` or `` `model` ``), else the stage's."""
    for (stage_index, key), line in sorted(lines.items(), key=lambda kv: kv[1]):
        if stage_index == index and key and (f"--{key.replace('_', '-')}" in message or f"`{key}`" in message):
            return line
    if "unknown command" in message:
        return lines.get((index, "command"), lines.get((index, None), "?"))
    return lines.get((index, None), "?")


def _fingerprint(command: str, resolved: dict[str, Any], upstream: list[str]) -> str:
    payload = json.dumps({"command": command, "config": resolved, "upstream": upstream}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _print_report(name: str, report: list[tuple[str, str, str, str]]) -> None:
    table = Table(title=f"recipe {name}", title_justify="left")
    for col in ("stage", "command", "status", "artifact"):
        table.add_column(col)
    for row in report:
        table.add_row(*row)
    out.print(table)


def print_effects(stages: list[dict[str, Any]], outputs: dict[str, Path], results: dict[str, Any]) -> None:
    """One table of each model stage's effect, read back from the artifacts' manifests (plus the
    serving speed that a smoke stage measured on a model)."""
    speeds = {
        str(Path(r["model"]).resolve()): r["tokens_per_second"]
        for r in results.values()
        if isinstance(r, dict) and "tokens_per_second" in r
    }
    from swiftkit.artifacts import find_evals

    rows = []
    columns: dict[str, None] = {}
    for stage in stages:
        output = outputs.get(stage["name"])
        manifest = read_manifest(output) if output and output.is_dir() else None
        if manifest is None or manifest.kind == "eval":
            continue
        cells: dict[str, str] = {}
        for _, evaluation in find_evals(output, [output.parent]):
            for task, score in (evaluation.metrics.get("scores") or {}).items():
                if isinstance(score, (int, float)):
                    cells[task] = f"{score:.3f}"
        size = _weights_size(output)
        if size:
            cells["size"] = f"{size / 1e6:.2f} MB"
        verification = (manifest.quantization or {}).get("verification") or {}
        if "ppl_quantized" in verification:
            cells["ppl"] = f"{verification['ppl_parent']:.1f}->{verification['ppl_quantized']:.1f}"
        if str(output) in speeds:
            cells["serve tok/s"] = f"{speeds[str(output)]:.0f}"
        columns.update(dict.fromkeys(cells))
        rows.append((stage["name"], manifest.stage, cells))
    if not rows:
        return
    table = Table(title="effect of each stage", title_justify="left")
    table.add_column("stage")
    table.add_column("kind")
    for col in columns:
        table.add_column(col, justify="right")
    for sname, kind, cells in rows:
        table.add_row(sname, kind, *(cells.get(c, "") for c in columns))
    out.print(table)


def _weights_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.glob("*.safetensors"))


def list_recipes(cfg: RecipeListConfig) -> list[str]:
    table = Table(title=f"bundled recipes ({RECIPES_DIR})", title_justify="left")
    table.add_column("name")
    table.add_column("description")
    names = []
    for file in sorted(RECIPES_DIR.glob("*.yaml")):
        raw = read_yaml(file)
        names.append(file.stem)
        table.add_row(file.stem, str(raw.get("description", "")).strip().splitlines()[0] if raw.get("description") else "")
    out.print(table)
    return names


def copy_recipe(cfg: RecipeCopyConfig) -> Path:
    source = find_recipe(cfg.name)
    dest = Path(cfg.dest)
    if dest.exists() and not cfg.overwrite:
        raise SwiftkitError(f"{dest} exists", "pass --overwrite or choose another path")
    shutil.copyfile(source, dest)
    console.print(f"copied {source.name} to {dest}; edit it and run `swiftkit run {dest}`")
    return dest
