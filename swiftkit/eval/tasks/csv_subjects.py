"""Per-subject multiple-choice CSVs with a lettered header (CMMLU, C-Eval): shared by their modules."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path
from typing import Any

from swiftkit.errors import DataError
from swiftkit.eval.tasks.common import LETTERS, local_task, write_jsonl, write_yaml


def lettered_rows(path: Path, question: str, answer: str, layout: str) -> list[dict[str, Any]]:
    """CSV with a header naming question/A/B/C/D/answer columns, kept as the hub schema."""
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        missing = [c for c in (question, *LETTERS, answer) if c not in header]
        if missing:
            raise DataError(f"{path}: header lacks column(s) {', '.join(missing)} (has {', '.join(header)})", f"expected layout: {layout}")
        docs = []
        for number, row in enumerate(reader, 2):
            if row[answer].strip() not in LETTERS:
                raise DataError(f"{path}:{number}: answer {row[answer]!r} is not A-D", f"expected layout: {layout}")
            # Only the columns lm-eval's prompt reads: dev files carry an extra `explanation`, and
            # one schema across splits is what the json loader needs.
            docs.append({c: row[c] or "" for c in (question, *LETTERS, answer)})
    return docs


def subject_tasks(
    out: Path,
    prefix: str,
    label: str,
    layout: str,
    wanted: str | None,
    version: int,
    subjects: list[tuple[str, Path, Path, tuple[str, str]]],
    split: str,
    own_yaml: Callable[[str], Path],
    fewshot: int | None,
) -> list[str]:
    """One lm-eval task per subject CSV: local data swapped into lm-eval's own YAML, dev CSVs as the
    few-shot split, and a group over all subjects unless one subject was asked for."""
    names = []
    for subject, path, dev, (question, answer) in subjects:
        files = {split: write_jsonl(out / "data" / f"{prefix}_{subject}_{split}.jsonl", lettered_rows(path, question, answer, layout))}
        if dev.is_file():
            files["dev"] = write_jsonl(out / "data" / f"{prefix}_{subject}_dev.jsonl", lettered_rows(dev, question, answer, layout))
        elif fewshot:  # lm-eval scores these 0-shot unless --num-fewshot says otherwise
            raise DataError(f"missing {dev} ({label} takes its few-shot examples from dev)", "add the dev CSVs or pass --num-fewshot 0")
        own = own_yaml(subject)
        if not own.is_file():
            raise DataError(f"{path}: lm-eval has no {label} subject {subject!r}", f"expected layout: {layout}")
        names.append(local_task(out, f"{prefix}_{subject}", own, files, {"fewshot_split": "dev"}))
    if wanted:
        return names
    metrics = [{"metric": "acc", "weight_by_size": True}, {"metric": "acc_norm", "weight_by_size": True}]
    return [write_yaml(out, prefix, {"group": prefix, "task": names, "aggregate_metric_list": metrics, "metadata": {"version": version}})]
