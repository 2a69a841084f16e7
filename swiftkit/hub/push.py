"""`swiftkit push`: publish a finished artifact, with a model card generated from its manifest.

Uploads go through the hubs' own clients (huggingface_hub's create_repo + create_commit,
modelscope_hub's create_repo + upload_folder). An artifact whose verification failed is refused.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import yaml

from swiftkit import __version__
from swiftkit.artifacts import MANIFEST, Manifest, find_evals, lineage, read_manifest
from swiftkit.console import console, out, summary
from swiftkit.errors import ArtifactError, SwiftkitError
from swiftkit.hub.config import PushConfig
from swiftkit.hub.errors import translate

CARD = "README.md"
# Local bookkeeping that never belongs in a published repo.
PRIVATE_CONFIG_KEYS = {"output", "overwrite", "token", "endpoint", "config"}


def run(cfg: PushConfig) -> list[str]:
    artifact = Path(cfg.artifact).resolve()
    manifest = _publishable(artifact)
    files = upload_list(artifact)
    card = model_card(artifact, manifest, cfg.repo_id)
    if cfg.dry_run:
        _show_plan(cfg, artifact, files, card)
        return [*files, CARD]
    if cfg.hub == "hf":
        url = _push_hf(cfg, artifact, files, card)
    else:
        url = _push_modelscope(cfg, artifact, files, card)
    total = sum((artifact / f).stat().st_size for f in files)
    summary(
        f"pushed {artifact.name}",
        [
            ("hub", cfg.hub),
            ("repo", cfg.repo_id),
            ("files", len(files) + 1),
            ("size", f"{total / 1e6:.1f} MB"),
            ("private", cfg.private),
            ("commit", url),
        ],
    )
    return [*files, CARD]


def _publishable(artifact: Path) -> Manifest:
    manifest = read_manifest(artifact) if artifact.is_dir() else None
    if manifest is None:
        raise ArtifactError(
            f"not a swiftkit artifact: {artifact}", "push publishes artifact directories (with swiftkit.json)"
        )
    if manifest.kind == "eval":
        raise ArtifactError(
            f"{artifact} is an evaluation artifact", f"push the model it scored: {manifest.target}"
        )
    failed = []
    if (manifest.quantization or {}).get("verification", {}).get("passed") is False:
        failed.append("quantization verification")
    if (manifest.source or {}).get("verification", {}).get("passed") is False:
        failed.append("download verification")
    if failed:
        raise ArtifactError(
            f"refusing to publish {artifact}: its {' and '.join(failed)} failed",
            "fix the artifact (re-run the stage that wrote it) and push the verified result",
        )
    return manifest


def upload_list(artifact: Path) -> list[str]:
    """The artifact's files but hidden ones, the local manifest and its README (the card replaces it)."""
    files = []
    for path in sorted(artifact.rglob("*")):
        rel = path.relative_to(artifact)
        if (
            path.is_file()
            and not any(part.startswith(".") for part in rel.parts)
            and str(rel) not in (MANIFEST, CARD)
        ):
            files.append(rel.as_posix())
    return files


def _base_model(artifact: Path) -> str | None:
    """The hub id the lineage starts from, if it was downloaded from a hub."""
    for _, manifest in reversed(lineage(artifact)):
        if manifest and manifest.stage == "download" and manifest.source:
            return manifest.source.get("id")
    return None


def model_card(artifact: Path, manifest: Manifest, repo_id: str) -> str:
    """README.md from the manifest: lineage, base model, data fingerprint, config, quantization, evals."""
    base = _base_model(artifact)
    meta = {
        "library_name": "peft" if manifest.kind == "adapter" else "transformers",
        "tags": ["swiftkit", manifest.stage],
    }
    if base:
        meta["base_model"] = base
    lines = [
        "---",
        yaml.safe_dump(meta, sort_keys=False).strip(),
        "---",
        "",
        f"# {repo_id.split('/')[-1]}",
        "",
    ]
    kind = "LoRA adapter" if manifest.kind == "adapter" else "model"
    lines += [
        f"A {kind} produced by swiftkit {manifest.swiftkit_version} (stage `{manifest.stage}`, "
        f"{manifest.created_at}), published with swiftkit {__version__}.",
        "",
    ]
    if base:
        lines += [f"Base model: [{base}](https://huggingface.co/{base})", ""]
    lines += ["## Lineage", "", "| # | stage | artifact | metrics |", "|---|---|---|---|"]
    for depth, (where, m) in enumerate(lineage(artifact)):
        if m and m.source:
            name = f"{m.source['id']}@{(m.source.get('commit') or m.source.get('revision') or '')[:12]}"
        else:
            name = where.name
        metrics = ", ".join(
            f"{k}={_fmt(v)}" for k, v in (m.metrics if m else {}).items() if isinstance(v, (int, float))
        )
        lines.append(f"| {depth} | {m.stage if m else 'external'} | {name} | {metrics} |")
    if manifest.data:
        lines += ["", "## Data", ""]
        lines += [
            f"- sources: {', '.join(Path(str(s)).name for s in manifest.data.get('sources', []))}",
            f"- rows: {manifest.data.get('rows')}",
            f"- fingerprint (sha256): `{manifest.data.get('fingerprint')}`",
        ]
    config = {k: v for k, v in manifest.config.items() if k not in PRIVATE_CONFIG_KEYS}
    if config:
        lines += [
            "",
            "## Configuration",
            "",
            "```yaml",
            yaml.safe_dump(config, sort_keys=True).strip(),
            "```",
        ]
    if manifest.quantization:
        lines += [
            "",
            "## Quantization",
            "",
            "```yaml",
            yaml.safe_dump(manifest.quantization, sort_keys=True).strip(),
            "```",
        ]
    evals = find_evals(artifact)
    if evals:
        lines += ["", "## Evaluation", "", "| eval | metric | score |", "|---|---|---|"]
        for path, m in evals:
            scores = m.metrics.get("scores", m.metrics)
            for metric, score in scores.items():
                if isinstance(score, (int, float)):
                    lines.append(f"| {path.name} | {metric} | {_fmt(score)} |")
    serve = "swiftkit serve --model " + repo_id
    lines += ["", "## Use", "", "```bash", serve, "```", ""]
    return "\n".join(lines)


def _fmt(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _show_plan(cfg: PushConfig, artifact: Path, files: list[str], card: str) -> None:
    total = sum((artifact / f).stat().st_size for f in files)
    console.print(
        f"[bold]dry run[/]: would create {'private ' if cfg.private else ''}{cfg.hub} repo {cfg.repo_id} "
        f"and upload {len(files) + 1} files ({total / 1e6:.2f} MB + model card):",
        highlight=False,
    )
    for name in files:
        out.print(f"{(artifact / name).stat().st_size:>12,d}  {name}", highlight=False)
    replaced = " (replaces the artifact's README.md)" if (artifact / CARD).is_file() else ""
    out.print(f"{len(card.encode()):>12,d}  {CARD}  [generated model card{replaced}]", highlight=False)
    out.print("\n" + card, highlight=False, markup=False)


def _token(cfg: PushConfig) -> str:
    if cfg.token:
        return cfg.token
    if cfg.hub == "hf":
        from huggingface_hub import get_token

        token = get_token()
    else:
        from modelscope_hub import HubApi

        token = HubApi()._config.token
    if not token:
        raise SwiftkitError(
            f"pushing to {cfg.hub} needs a write token",
            "pass --token, set HF_TOKEN / MODELSCOPE_API_TOKEN, or log in (`hf auth login`); "
            "--dry-run shows what would be uploaded without one",
        )
    return token


def _push_hf(cfg: PushConfig, artifact: Path, files: list[str], card: str) -> str:
    from huggingface_hub import CommitOperationAdd, HfApi, constants

    from swiftkit.hub.download import bound_hf_timeouts

    endpoint = (cfg.endpoint or constants.ENDPOINT).rstrip("/")
    token = _token(cfg)
    bound_hf_timeouts(cfg.timeout)
    api = HfApi(endpoint=endpoint, token=token)
    # One commit with exactly the files --dry-run lists (upload_folder would re-walk the folder and
    # could not add the generated card, which is not part of the immutable artifact).
    operations = [
        CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(artifact / name)) for name in files
    ]
    operations.append(CommitOperationAdd(path_in_repo=CARD, path_or_fileobj=card.encode()))
    try:
        api.create_repo(cfg.repo_id, private=cfg.private, exist_ok=True, repo_type="model")
        info = api.create_commit(
            cfg.repo_id,
            operations=operations,
            revision=cfg.revision,
            commit_message=cfg.message or f"Upload {artifact.name} with swiftkit",
        )
    except Exception as exc:
        raise _push_error(exc, cfg, endpoint) from None
    return info.commit_url


def _push_modelscope(cfg: PushConfig, artifact: Path, files: list[str], card: str) -> str:
    from modelscope_hub import HubApi, Visibility

    token = _token(cfg)
    api = HubApi(endpoint=cfg.endpoint, token=token)
    endpoint = api._config.endpoint
    visibility = Visibility.PRIVATE if cfg.private else Visibility.PUBLIC
    try:
        from modelscope_hub.errors import AlreadyExistsError

        try:
            api.create_repo(cfg.repo_id, "model", visibility=visibility)
        except AlreadyExistsError:
            pass
        # upload_folder takes a folder: stage the exact upload list (links, no copies) plus the card.
        with tempfile.TemporaryDirectory() as staging:
            for name in files:
                target = Path(staging) / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.symlink_to(artifact / name)
            (Path(staging) / CARD).write_text(card, encoding="utf-8")
            api.upload_folder(
                cfg.repo_id,
                "model",
                staging,
                commit_message=cfg.message or f"Upload {artifact.name}",
                revision=cfg.revision,
            )
    except Exception as exc:
        raise _push_error(exc, cfg, endpoint) from None
    return f"{endpoint}/models/{cfg.repo_id}"


def _push_error(exc: Exception, cfg: PushConfig, endpoint: str) -> Exception:
    status = getattr(getattr(exc, "response", None), "status_code", None)
    name = type(exc).__name__
    if status == 401 or name == "AuthenticationError":
        return SwiftkitError(
            f"{endpoint} rejected the token (HTTP 401) while pushing {cfg.repo_id}",
            "check --token / HF_TOKEN: it must be valid and have write access",
        )
    if status == 403 or name == "PermissionDeniedError":
        return SwiftkitError(
            f"no permission to write {cfg.repo_id} on {endpoint} (HTTP 403)",
            "use a token with write access to that user or organisation (a fine-grained token needs "
            "'write' on the repo), or push under your own namespace",
        )
    mapped = translate(exc, what=cfg.repo_id, endpoint=endpoint, timeout=cfg.timeout)
    return mapped if mapped is not None else exc
