"""Calibration and held-out text: read `--data` sources, render chat rows, cut token windows.

Rows are split once: calibration never sees the rows the perplexity check scores (unless
`--eval-data` names separate held-out text). Without `--data`, a bundled public-domain text is
used (the first ~40 KB of Shakespeare from karpathy/char-rnn's tinyshakespeare) so quantization
works offline; real models deserve calibration text like their own training data.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

from swiftkit.errors import DataError

DEFAULT_TEXT = Path(__file__).with_name("default_calibration.txt")
MIN_SAMPLE_TOKENS = 32  # shorter windows give GPTQ/AWQ too little context per sample to be worth it
MIN_EVAL_TOKENS = 16
HELDOUT_FRACTION = 0.1


@dataclass
class TextSet:
    """Calibration token windows and held-out perplexity windows, with their provenance."""

    samples: list[list[int]]
    eval_windows: list[list[int]]
    sources: list[str]
    rows: int
    fingerprint: str
    eval_sources: list[str] = field(default_factory=list)

    def manifest_entry(self, used: bool) -> dict:
        entry = {"sources": self.sources, "rows": self.rows, "fingerprint": self.fingerprint}
        if used:
            entry |= {
                "n_samples": len(self.samples),
                "sample_tokens": len(self.samples[0]) if self.samples else 0,
            }
        return entry


def read_texts(specs: list[str], tokenizer, seed: int) -> list[str]:
    """One string per row: plain text as is, chat rows rendered with the model's chat template."""
    texts: list[str] = []
    for spec in specs:
        texts += _read_source(spec, tokenizer, seed)
    return texts


def _read_source(spec: str, tokenizer, seed: int) -> list[str]:
    from swiftkit.data.sources import parse_source

    location, _, count = spec.rpartition("#") if re.search(r"#\d+$", spec) else (spec, "", "")
    if location.lower().endswith(".txt"):
        texts = _read_txt(Path(location).expanduser())
        return _take(texts, int(count), seed) if count else texts
    from swiftkit.data.formats import to_conversation
    from swiftkit.data.sources import load_rows

    texts = []
    for row in load_rows(parse_source(spec), seed):
        text = row.values.get("text")
        if isinstance(text, str):
            texts.append(f"{text}\n\n")
            continue
        messages = to_conversation(row)["messages"]
        if tokenizer.chat_template is None:
            raise DataError(
                f"{row.where}: chat rows need a chat template, and the model has none",
                "give plain text (.txt or a text column)",
            )
        texts.append(tokenizer.apply_chat_template(messages, tokenize=False))  # the template ends its turns
    return texts


def _read_txt(path: Path) -> list[str]:
    if not path.is_file():
        raise DataError(f"calibration file not found: {path}")
    text = path.read_text(encoding="utf-8")
    # Paragraphs are the natural rows of prose; a file without blank lines is one row per line.
    # Each row keeps the separator it had in the file, so the token stream reads like the file.
    rows = [p.strip("\n") + "\n\n" for p in re.split(r"\n\s*\n", text) if p.strip()]
    if len(rows) < 2:
        rows = [f"{line}\n" for line in text.splitlines() if line.strip()]
    return rows


def _take(rows: list[str], n: int, seed: int) -> list[str]:
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    return [rows[order[i % len(order)]] for i in range(n)]


def build_text_set(
    data: list[str],
    eval_data: list[str],
    tokenizer,
    n_samples: int,
    max_length: int,
    eval_tokens: int,
    seed: int,
    need_samples: bool = True,
) -> TextSet:
    """Read, split (calibration vs held-out), tokenize and window the text; fail early when too small."""
    sources = data or [str(DEFAULT_TEXT)]
    rows = read_texts(sources, tokenizer, seed)
    random.Random(seed).shuffle(rows)
    if eval_data:
        heldout = read_texts(eval_data, tokenizer, seed)
    else:
        if len(rows) < 2:
            raise DataError(
                f"calibration data has {len(rows)} row(s); at least 2 are needed to hold one out",
                "add rows or pass --eval-data",
            )
        cut = max(1, int(len(rows) * HELDOUT_FRACTION))
        heldout, rows = rows[:cut], rows[cut:]
    calib_ids = _token_stream(rows, tokenizer)
    samples: list[list[int]] = []
    if need_samples:
        length = min(max_length, len(calib_ids) // n_samples)
        if length < MIN_SAMPLE_TOKENS:
            raise DataError(
                f"not enough calibration text: {len(calib_ids)} tokens cannot make {n_samples} samples of {MIN_SAMPLE_TOKENS}+ tokens",
                f"pass more --data, or --n-samples {max(1, len(calib_ids) // MIN_SAMPLE_TOKENS)} or less",
            )
        samples = [calib_ids[i * length : (i + 1) * length] for i in range(n_samples)]
    eval_ids = _token_stream(heldout, tokenizer)[:eval_tokens]
    if len(eval_ids) < MIN_EVAL_TOKENS:
        raise DataError(
            f"held-out text has only {len(eval_ids)} tokens; the perplexity check needs {MIN_EVAL_TOKENS}+",
            "pass more --data or --eval-data",
        )
    windows = [eval_ids[i : i + max_length] for i in range(0, len(eval_ids), max_length)]
    windows = [w for w in windows if len(w) >= 2]
    digest = hashlib.sha256(json.dumps(rows, ensure_ascii=False).encode()).hexdigest()
    return TextSet(
        samples,
        windows,
        sources,
        len(rows),
        digest,
        eval_data or [f"{len(heldout)} held-out rows of the calibration sources"],
    )


def _token_stream(rows: list[str], tokenizer) -> list[int]:
    """Rows (each ending in its separator) tokenized one by one and concatenated into one stream."""
    ids: list[int] = []
    for batch in tokenizer(rows, add_special_tokens=False)["input_ids"]:
        ids += batch
    return ids
