"""The benchmark registry: every module of this package that defines `BENCHMARKS` is one family.

Adding a benchmark means adding one module here with a `BENCHMARKS = [Benchmark(...)]` list: it is
found by name (and alias) by `swiftkit eval --tasks`, listed among the offline tasks, and its
`--data-dir` layout is read by its own `build`.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from swiftkit.errors import SwiftkitError


@dataclass(frozen=True)
class BuildContext:
    """What a benchmark's `build` gets: the task asked for, where its data is, where to write."""

    task: str  # the name asked for (an alias stays the task's name, e.g. toy_arithmetic)
    source: Path  # the data folder (--data-dir layouts) or file (swiftkit's own tasks)
    out: Path  # where the task YAMLs (and data/) are written
    num_fewshot: int | None = None
    max_gen_toks: int | None = None
    end_of_turn: str = ""


@dataclass(frozen=True)
class Benchmark:
    """One task family: its names, its data layout, how it becomes lm-eval task YAMLs, how it is scored."""

    name: str
    layout: str  # the expected data layout, shown in errors and docs/eval.md
    build: Callable[[BuildContext], list[str]]  # -> names of the written task YAMLs (a group first when one)
    metric: str  # "metric,filter" shown as the task's score (results.json keeps every metric)
    loglikelihood: bool = False  # needs prompt log-probabilities (an endpoint needs the tokenizer)
    subtasks: str | None = None  # prefix of per-subject tasks also answered ("mmlu_" -> mmlu_anatomy)
    aliases: tuple[str, ...] = ()
    # --data-dir benchmarks: DIR/<folder> (or DIR itself) holds files matching `marker`
    folder: str = ""
    marker: str = ""
    # swiftkit's own tasks: a file given with --data, else found in --data-dir or the model artifact
    own_files: tuple[str, ...] = field(default_factory=tuple)
    needs_data: bool = False  # own task that only reads --data FILE
    data_override: bool = True  # --data FILE replaces the own file
    runs_code: bool = False  # scoring runs model-written code: needs --allow-code-execution
    hub_config: Callable[[], dict] | None = None  # task YAML without --data-dir (else lm-eval's own task, from the hubs)


_registry: dict[str, Benchmark] | None = None


def benchmarks() -> dict[str, Benchmark]:
    """Every registered family by name, discovered once from this package's modules."""
    global _registry
    if _registry is None:
        import swiftkit.eval.tasks as package

        found: dict[str, Benchmark] = {}
        for module in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
            for bench in getattr(importlib.import_module(f"{package.__name__}.{module.name}"), "BENCHMARKS", []):
                for name in (bench.name, *bench.aliases):
                    if name in found:
                        raise SwiftkitError(f"two benchmarks are named {name!r} ({module.name}.py and {found[name].name})")
                    found[name] = bench
        _registry = found
    return _registry


def refresh() -> None:
    """Forget the discovered families (a module was added to the package path)."""
    global _registry
    _registry = None


def lookup(task: str) -> Benchmark | None:
    """The family of a task name: itself, an alias, or one of its per-subject tasks."""
    registry = benchmarks()
    if task in registry:
        return registry[task]
    return next((b for b in registry.values() if b.subtasks and task.startswith(b.subtasks)), None)
