"""Multi-process training: `--nproc N` re-launches the same command under torchrun.

torchrun (not `accelerate launch`) because `accelerate launch --cpu --num_processes 2` silently
runs one process (FEASIBILITY.md); torchrun starts N workers on CPU (gloo) and GPU (nccl) alike.
The launcher resolves the output path first and hands every worker the same resolved config.
"""

from __future__ import annotations

import os
import subprocess
import sys

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
    """Run `swiftkit COMMAND <cfg as flags>` in cfg.nproc torchrun workers; rank 0 writes the artifact."""
    nproc = getattr(cfg, "nproc", 1)
    argv = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "swiftkit",
        command,
        *as_flags(cfg),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    code = subprocess.call(argv, env=env)
    if code != 0:
        raise SwiftkitError(
            f"{command} failed in one of its {nproc} worker processes (exit status {code})",
            "the workers' own error lines are above; rerun with --nproc 1 to debug",
        )


def as_flags(cfg: StageConfig) -> list[str]:
    """The resolved config as command-line flags (every field explicit, so workers agree exactly)."""
    flags: list[str] = []
    for name, value in cfg.model_dump(mode="json").items():
        flag = "--" + name.replace("_", "-")
        # torchrun would read --nproc as an abbreviation of its own --nproc-per-node; workers know WORLD_SIZE.
        if value is None or name == "nproc":
            continue
        if isinstance(value, bool):
            flags.append(flag if value else "--no-" + name.replace("_", "-"))
        elif isinstance(value, list):
            for item in value:
                flags += [flag, str(item)]
        else:
            flags += [flag, str(value)]
    return flags
