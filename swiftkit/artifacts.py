"""Artifact directories, their `swiftkit.json` manifest, atomic writes and model references.

Turning a `--model` string into a ModelRef lives in swiftkit.resolve, above both this module and
swiftkit.hub, so imports only flow one way.

Every stage writes one directory; the manifest is written last and the directory is renamed into
place only when complete, so a killed stage never leaves something that looks finished. Model
artifacts are never modified after they are written (eval results are artifacts of their own).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from swiftkit import __version__
from swiftkit.errors import ArtifactError, disk_full_is_one_line
from swiftkit.locks import output_lock

SCHEMA_VERSION = 1
MANIFEST = "swiftkit.json"
TRACKED_LIBRARIES = (
    "torch",
    "transformers",
    "peft",
    "trl",
    "accelerate",
    "datasets",
    "tokenizers",
    "bitsandbytes",
    "gptqmodel",
    "optimum",
    "lm_eval",
    "huggingface_hub",
    "modelscope",
)
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?$")


class ServingInfo(BaseModel):
    """What a server needs to talk to the model exactly as training did."""

    chat_template: str | None = None
    eos_token: str | None = None
    eos_token_ids: list[int] = Field(default_factory=list)
    pad_token: str | None = None
    bos_token: str | None = None
    stop: list[str] = Field(default_factory=list)


class Manifest(BaseModel):
    """`swiftkit.json`, schema version 1 (docs/artifacts.md). Extra keys are kept, not validated."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())

    schema_version: int = SCHEMA_VERSION
    kind: Literal["model", "adapter", "eval", "export"]
    stage: str
    created_at: str = Field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    swiftkit_version: str = __version__
    parents: list[str] = Field(default_factory=list)
    base_model: str | None = None
    adapter_chain: list[str] = Field(default_factory=list)
    target: str | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    data: dict[str, Any] | None = None
    source: dict[str, Any] | None = None
    quantization: dict[str, Any] | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)
    serving: ServingInfo | None = None
    versions: dict[str, str] = Field(default_factory=lambda: library_versions())


def library_versions() -> dict[str, str]:
    found = {}
    for name in TRACKED_LIBRARIES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[name] = metadata.version(name.replace("_", "-"))
    return found


def read_manifest(path: str | Path) -> Manifest | None:
    file = Path(path) / MANIFEST
    if not file.is_file():
        return None
    try:
        raw = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"corrupt manifest {file}: {exc}") from None
    if raw.get("schema_version", 0) > SCHEMA_VERSION:
        raise ArtifactError(
            f"{file} uses manifest schema {raw['schema_version']}, newer than this swiftkit understands",
            "upgrade swiftkit",
        )
    return Manifest.model_validate(raw)


def write_manifest(directory: Path, manifest: Manifest) -> None:
    (directory / MANIFEST).write_text(manifest.model_dump_json(indent=2, exclude_none=True) + "\n", encoding="utf-8")


def swiftkit_home() -> Path:
    """Where swiftkit keeps what it caches: hub downloads, GGUF imports, llama.cpp's converter."""
    return Path(os.environ.get("SWIFTKIT_HOME") or Path.home() / ".cache" / "swiftkit").expanduser()


def default_output(stage: str) -> Path:
    return Path("runs") / f"{stage}-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"


def partial_dir(output: str | Path) -> Path:
    """Where a stage builds its artifact before the rename (also holds resumable checkpoints)."""
    final = Path(output).resolve()
    return final.parent / f".{final.name}.partial"


@contextlib.contextmanager
def artifact_writer(output: str | Path, overwrite: bool = False, keep_partial: bool = False) -> Iterator[Path]:
    """Yield a temp dir to write into; on success it is renamed to `output` (manifest required).

    On failure the temp dir is removed, unless `keep_partial` (training keeps its checkpoints
    there for `--resume`). Either way nothing at `output` looks complete.
    """
    final = Path(output).resolve()
    with output_lock(final):  # one run writes an output at a time (swiftkit/locks.py)
        if final.exists() and (not final.is_dir() or any(final.iterdir())) and not overwrite:
            raise ArtifactError(f"output already exists: {final}", "pass --overwrite or choose another --output")
        tmp = partial_dir(final)
        tmp.mkdir(parents=True, exist_ok=True)
        try:
            # Inside the try: a full disk is reported (with the space left) before the partial dir is removed.
            with disk_full_is_one_line(final):
                yield tmp
            if not (tmp / MANIFEST).is_file():
                raise ArtifactError(f"internal error: stage finished without writing {MANIFEST}")
        except BaseException:
            if not keep_partial:
                shutil.rmtree(tmp, ignore_errors=True)
            raise
        if final.exists():
            trash = final.parent / f".{final.name}.old-{os.getpid()}"
            os.replace(final, trash)
            shutil.rmtree(trash, ignore_errors=True)
        os.replace(tmp, final)


def keep_failed(tmp: Path, output: str | Path, report: dict) -> Path:
    """Move a written-but-failed artifact aside as `<output>.failed/` with its report and no manifest.

    Call inside `artifact_writer` before raising: the user can inspect what was made, and nothing
    at `output` (or carrying a manifest) looks like a finished artifact.
    """
    output = Path(output).resolve()
    failed = output.parent / f"{output.name}.failed"
    (tmp / MANIFEST).unlink(missing_ok=True)
    (tmp / "verification.json").write_text(json.dumps(report, indent=2) + "\n")
    if failed.exists():
        shutil.rmtree(failed)
    os.replace(tmp, failed)
    return failed


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class ModelRef:
    """A resolved `--model`: the local directory, its manifest, and how to build the weights.

    `base_path` is the full-weights directory; `adapters` are adapter directories to apply on
    it in order (empty for a plain or merged model).
    """

    ref: str
    path: Path
    manifest: Manifest | None
    base_path: Path
    adapters: list[Path] = field(default_factory=list)

    @property
    def kind(self) -> str:
        return self.manifest.kind if self.manifest else "model"

    @property
    def is_quantized(self) -> bool:
        return bool(self.manifest and self.manifest.quantization)


def lineage(ref: str | Path) -> list[tuple[Path, Manifest | None]]:
    """The artifact and its first parents back to the root (a base model or hub download)."""
    chain: list[tuple[Path, Manifest | None]] = []
    seen: set[Path] = set()
    current: Path | None = Path(ref).resolve()
    while current is not None and current not in seen:
        seen.add(current)
        manifest = read_manifest(current) if current.is_dir() else None
        chain.append((current, manifest))
        parent = manifest.parents[0] if manifest and manifest.parents else None
        current = Path(parent).resolve() if parent and Path(parent).exists() else None
        if parent and current is None:
            chain.append((Path(parent), None))
    return chain


def find_evals(model_dir: str | Path, search: list[Path] | None = None) -> list[tuple[Path, Manifest]]:
    """Eval artifacts that point at `model_dir` (searched beside it and in extra folders, one level deep)."""
    model_dir = Path(model_dir).resolve()
    roots = {model_dir.parent, *(Path(s).resolve() for s in search or [])}
    found = []
    for root in roots:
        # One level of nesting too: an eval of several models writes one artifact per model under its --output.
        for candidate in sorted({*_visible_dirs(root), *(d for sub in _visible_dirs(root) for d in _visible_dirs(sub))}):
            with contextlib.suppress(ArtifactError):
                manifest = read_manifest(candidate)
                if manifest and manifest.kind == "eval" and manifest.target and Path(manifest.target).resolve() == model_dir:
                    found.append((candidate, manifest))
    return found


def _visible_dirs(root: Path) -> list[Path]:
    return [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")] if root.is_dir() else []


def is_complete(output: str | Path) -> bool:
    """An artifact dir, or a dir holding one artifact per input (eval of several models)."""
    output = Path(output)
    if (output / MANIFEST).is_file():
        return True
    subdirs = _visible_dirs(output)
    return bool(subdirs) and all((d / MANIFEST).is_file() for d in subdirs)
