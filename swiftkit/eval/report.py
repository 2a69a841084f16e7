"""What an eval leaves behind: the eval artifact (results.json, samples/*.jsonl, swiftkit.json) and tables."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from rich.table import Table

from swiftkit.artifacts import Manifest, write_manifest
from swiftkit.console import out


def _json_default(value: Any) -> Any:
    """numpy scalars, sets and callables lm-eval leaves in its results."""
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, set):
        return sorted(value)
    return str(value)


def primary_score(task_results: dict[str, Any], metric: str) -> tuple[str, float] | None:
    """The task's headline metric (e.g. 'acc,none'), else its first numeric non-stderr metric."""
    if metric and isinstance(task_results.get(metric), (int, float)):
        return metric, float(task_results[metric])
    for key, value in task_results.items():
        if "," in key and "_stderr" not in key and isinstance(value, (int, float)):
            return key, float(value)
    return None


def scores_of(results: dict[str, Any], primary: dict[str, str]) -> tuple[dict[str, float], dict[str, str]]:
    """{task: score} and {task: metric used} for the tasks the user asked for."""
    scores, metrics = {}, {}
    table = results.get("results", {})
    for task, metric in primary.items():
        found = primary_score(table.get(task, {}), metric)
        if found:
            metrics[task], scores[task] = found
    return scores, metrics


def write_eval_artifact(
    directory: Path,
    results: dict[str, Any],
    scores: dict[str, float],
    metrics_used: dict[str, str],
    target: str,
    config: dict[str, Any],
    extra: dict[str, Any],
    sources: dict[str, str],
) -> Manifest:
    """results.json + samples/<task>.jsonl, then swiftkit.json last."""
    samples_dir = directory / "samples"
    samples_dir.mkdir(exist_ok=True)
    rows = {}
    digest = hashlib.sha256()
    for task, records in (results.get("samples") or {}).items():
        with open(samples_dir / f"{task}.jsonl", "w", encoding="utf-8") as fh:
            for record in records:
                line = json.dumps(record, default=_json_default, ensure_ascii=False)
                fh.write(line + "\n")
                digest.update(str(record.get("doc_hash", "")).encode())
        rows[task] = len(records)
    body = {k: v for k, v in results.items() if k != "samples"}
    summary = {"target": target, "scores": scores, "metrics": metrics_used, **extra}
    (directory / "results.json").write_text(
        json.dumps({**summary, "lm_eval": body}, indent=2, default=_json_default) + "\n", encoding="utf-8"
    )
    manifest = Manifest(
        kind="eval",
        stage="eval",
        parents=[target],
        target=target,
        config=config,
        data={
            "sources": sorted(set(sources.values())),
            "tasks": sources,
            "rows": sum(rows.values()),
            "fingerprint": digest.hexdigest(),
        },
        metrics={"scores": scores, "metric": metrics_used, "samples": rows, **extra},
    )
    write_manifest(directory, manifest)
    return manifest


def side_by_side(title: str, columns: list[str], scores: list[dict[str, float]], metrics: dict[str, str] | None = None) -> Table:
    """Tasks as rows, one column per model/eval; later columns show their delta to the first."""
    table = Table(title=title, title_justify="left")
    table.add_column("task", style="bold cyan")
    if metrics is not None:
        table.add_column("metric")
    for column in columns:
        table.add_column(column, justify="right")
    tasks = list(dict.fromkeys(t for s in scores for t in s))
    for task in tasks:
        base = scores[0].get(task)
        cells = []
        for i, column_scores in enumerate(scores):
            value = column_scores.get(task)
            if value is None:
                cells.append("-")
            elif i == 0 or base is None:
                cells.append(f"{value:.4f}")
            else:
                delta = value - base
                colour = "green" if delta > 0 else "red" if delta < 0 else "dim"
                cells.append(f"{value:.4f} [{colour}]({delta:+.4f})[/]")
        row = [task, *([metrics.get(task, "")] if metrics is not None else []), *cells]
        table.add_row(*row)
    return table


def print_table(table: Table) -> None:
    out.print(table)


def check_thresholds(columns: list[str], scores: list[dict[str, float]], thresholds: dict[str, float]) -> list[str]:
    """Failures as 'column: task score < threshold' lines (a missing task fails too)."""
    failures = []
    for column, column_scores in zip(columns, scores, strict=False):
        for task, minimum in thresholds.items():
            value = column_scores.get(task)
            if value is None:
                failures.append(f"{column}: {task} has no score")
            elif value < minimum:
                failures.append(f"{column}: {task} {value:.4f} < {minimum}")
    return failures
