"""Where `--data` rows come from: local files or hub dataset ids, with `SRC#N` sampling for mixing.

Every row keeps a `where` label ("sft.jsonl row 17") so that format problems found later can name
the file and row. Nothing here knows about chat formats (see `swiftkit.data.formats`).
"""

from __future__ import annotations

import contextlib
import gzip
import json
import random
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from swiftkit.errors import DataError

FILE_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".csv", ".parquet")
# `hf:` / `ms:` pick the hub explicitly; a bare `org/name` is a Hugging Face dataset id.
HUB_PREFIXES = {"hf": "huggingface", "ms": "modelscope"}
SAMPLE_SUFFIX = re.compile(r"^(?P<src>.+)#(?P<n>\d+)$")


@dataclass
class Source:
    spec: str  # exactly as given on the command line
    location: str  # file path or dataset id (without the #N)
    limit: int | None  # rows to take (None: all)
    hub: str | None = None  # None for local files
    split: str = "train"


@dataclass
class Row:
    values: dict[str, Any]
    where: str  # "FILE row N": used in every data error message


def parse_source(spec: str) -> Source:
    """`data.jsonl`, `data.jsonl#500`, `org/name`, `hf:org/name:test#100`, `ms:org/name`."""
    text, limit = spec, None
    match = SAMPLE_SUFFIX.match(spec)
    if match:
        text, limit = match["src"], int(match["n"])
        if limit == 0:
            raise DataError(f"--data {spec}: #0 takes no rows", "drop the source or give a positive count")
    if Path(text).expanduser().exists() or text.lower().endswith(FILE_SUFFIXES):
        return Source(spec, text, limit)
    hub = "huggingface"
    prefix, _, rest = text.partition(":")
    if prefix in HUB_PREFIXES and rest:
        hub, text = HUB_PREFIXES[prefix], rest
    name, _, split = text.partition(":")
    return Source(spec, name, limit, hub=hub, split=split or "train")


def load_rows(source: Source, seed: int) -> list[Row]:
    """All rows of one source, then (with #N) N of them, sampled with `seed` (cycled when N > rows)."""
    rows = _read_local(source) if source.hub is None else _read_hub(source)
    if not rows:
        raise DataError(f"{source.location}: no rows", "check the file or dataset split")
    if source.limit is None:
        return rows
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    # Oversampling (N larger than the source) repeats the shuffled order: how mixing ratios are met.
    return [rows[order[i % len(order)]] for i in range(source.limit)]


def _read_local(source: Source) -> list[Row]:
    path = Path(source.location).expanduser()
    name = path.name
    if not path.is_file():
        raise DataError(
            f"data file not found: {path}", "give a .jsonl/.jsonl.gz/.json/.csv/.parquet file or a dataset id"
        )
    suffix = "".join(path.suffixes[-2:]).lower() if path.suffix.lower() == ".gz" else path.suffix.lower()
    if suffix in (".jsonl", ".jsonl.gz"):
        return _read_jsonl(path)
    if suffix == ".json":
        return _read_json(path)
    if suffix in (".csv", ".parquet"):
        return _read_tabular(path, suffix[1:])
    raise DataError(f"{name}: unsupported data file type {suffix!r}", "use .jsonl, .jsonl.gz, .json, .csv or .parquet")


def open_text(path: Path) -> IO[str]:
    """A UTF-8 text file, read through gzip when it ends in `.gz`."""
    if path.suffix.lower() == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


@contextlib.contextmanager
def _readable(path: Path) -> Iterator[None]:
    """Binary or damaged files become one line naming the file (not a UnicodeDecodeError traceback)."""
    try:
        yield
    except UnicodeDecodeError as exc:
        raise DataError(f"{path.name}: not UTF-8 text ({exc.reason})", "is this the data file you meant?") from None
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise DataError(f"{path.name}: not a complete gzip file ({exc})", "is the download or copy complete?") from None


def _read_jsonl(path: Path) -> list[Row]:
    return [Row(value, f"{path.name} row {number}") for number, value in read_jsonl_numbered(path)]


def read_jsonl_numbered(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) per non-blank line of a .jsonl / .jsonl.gz file: the project's one JSONL
    reader (training data here, benchmark files in swiftkit.eval.tasks). Parsed by hand, not with
    `datasets`' json builder, so a broken line is reported by its number."""
    with _readable(path), open_text(path) as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path.name} row {number}: invalid JSON ({exc.msg})") from None
            if not isinstance(value, dict):
                raise DataError(f"{path.name} row {number}: expected a JSON object, got {type(value).__name__}")
            yield number, value


def _read_json(path: Path) -> list[Row]:
    try:
        with _readable(path):
            value = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path.name}: invalid JSON at line {exc.lineno} ({exc.msg})") from None
    if isinstance(value, dict) and len(value) == 1 and isinstance(next(iter(value.values())), list):
        value = next(iter(value.values()))  # {"data": [...]} style wrappers
    if not isinstance(value, list):
        raise DataError(
            f"{path.name}: expected a JSON list of objects", "or use one object per line (.jsonl)"
        )
    rows = []
    for number, item in enumerate(value, start=1):
        if not isinstance(item, dict):
            raise DataError(f"{path.name} row {number}: expected a JSON object, got {type(item).__name__}")
        rows.append(Row(item, f"{path.name} row {number}"))
    return rows


def _read_tabular(path: Path, kind: str) -> list[Row]:
    from datasets import load_dataset

    try:
        table = load_dataset(kind, data_files=str(path), split="train")
    except Exception as exc:  # the builders raise many types; the user needs the file and the reason
        raise DataError(f"{path.name}: cannot read as {kind}: {exc}") from None
    return [
        Row(_decode_json_cells(values), f"{path.name} row {i}") for i, values in enumerate(table, start=1)
    ]


def _decode_json_cells(values: dict[str, Any]) -> dict[str, Any]:
    """CSV cells holding message lists arrive as JSON text; decode those (other strings stay)."""
    decoded = {}
    for key, value in values.items():
        if isinstance(value, str) and value.lstrip().startswith(("[", "{")):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                pass
        decoded[key] = value
    return decoded


def _read_hub(source: Source) -> list[Row]:
    label = f"{source.location}:{source.split}"
    try:
        if source.hub == "modelscope":
            from modelscope.msdatasets import MsDataset

            dataset = MsDataset.load(source.location, split=source.split)
            dataset = dataset.to_hf_dataset() if hasattr(dataset, "to_hf_dataset") else dataset
        else:
            from datasets import load_dataset

            dataset = load_dataset(source.location, split=source.split)
    except Exception as exc:  # offline, unknown id, missing split: all surface as one line
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(
            f"cannot load dataset {source.location!r} (split {source.split}) from {source.hub}: {reason}",
            "check the id and network, or download it and pass a local file",
        ) from None
    return [Row(dict(values), f"{label} row {i}") for i, values in enumerate(dataset, start=1)]
