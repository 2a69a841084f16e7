"""The local model cache: `$SWIFTKIT_HOME/models/<hub>/<org>/<name>/<revision>/`, one download artifact each.

Hub ids given as `--model` are downloaded here once; later uses read the artifact without any
network call (a branch like `main` is not re-checked: delete the folder or `swiftkit download`
to refresh it).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from rich.table import Table

from swiftkit.artifacts import read_manifest, swiftkit_home
from swiftkit.console import console, out
from swiftkit.errors import ArtifactError
from swiftkit.hub.config import DownloadConfig, ModelsConfig
from swiftkit.hub.download import default_revision, fetch, split_ref

HUBS = ("hf", "modelscope")


def cache_path(hub: str, repo_id: str, revision: str | None) -> Path:
    rev = (revision or default_revision(hub)).replace("/", "--")
    return swiftkit_home() / "models" / hub / repo_id / rev


def ensure_local(ref: str) -> Path:
    repo_id, revision = split_ref(ref)
    hub = os.environ.get("SWIFTKIT_HUB", "auto")
    if hub not in ("auto", *HUBS):
        raise ArtifactError(f"SWIFTKIT_HUB={hub} is not one of auto, hf, modelscope")
    for candidate in HUBS if hub == "auto" else (hub,):
        path = cache_path(candidate, repo_id, revision)
        if read_manifest(path) is not None:
            return path
    console.print(
        f"{ref} is not in the local cache ({swiftkit_home() / 'models'}): downloading it", highlight=False
    )
    cfg = DownloadConfig(model_id=ref, hub=hub, endpoint=None)
    return fetch(cfg, lambda chosen: cache_path(chosen, repo_id, revision))


def cached_models() -> list[dict]:
    """Every complete download artifact in the cache, with its size on disk."""
    root = swiftkit_home() / "models"
    found = []
    for manifest_file in sorted(root.glob("*/*/*/*/swiftkit.json")) if root.is_dir() else []:
        path = manifest_file.parent
        try:
            manifest = read_manifest(path)
        except ArtifactError:
            continue
        source = manifest.source or {}
        size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        found.append(
            {
                "ref": f"{source.get('id', '/'.join(path.parts[-3:-1]))}@{source.get('revision', path.name)}",
                "hub": source.get("hub", path.parts[-4]),
                "commit": source.get("commit"),
                "bytes": size,
                "files": len(source.get("files", {})),
                "created_at": manifest.created_at,
                "path": str(path),
            }
        )
    return found


def run(cfg: ModelsConfig) -> list[dict]:
    """`swiftkit models`: what is cached locally, with sizes."""
    models = cached_models()
    if cfg.json_output:
        out.print_json(json.dumps(models))
        return models
    if not models:
        console.print(f"no models cached in {swiftkit_home() / 'models'}", highlight=False)
        return models
    table = Table(title=f"cached models ({swiftkit_home() / 'models'})", title_justify="left")
    for col in ("model", "hub", "commit", "files", "size", "path"):
        table.add_column(col)
    for m in models:
        table.add_row(
            m["ref"],
            m["hub"],
            (m["commit"] or "")[:12],
            str(m["files"]),
            f"{m['bytes'] / 1e6:.1f} MB",
            m["path"],
        )
    out.print(table)
    console.print(f"{len(models)} models, {sum(m['bytes'] for m in models) / 1e6:.1f} MB", highlight=False)
    return models
