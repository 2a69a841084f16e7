"""`swiftkit info`: an artifact's lineage back to the base model, with the evals that point at it."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from rich.table import Table

from swiftkit.artifacts import find_evals, lineage, read_manifest
from swiftkit.config import CommandConfig, positional
from swiftkit.console import out
from swiftkit.errors import ArtifactError


class InfoConfig(CommandConfig):
    model: str = positional(description="Artifact directory.")
    search: list[str] = Field(default_factory=list, description="Extra folders to search for eval artifacts.")
    json_output: bool = Field(False, description="Print the manifest chain as JSON.")


def run(cfg: InfoConfig) -> list[dict]:
    path = Path(cfg.model)
    if not path.is_dir():
        raise ArtifactError(f"not a directory: {path}")
    if read_manifest(path) is None:
        raise ArtifactError(f"{path} has no swiftkit.json", "info describes swiftkit artifacts; for a plain HF dir see its config.json")
    chain = lineage(path)
    records = []
    table = Table(title=f"lineage of {path.resolve()}", title_justify="left")
    for col in ("#", "stage", "kind", "artifact", "key metrics", "evals"):
        table.add_column(col)
    for depth, (where, manifest) in enumerate(chain):
        evals = find_evals(where, [Path(s) for s in cfg.search]) if manifest else []
        eval_text = "; ".join(_eval_line(p, m.metrics) for p, m in evals)
        metrics = ", ".join(
            f"{k}={_short(v)}" for k, v in (manifest.metrics.items() if manifest else []) if not isinstance(v, (dict, list))
        )
        table.add_row(
            str(depth), manifest.stage if manifest else "external", manifest.kind if manifest else "-", str(where), metrics, eval_text
        )
        records.append({"path": str(where), "manifest": manifest.model_dump() if manifest else None, "evals": [str(p) for p, _ in evals]})
    if cfg.json_output:
        import json

        out.print_json(json.dumps(records, default=str))
    else:
        out.print(table)
    return records


def _short(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _eval_line(path: Path, metrics: dict) -> str:
    scores = metrics.get("scores", metrics)
    flat = ", ".join(f"{k}={_short(v)}" for k, v in scores.items() if isinstance(v, (int, float)))
    return f"{path.name}: {flat}"
