"""Which tasks an eval runs and where their data comes from: names resolved through the registry,
local data validated and converted, task YAMLs written; all before any model loads."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from swiftkit.errors import DataError, SwiftkitError
from swiftkit.eval.tasks.common import lm_eval_yaml, write_yaml
from swiftkit.eval.tasks.registry import Benchmark, BuildContext, benchmarks, lookup


@dataclass
class TaskPlan:
    """What to hand to lm-eval: task names, the folder of generated YAMLs, and how to score."""

    names: list[str]
    include_dir: Path
    offline: bool  # every task is served from generated YAMLs (lm-eval's 15k-task index not needed)
    primary: dict[str, str] = field(default_factory=dict)  # task -> "metric,filter" shown as its score
    loglikelihood: list[str] = field(default_factory=list)  # tasks that need prompt logprobs
    sources: dict[str, str] = field(default_factory=dict)  # task -> data file / folder / "hub"


class _TagTolerantLoader(yaml.SafeLoader):
    """Reads an lm-eval task YAML for its name and kind without importing its `!function`s."""


_TagTolerantLoader.add_constructor("!function", lambda loader, node: loader.construct_scalar(node))


def _yaml_task(path: Path, out: Path) -> tuple[str, dict[str, Any]]:
    """A user's own lm-eval task YAML, served by a stub that `include`s it (its own relative
    `include:` and `!function utils.x` references keep resolving next to the original)."""
    try:
        config = yaml.load(path.read_text(encoding="utf-8"), Loader=_TagTolerantLoader)
    except yaml.YAMLError as exc:
        raise DataError(f"{path}: invalid YAML ({str(exc).splitlines()[0]})") from None
    key = "group" if isinstance(config, dict) and "group" in config else "task"
    if not isinstance(config, dict) or not isinstance(config.get(key), str):
        raise DataError(f"{path}: an lm-eval task YAML needs a `task:` (or `group:`) name", "see lm-eval's docs/task_guide.md")
    return write_yaml(out, config[key], {key: config[key], "include": str(path.resolve())}), config


def _source_folder(data_dir: Path, task: str, bench: Benchmark) -> Path:
    """DIR/<folder> when present, else DIR itself when it already holds the layout."""
    for candidate in (data_dir / bench.folder, data_dir):
        if candidate.is_dir() and any(candidate.glob(bench.marker)):
            return candidate
    raise DataError(f"no local data for {task} in {data_dir}", f"expected layout: {bench.layout}")


def _own_file(task: str, bench: Benchmark, data_dir: Path | None, data: Path | None, model_dirs: list[Path]) -> Path:
    """--data, else the task's file in --data-dir, else in the model artifact, its adapters' base or parents."""
    if bench.needs_data and data is None:
        raise SwiftkitError(f"{task} needs --data FILE.jsonl", f"layout: {bench.layout}")
    if data is not None and bench.data_override:
        return data
    roots = [data_dir] if data_dir else model_dirs
    for root in roots:
        for filename in bench.own_files:
            for candidate in (root / filename, root / "task" / filename):
                if candidate.is_file():
                    return candidate
    where = str(data_dir) if data_dir else "the model artifact or its parents"
    raise DataError(
        f"{task}: no {' or '.join(bench.own_files)} in {where}", f"pass --data-dir <toy artifact>/task (layout: {bench.layout})"
    )


def plan_tasks(
    tasks: list[str],
    out: Path,
    data_dir: str | None = None,
    data: str | None = None,
    num_fewshot: int | None = None,
    max_gen_toks: int | None = None,
    model_dirs: list[Path] | None = None,
    end_of_turn: str = "",
    allow_code_execution: bool = False,
) -> TaskPlan:
    """Validate task names and local data, write the task YAMLs; raises before any model loads."""
    if not tasks:
        raise SwiftkitError("no tasks given", f"e.g. --tasks toy_comparison,mmlu; offline tasks: {', '.join(known_offline())}")
    root = Path(data_dir).expanduser() if data_dir else None
    if root is not None and not root.is_dir():
        raise DataError(f"--data-dir is not a folder: {root}")
    data_file = Path(data).expanduser() if data else None
    if data_file is not None and not data_file.is_file():
        raise DataError(f"--data file not found: {data_file}")
    plan = TaskPlan(names=[], include_dir=out, offline=True)
    for raw in tasks:
        if raw.endswith((".yaml", ".yml")):
            _plan_yaml(plan, Path(raw), out)
            continue
        bench = lookup(raw)
        task = bench.name if bench and raw in bench.aliases else raw
        ctx = BuildContext(task, Path(), out, num_fewshot, max_gen_toks, end_of_turn)
        if bench is None or (not bench.own_files and not bench.needs_data and root is None and bench.hub_config is None):
            plan.names.append(task)  # lm-eval's own task, read from the hubs
            plan.offline = False
            plan.sources[task] = "hub"
        else:
            if bench.runs_code and not allow_code_execution:
                raise SwiftkitError(f"{task} runs model-written code", "pass --allow-code-execution to run it in a sandboxed subprocess")
            if bench.own_files or bench.needs_data:
                source = _own_file(task, bench, root, data_file, model_dirs or [])
            elif root is not None:
                source = _source_folder(root, task, bench)
            else:
                source = None
            if source is None:
                plan.names.append(write_yaml(out, task, bench.hub_config()))
                plan.sources[task] = "hub"
            else:
                plan.names += bench.build(BuildContext(task, source, out, ctx.num_fewshot, ctx.max_gen_toks, ctx.end_of_turn))
                plan.sources[task] = str(source.resolve())
        plan.primary[task] = bench.metric if bench else ""
        if bench and bench.loglikelihood:
            plan.loglikelihood.append(task)
    return plan


def _plan_yaml(plan: TaskPlan, path: Path, out: Path) -> None:
    if not path.is_file():
        raise DataError(f"task YAML not found: {path}")
    name, config = _yaml_task(path, out)
    plan.names.append(name)
    plan.sources[name] = str(path.resolve())
    plan.primary[name] = ""
    if config.get("output_type") in ("multiple_choice", "loglikelihood", "loglikelihood_rolling"):
        plan.loglikelihood.append(name)
    # A group may name lm-eval's own tasks, which only its full index knows.
    plan.offline = plan.offline and "group" not in config


def surely_unknown(names: list[str]) -> list[str]:
    """Names that appear in none of lm-eval's task YAMLs.

    lm-eval's own index parses ~15k YAML files (10+ s on a small CPU); a plain word scan of the
    same files takes ~2 s, so a typo fails fast. Names it passes are still checked by the index.
    """
    import re

    root = lm_eval_yaml()
    words: set[str] = set()
    for path in root.rglob("*.yaml"):
        words.update(re.findall(r"[\w.-]+", path.read_text(encoding="utf-8", errors="ignore")))
    return [n for n in names if n not in words]


def known_offline() -> list[str]:
    return list(benchmarks())
