"""`swiftkit eval` of a reward model (`swiftkit rm` artifact): held-out pair accuracy, as an eval artifact.

A reward model is a sequence classifier, not a generator, so lm-eval has nothing to ask it; the one task
is `pair_accuracy` on preference pairs (`--data FILE`, any format `dpo` reads, or the toy's
`task/heldout_pref.jsonl` via `--data-dir`): the share of pairs whose chosen conversation scores above the
rejected one, scored exactly as `swiftkit rm` measured it (swiftkit/train/rm.py).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from swiftkit.artifacts import ModelRef, artifact_writer
from swiftkit.console import summary
from swiftkit.errors import SwiftkitError

TASK = "pair_accuracy"


def is_reward_model(ref: ModelRef | None) -> bool:
    return ref is not None and getattr(ref.manifest, "task", None) == "reward"


def pairs_file(cfg) -> Path:
    """--data, else the toy's held-out pairs under --data-dir."""
    if cfg.data:
        return Path(cfg.data)
    if cfg.data_dir and (Path(cfg.data_dir) / "heldout_pref.jsonl").is_file():
        return Path(cfg.data_dir) / "heldout_pref.jsonl"
    raise SwiftkitError("pair_accuracy needs preference pairs", "pass --data PAIRS.jsonl (prompt/chosen/rejected rows)")


def check_tasks(cfg, ref: ModelRef | None) -> None:
    """A reward model takes exactly --tasks pair_accuracy, and only a reward model does."""
    reward = is_reward_model(ref)
    if reward and cfg.tasks != [TASK]:
        raise SwiftkitError(
            f"{ref.ref} is a reward model: it is scored with --tasks {TASK} only", f"e.g. --tasks {TASK} --data pairs.jsonl"
        )
    if not reward and TASK in cfg.tasks:
        label = ref.ref if ref else "the endpoint"
        raise SwiftkitError(f"--tasks {TASK} scores reward models (swiftkit rm artifacts); {label} is not one")


def evaluate(cfg, label: str, ref: ModelRef, output: Path) -> dict[str, float]:
    from swiftkit.data.dataset import load_training_data
    from swiftkit.eval.report import write_eval_artifact

    source = pairs_file(cfg)
    rows = load_training_data([str(source)], "preference", seed=42).rows
    if cfg.limit:
        rows = rows[: int(cfg.limit)]
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from swiftkit.loading import default_device, torch_dtype
    from swiftkit.train.rm import pair_accuracy

    device = cfg.device or default_device()
    model = AutoModelForSequenceClassification.from_pretrained(ref.path, dtype=torch_dtype(cfg.dtype, device)).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(ref.path)
    with artifact_writer(output, overwrite=cfg.overwrite) as tmp:
        started = time.time()
        with torch.no_grad():
            measured = pair_accuracy(model, tokenizer, rows)
        wall = time.time() - started
        scores = {TASK: measured["pair_accuracy"]}
        extra: dict[str, Any] = {"reward_margin": measured["reward_margin"], "pairs": len(rows), "wall_s": round(wall, 2)}
        write_eval_artifact(
            tmp, {}, scores, {TASK: "pair_accuracy"}, str(ref.path), cfg.model_dump(exclude={"api_key"}), extra, {TASK: str(source)}
        )
    summary(
        f"eval of {label}",
        [
            (TASK, f"{scores[TASK]:.4f} ({len(rows)} pairs)"),
            ("reward margin", f"{measured['reward_margin']:.3f}"),
            ("time", f"{wall:.1f}s"),
        ],
        artifact=str(output.resolve()),
    )
    return scores
