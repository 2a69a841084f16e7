"""Turn any `--model` string into a ModelRef: artifact dir, HF-format dir, `.gguf` file or hub id.

This module sits above swiftkit.artifacts (manifests), swiftkit.hub (downloads) and swiftkit.gguf
(imports), so none of those needs to import another back.
"""

from __future__ import annotations

from pathlib import Path

from swiftkit.artifacts import HUB_ID, ModelRef, read_manifest
from swiftkit.errors import ArtifactError


def resolve_model_ref(ref: str | Path) -> ModelRef:
    """Resolve `ref`; a `.gguf` file is imported once into the local cache and used from there."""
    return _resolve(str(ref), seen=())


def _resolve(text: str, seen: tuple[Path, ...]) -> ModelRef:
    path = Path(text).expanduser()
    if not path.exists():
        if HUB_ID.match(text) and not text.startswith((".", "/", "~")):
            from swiftkit.hub import ensure_local  # lazy: hub clients are slow to import

            path = ensure_local(text)
        else:
            raise ArtifactError(
                f"model not found: {text}", "give an artifact dir, a local HF model dir, a .gguf file, or a hub id like org/name"
            )
    path = path.resolve()
    if path.is_file() and path.suffix.lower() == ".gguf":
        from swiftkit.gguf.importer import imported_artifact  # lazy: imports torch and transformers

        path = imported_artifact(path)
    if not path.is_dir():
        raise ArtifactError(f"model reference is not a directory or a .gguf file: {path}")
    if path in seen:
        raise ArtifactError(f"adapter artifact {seen[0]} has a cycle in its base_model chain at {path}", "fix base_model in swiftkit.json")
    manifest = read_manifest(path)
    if manifest is None:
        if not (path / "config.json").is_file():
            raise ArtifactError(f"{path} is neither a swiftkit artifact nor a Hugging Face model directory (no config.json)")
        return ModelRef(text, path, None, path)
    if manifest.kind == "eval":
        raise ArtifactError(f"{path} is an evaluation artifact, not a model", f"use the model it scored: {manifest.target}")
    if manifest.kind == "export":
        ggufs = sorted(path.glob("*.gguf"))
        raise ArtifactError(
            f"{path} is a GGUF export, not a transformers model",
            f"use the model it was exported from ({manifest.parents[0] if manifest.parents else '?'})"
            + (f" or one of its files, e.g. {ggufs[0]}" if ggufs else ""),
        )
    if manifest.kind == "adapter":
        if not manifest.base_model:
            raise ArtifactError(f"adapter artifact {path} does not record its base_model")
        base = _resolve(manifest.base_model, (*seen, path))
        chain = [Path(p) for p in manifest.adapter_chain]
        for adapter in chain:
            if read_manifest(adapter) is None:
                raise ArtifactError(f"adapter chain of {path} points at a missing artifact: {adapter}")
        return ModelRef(text, path, manifest, base.base_path, [*base.adapters, *chain, path])
    return ModelRef(text, path, manifest, path)
