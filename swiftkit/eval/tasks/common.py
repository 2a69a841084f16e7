"""What every benchmark module uses: reading release files (errors name file and row), writing the
converted jsonl and the task YAMLs that point lm-eval's own task definitions at them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from swiftkit.data.sources import read_jsonl_numbered
from swiftkit.errors import DataError, SwiftkitError

LETTERS = ("A", "B", "C", "D")


def read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, row) of a .jsonl / .jsonl.gz file: the project's one numbered JSONL reader."""
    return read_jsonl_numbered(path)


def require(path: Path, number: int, row: dict, keys: tuple[str, ...], layout: str) -> None:
    missing = [k for k in keys if k not in row]
    if missing:
        raise DataError(f"{path}:{number}: missing field(s) {', '.join(missing)}", f"expected layout: {layout}")


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return str(path.resolve())


class FunctionRef(str):
    """A `!function module.name` reference in a task YAML (lm-eval imports it)."""


class _TaskDumper(yaml.SafeDumper):
    pass


_TaskDumper.add_representer(FunctionRef, lambda dumper, ref: dumper.represent_scalar("!function", str(ref)))


def write_yaml(out: Path, name: str, config: dict[str, Any]) -> str:
    out.mkdir(parents=True, exist_ok=True)
    text = yaml.dump(config, Dumper=_TaskDumper, sort_keys=False, allow_unicode=True)
    (out / f"{name}.yaml").write_text(text, encoding="utf-8")
    return name


def lm_eval_yaml(*parts: str) -> Path:
    import importlib.util

    spec = importlib.util.find_spec("lm_eval")
    if spec is None or not spec.submodule_search_locations:
        raise SwiftkitError("lm-eval is not installed", "pip install 'lm-eval[hf,api]==0.4.13'")
    return Path(next(iter(spec.submodule_search_locations)), "tasks", *parts)


def local_task(out: Path, task: str, own_yaml: Path, files: dict[str, str], optional: dict[str, str]) -> str:
    """lm-eval's own task YAML (prompts, metrics, filters) with only its dataset swapped for local files."""
    return write_yaml(out, task, {"task": task, "include": str(own_yaml), "tag": [], **local_dataset(files, optional)})


def local_dataset(files: dict[str, str], optional: dict[str, str] | None = None) -> dict[str, Any]:
    """Point an lm-eval task at local jsonl files; `optional` split keys absent locally are unset
    (lm-eval would otherwise index e.g. dataset["train"] for its few-shot sampler and fail)."""
    unset = {key: None for key, split in (optional or {}).items() if split not in files}
    return {"dataset_path": "json", "dataset_name": None, "dataset_kwargs": {"data_files": files}, **unset}


def one_file(folder: Path, pattern: str, layout: str, required: bool = True) -> Path | None:
    """The file of a release layout matching `pattern` (the exact name preferred over other matches)."""
    matches = sorted(folder.glob(pattern))
    exact = [m for m in matches if m.name == pattern.replace("*", "")]
    if exact:
        return exact[0]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise DataError(
            f"several files match {folder}/{pattern}: {', '.join(m.name for m in matches)}",
            f"expected layout: {layout}",
        )
    if required:
        raise DataError(f"missing {folder}/{pattern.replace('*', '')}", f"expected layout: {layout}")
    return None
