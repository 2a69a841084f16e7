"""A run killed after its first checkpoint and resumed ends where an uninterrupted run ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from safetensors.torch import load_file

from swiftkit.artifacts import partial_dir
from tests.conftest import ROOT, run_cli

STEPS, SAVE = 30, 5


def sft_args(toy_model, out) -> list[str]:
    flags = f"--max-steps {STEPS} --save-steps {SAVE} --lr 2e-3 --batch-size 4 --eval-split 0"
    return ["sft", "--model", str(toy_model), "--data", f"{toy_model}/task/sft.jsonl#200", *flags.split(), "--output", str(out)]


def test_killed_run_resumes_to_the_same_weights(toy_model, tmp_path):
    out = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "swiftkit", *sft_args(toy_model, out)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    # Written after the rest of the checkpoint: --resume only takes checkpoints that have it.
    first = partial_dir(out) / "checkpoints" / f"checkpoint-{SAVE}" / "swiftkit-checkpoint-complete"
    deadline = time.time() + 300
    while not first.is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert first.is_file(), "the run never wrote its first checkpoint"
    assert not out.exists(), "the run finished before it could be killed (make it longer)"

    resumed = run_cli(*sft_args(toy_model, out), "--resume", check=True)
    assert "resum" in resumed.stderr.lower()
    straight = tmp_path / "straight"
    run_cli(*sft_args(toy_model, straight), check=True)

    a, b = load_file(out / "adapter_model.safetensors"), load_file(straight / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    diff = max(float((a[k] - b[k]).abs().max()) for k in a)
    moved = max(float(a[k].abs().max()) for k in a if "lora_B" in k)
    assert moved > 1e-3  # training really changed the adapter
    assert diff < 1e-5, diff
    assert not (out / "checkpoints").exists()


def test_resume_without_checkpoint_is_a_clear_error(toy_model, tmp_path):
    proc = run_cli(*sft_args(toy_model, tmp_path / "never"), "--resume")
    assert proc.returncode == 2 and "nothing to resume" in proc.stderr
