"""`swiftkit compare`: eval artifacts side by side, with deltas to the first (the baseline)."""

from __future__ import annotations

from pathlib import Path

from swiftkit.artifacts import Manifest, find_evals, read_manifest
from swiftkit.errors import ArtifactError, SwiftkitError
from swiftkit.eval.config import CompareConfig, parse_thresholds
from swiftkit.eval.report import check_thresholds, print_table, side_by_side


def _eval_of(ref: str, search: list[Path]) -> tuple[Path, Manifest]:
    """An eval artifact as given, or a model artifact's newest eval (beside it or in --search)."""
    path = Path(ref)
    manifest = read_manifest(path) if path.is_dir() else None
    if manifest is None:
        raise ArtifactError(
            f"not a swiftkit artifact: {ref}",
            "give eval artifacts (or model artifacts that have been evaluated)",
        )
    if manifest.kind == "eval":
        return path, manifest
    evals = find_evals(path, search)
    if not evals:
        raise ArtifactError(
            f"{ref} is a {manifest.kind} artifact with no eval beside it",
            "run swiftkit eval --model on it first, or pass --search DIR",
        )
    return max(evals, key=lambda item: item[1].created_at)


def run(cfg: CompareConfig) -> dict[str, dict[str, float]]:
    thresholds = parse_thresholds(cfg.fail_under)
    if len(cfg.artifacts) < 1:
        raise SwiftkitError("compare needs at least one eval artifact")
    found = [_eval_of(ref, [Path(s) for s in cfg.search]) for ref in cfg.artifacts]
    labels = []
    for ref, (path, manifest) in zip(cfg.artifacts, found, strict=False):
        label = Path(manifest.target).name if manifest.target and Path(ref).resolve() != path.resolve() else path.name
        labels.append(label if label not in labels else f"{label} ({path.name})")
    scores = [dict(m.metrics.get("scores", {})) for _, m in found]
    metric_names: dict[str, str] = {}
    for _, manifest in found:
        metric_names.update(manifest.metrics.get("metric", {}))
    print_table(side_by_side("scores (delta to the first)", labels, scores, metric_names))
    failures = check_thresholds(labels, scores, thresholds)
    if cfg.max_drop is not None:
        base = scores[0]
        for label, column in zip(labels[1:], scores[1:], strict=False):
            failures += [
                f"{label}: {t} fell {base[t] - v:.4f} below the baseline"
                for t, v in column.items()
                if t in base and base[t] - v > cfg.max_drop
            ]
    if failures:
        raise SwiftkitError("; ".join(failures), "regression against --fail-under / --max-drop")
    return dict(zip(labels, scores, strict=False))
