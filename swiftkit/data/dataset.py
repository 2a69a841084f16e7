"""Turn `--data` sources into normalised training rows, checked against the tokenizer and max length."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from swiftkit.console import console
from swiftkit.data.formats import apply_column_map, parse_column_map, to_conversation, to_feedback, to_preference, to_prompt
from swiftkit.data.sources import load_rows, parse_source
from swiftkit.errors import DataError

# feedback: KTO rows, labelled prompt/completion or prompt/chosen/rejected pairs; prompt: GRPO prompts
# with the columns their rewards read.
Kind = Literal["sft", "preference", "feedback", "prompt"]


@dataclass
class TrainingData:
    rows: list[dict[str, Any]]
    sources: list[str]
    skipped: dict[str, int] = field(default_factory=dict)

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.rows)

    def manifest_entry(self) -> dict[str, Any]:
        """The manifest's `data` block (docs/contract.md)."""
        entry: dict[str, Any] = {
            "sources": self.sources,
            "rows": len(self.rows),
            "fingerprint": self.fingerprint,
        }
        if self.skipped:
            entry["skipped"] = self.skipped
        return entry


def fingerprint(rows: list[dict[str, Any]]) -> str:
    """sha256 over the normalised rows in order: equal data trains equally, whatever format it came in."""
    digest = hashlib.sha256()
    for row in rows:
        digest.update(json.dumps(row, sort_keys=True, ensure_ascii=False).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def load_training_data(
    specs: list[str], kind: Kind, columns: list[str] | None = None, seed: int = 42
) -> TrainingData:
    """Read every source (with its #N sampling), rename columns, normalise; errors name file and row."""
    if not specs:
        raise DataError("no --data given", "pass --data FILE.jsonl (repeat for several sources)")
    mapping = parse_column_map(columns or [])
    convert = {"sft": to_conversation, "preference": to_preference, "feedback": to_feedback, "prompt": to_prompt}[kind]
    rows = []
    for spec in specs:
        source = parse_source(spec)
        for row in load_rows(source, seed):
            rows.append(convert(apply_column_map(row, mapping)))
    return TrainingData(rows, list(specs))


def resolve_template(template: str | None) -> str | None:
    """`--template` is a file path or the Jinja text itself."""
    if template is None:
        return None
    path = Path(template).expanduser()
    if len(template) < 4096 and "{" not in template:
        if not path.is_file():
            raise DataError(
                f"--template {template}: file not found",
                "give a Jinja chat template file or the template text",
            )
        try:
            return path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(f"--template {template}: not a UTF-8 text file ({exc.reason})", "give a Jinja chat template file") from None
    return template


def has_generation_markers(template: str | None) -> bool:
    """TRL's assistant-only loss needs `{% generation %}` blocks in the chat template."""
    return bool(template) and "generation" in template and "endgeneration" in template


def drop_overlength(data: TrainingData, tokenizer, max_length: int, kind: Kind) -> TrainingData:
    """Skip (and count, with one warning) rows whose rendered conversation exceeds `max_length` tokens."""
    kept = []
    for row in data.rows:
        if kind == "sft":
            conversations = [row["messages"]]
        elif kind == "prompt":  # the prompt alone: --max-completion-length bounds the rest
            conversations = [row["prompt"]]
        elif "completion" in row:
            conversations = [row["prompt"] + row["completion"]]
        else:
            conversations = [row["prompt"] + row["chosen"], row["prompt"] + row["rejected"]]
        if max(_rendered_length(tokenizer, c) for c in conversations) <= max_length:
            kept.append(row)
    dropped = len(data.rows) - len(kept)
    skipped = dict(data.skipped)
    if dropped:
        skipped["over_max_length"] = dropped
        console.print(
            f"[yellow]warning:[/] skipped {dropped} of {len(data.rows)} rows longer than "
            f"--max-length {max_length} tokens"
        )
    if not kept:
        raise DataError(
            f"every row is longer than --max-length {max_length} tokens",
            "raise --max-length or shorten the data",
        )
    return TrainingData(kept, data.sources, skipped)


def _rendered_length(tokenizer, messages: list[dict[str, Any]]) -> int:
    try:
        ids = tokenizer.apply_chat_template(messages, tokenize=True)
    except Exception as exc:  # a template that rejects the conversation (e.g. role order) is a data problem
        raise DataError(
            f"the chat template cannot render a conversation: {exc}", "check the roles, or pass --template"
        ) from None
    if hasattr(ids, "keys"):
        ids = ids["input_ids"]
    return len(ids)


def split_eval(
    rows: list[dict[str, Any]], fraction: float, seed: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A seeded held-out split (at least one row when fraction > 0 and there are 2+ rows)."""
    if fraction <= 0 or len(rows) < 2:
        return rows, []
    import random

    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    n_eval = min(len(rows) - 1, max(1, round(len(rows) * fraction)))
    held = set(order[:n_eval])
    return [r for i, r in enumerate(rows) if i not in held], [r for i, r in enumerate(rows) if i in held]
