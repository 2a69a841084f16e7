"""`swiftkit bench eval`: the same tasks and rows through several eval backends in one run.

Each backend is a full `swiftkit eval` (its own artifact); the table shows the scoring wall time
(lm-eval's simple_evaluate, model loading excluded, as the artifact records it), the speed-up over
the first backend, the scores with their deltas, and per-sample agreement with the first backend:
the largest log-likelihood difference and how many generations are identical.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

from swiftkit.artifacts import read_manifest
from swiftkit.bench.eval_config import BenchEvalConfig
from swiftkit.console import console, out
from swiftkit.errors import SwiftkitError

BACKENDS = ("engine", "local", "hf")


def _samples(artifact: Path) -> dict[str, list[dict]]:
    return {p.stem: [json.loads(line) for line in p.read_text().splitlines()] for p in sorted((artifact / "samples").glob("*.jsonl"))}


def agreement(ours: Path, baseline: Path) -> dict[str, Any]:
    """Per sample: max |Δ log-likelihood| (and greedy-flag mismatches) and identical generations."""
    result = {"max_abs_dloglik": 0.0, "loglik_compared": 0, "greedy_flag_diffs": 0, "generations_equal": 0, "generations": 0}
    a, b = _samples(ours), _samples(baseline)
    for task in sorted(a.keys() & b.keys()):
        for x, y in zip(a[task], b[task], strict=False):
            for got, want in zip(x["resps"], y["resps"], strict=False):
                if isinstance(want[0], str):
                    result["generations"] += 1
                    result["generations_equal"] += got == want
                    continue
                pair = isinstance(want[0], list)
                delta = abs((got[0][0] if pair else got[0]) - (want[0][0] if pair else want[0]))
                result["max_abs_dloglik"] = max(result["max_abs_dloglik"], delta)
                result["loglik_compared"] += 1
                result["greedy_flag_diffs"] += pair and got[0][1] != want[0][1]
    return result


def _eval(cfg: BenchEvalConfig, backend: str, output: Path, batch_size: int) -> dict[str, Any]:
    from swiftkit.eval import evaluate
    from swiftkit.eval.config import EvalConfig

    eval_cfg = EvalConfig(
        model=[cfg.model], tasks=cfg.tasks, backend=backend, data_dir=cfg.data_dir, limit=cfg.limit, num_fewshot=cfg.num_fewshot,
        max_gen_toks=cfg.max_gen_toks, batch_size=batch_size, chat=cfg.chat, dtype=cfg.dtype, device=cfg.device,
        output=str(output), overwrite=True,
    )
    started = time.perf_counter()
    evaluate.run(eval_cfg)
    total = time.perf_counter() - started
    metrics = read_manifest(output).metrics
    phases: dict[str, float] = {}
    for phase in metrics.get("phases", []):
        kind = "generate" if phase["kind"] == "generate_until" else "loglikelihood"
        phases[kind] = round(phases.get(kind, 0.0) + phase["seconds"], 2)
    return {"backend": backend, "batch_size": batch_size, "artifact": str(output), "total_s": round(total, 2),
            "scoring_s": metrics["wall_s"], "phases_s": phases, "scores": metrics["scores"]}


def run(cfg: BenchEvalConfig) -> list[dict[str, Any]]:
    backends = [b.strip() for b in cfg.backends.split(",") if b.strip()]
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown or len(backends) < 2:
        raise SwiftkitError(f"--backends needs two or more of {', '.join(BACKENDS)}, got {cfg.backends!r}", "e.g. --backends hf,engine")
    with tempfile.TemporaryDirectory(prefix="swiftkit-bench-eval-") as scratch:
        root = Path(cfg.workdir) if cfg.workdir else Path(scratch)
        rows = []
        for i, backend in enumerate(backends):
            batch = cfg.baseline_batch_size if i == 0 and cfg.baseline_batch_size else cfg.batch_size
            console.print(f"[bold]bench eval[/] {backend}: {cfg.model} on {', '.join(cfg.tasks)} (limit {cfg.limit}, "
                          f"batch {batch})")
            rows.append(_eval(cfg, backend, root / backend, batch))
        base = rows[0]
        for row in rows[1:]:
            row["agreement"] = agreement(Path(row["artifact"]), Path(base["artifact"]))
    _print(rows)
    if cfg.output:
        Path(cfg.output).write_text(json.dumps({"config": cfg.model_dump(), "rows": rows}, indent=2) + "\n")
    return rows


def _print(rows: list[dict[str, Any]]) -> None:
    base = rows[0]
    tasks = list(base["scores"])
    kinds = [k for k in ("loglikelihood", "generate") if k in base["phases_s"]]
    header = ["backend", "batch", "scoring s", *(f"{k} s" for k in kinds), "load+scoring s", f"speed-up vs {base['backend']}", *tasks,
              "max |Δ loglik|", "generations equal"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        scores = []
        for task in tasks:
            score = row["scores"].get(task)
            delta = "" if row is base or score is None else f" ({score - base['scores'][task]:+.4f})"
            scores.append("—" if score is None else f"{score:.4f}{delta}")
        agree = row.get("agreement")
        lines.append("| " + " | ".join([
            row["backend"], str(row["batch_size"]), f"{row['scoring_s']:.1f}",
            *(f"{row['phases_s'].get(k, 0.0):.1f} ({base['phases_s'][k] / max(row['phases_s'].get(k, 0.0), 1e-9):.2f}x)" for k in kinds),
            f"{row['total_s']:.1f}", f"{base['scoring_s'] / row['scoring_s']:.2f}x",
            *scores,
            "reference" if agree is None else f"{agree['max_abs_dloglik']:.1e} ({agree['loglik_compared']})",
            "reference" if agree is None else f"{agree['generations_equal']}/{agree['generations']}",
        ]) + " |")
    out.print("\n".join(lines), soft_wrap=True, markup=False, highlight=False)
