"""Multi-process training: `--nproc N` re-launches the same command under torchrun.

torchrun (not `accelerate launch`) because `accelerate launch --cpu --num_processes 2` silently
runs one process (FEASIBILITY.md); torchrun starts N workers on CPU (gloo) and GPU (nccl) alike.
The launcher resolves the output path first and hands every worker the same resolved config.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from swiftkit.config import StageConfig
from swiftkit.errors import SwiftkitError


def in_worker() -> bool:
    """True inside a torchrun worker (the launcher has already resolved the run)."""
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main() -> bool:
    return rank() == 0


def relaunch(command: str, cfg: StageConfig) -> None:
    """Run `swiftkit COMMAND --config <cfg>` in cfg.nproc torchrun workers; rank 0 writes the artifact."""
    nproc = getattr(cfg, "nproc", 1)
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix=f"swiftkit-{command}-", delete=False) as fh:
        yaml.safe_dump(cfg.model_dump(mode="json"), fh)
        config_file = fh.name
    argv = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "swiftkit",
        command,
        "--config",
        config_file,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    try:
        code = subprocess.call(argv, env=env)
    finally:
        Path(config_file).unlink(missing_ok=True)
    if code != 0:
        raise SwiftkitError(
            f"{command} failed in one of its {nproc} worker processes (exit status {code})",
            "the workers' own error lines are above; rerun with --nproc 1 to debug",
        )
