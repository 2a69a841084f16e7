"""Training under faults (issue 14): a save cut off by a kill or a full disk, a resume with other
settings, two runs on one output, a resumed run's metrics, compressed data. All through the CLI."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from safetensors.torch import load_file

from swiftkit.artifacts import partial_dir
from swiftkit.data.dataset import load_training_data
from swiftkit.train.callbacks import CHECKPOINT_COMPLETE
from tests.conftest import ROOT, WIDE, assert_one_line_error, run_cli
from tests.train.conftest import manifest

STEPS, SAVE = 40, 5
# Logging every 3 steps never lines up with the saves every 5: the resumed train loss must not rely on it.
FLAGS = f"--max-steps {STEPS} --save-steps {SAVE} --lr 2e-3 --batch-size 4 --eval-split 0 --logging-steps 3"


def sft_args(toy_model: Path, out: Path, flags: str = FLAGS, rows: int = 200) -> list[str]:
    return ["sft", "--model", str(toy_model), "--data", f"{toy_model}/task/sft.jsonl#{rows}", *flags.split(), "--output", str(out)]


def start_sft(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "swiftkit", *args],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def wait_for(path: Path, proc: subprocess.Popen, seconds: float = 300) -> None:
    deadline = time.time() + seconds
    while not path.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)


def checkpoints(out: Path) -> list[Path]:
    return sorted((partial_dir(out) / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))


def cut_off(folder: Path) -> None:
    """What a kill or a full disk in the middle of `Trainer._save_checkpoint` leaves: the weights, half
    the optimizer, no scheduler / RNG / trainer state (written last)."""
    for name in ("trainer_state.json", "rng_state.pth", "scheduler.pt", CHECKPOINT_COMPLETE):
        (folder / name).unlink(missing_ok=True)
    optimizer = folder / "optimizer.pt"
    if optimizer.is_file():
        optimizer.write_bytes(optimizer.read_bytes()[: optimizer.stat().st_size // 2])


@pytest.fixture(scope="module")
def straight(toy_model, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hardening") / "straight"
    run_cli(*sft_args(toy_model, out), check=True)
    return out


@pytest.fixture(scope="module")
def interrupted(toy_model, tmp_path_factory) -> Path:
    """The partial dir of a run SIGKILLed after its second checkpoint (copied by each test that resumes)."""
    out = tmp_path_factory.mktemp("hardening") / "killed"
    proc = start_sft(sft_args(toy_model, out))
    # The marker is written after trainer_state.json: waiting for the state alone raced the marker, and a kill
    # between the two left the second save incomplete (resume then drops it; a CI failure at 406561c).
    second = partial_dir(out) / "checkpoints" / f"checkpoint-{2 * SAVE}" / CHECKPOINT_COMPLETE
    wait_for(second, proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert second.is_file(), "the run never wrote its second checkpoint"
    assert not out.exists(), "the run finished before it could be killed (make it longer)"
    return partial_dir(out)


def copy_run(interrupted: Path, out: Path) -> None:
    shutil.copytree(interrupted, partial_dir(out))


@pytest.fixture(scope="module")
def resumed(toy_model, interrupted, tmp_path_factory) -> dict:
    """The interrupted run with its newest checkpoint cut off mid-save, then resumed."""
    out = tmp_path_factory.mktemp("hardening") / "resumed"
    copy_run(interrupted, out)
    *_, previous, newest = checkpoints(out)
    cut_off(newest)
    tokens_at_previous = json.loads((previous / "trainer_state.json").read_text())["num_input_tokens_seen"]
    proc = run_cli(*sft_args(toy_model, out), "--resume", check=True, env=WIDE)
    return {"out": out, "proc": proc, "previous": previous, "tokens_at_previous": tokens_at_previous}


def test_resume_skips_a_checkpoint_cut_off_mid_save(resumed, straight):
    """Before: --resume picked the newest checkpoint folder and died (FileNotFoundError trainer_state.json)."""
    assert f"resuming from {resumed['previous']}" in resumed["proc"].stderr
    out = resumed["out"]
    assert manifest(out)["metrics"]["steps"] == STEPS
    a, b = load_file(out / "adapter_model.safetensors"), load_file(straight / "adapter_model.safetensors")
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-5  # the same weights as never interrupted


def test_resumed_manifest_reports_the_whole_run(resumed, straight):
    """Before: train loss averaged only the resumed steps; tokens/s divided every token by the resumed runtime."""
    got, want = manifest(resumed["out"])["metrics"], manifest(straight)["metrics"]
    assert got["train_loss"] == pytest.approx(want["train_loss"], rel=1e-4)
    assert got["train_tokens"] == want["train_tokens"]
    assert got["resumed_from_step"] == int(resumed["previous"].name.split("-")[1])
    ran = got["train_tokens"] - resumed["tokens_at_previous"]
    assert got["tokens_per_second"] * got["train_runtime_s"] == pytest.approx(ran, rel=0.01)


@pytest.mark.parametrize(
    "change, named",
    [({"flags": FLAGS.replace("--lr 2e-3", "--lr 1e-3")}, "--lr 0.002 -> 0.001"), ({"rows": 150}, "data fingerprint")],
    ids=["lr", "data"],
)
def test_resume_with_other_settings_refuses(toy_model, interrupted, tmp_path, change, named):
    """Before: accepted silently, and the manifest credited the new values to every step."""
    out = tmp_path / "changed"
    copy_run(interrupted, out)
    before = sorted(p.name for p in checkpoints(out))
    proc = run_cli(*sft_args(toy_model, out, **change), "--resume", env=WIDE)
    assert_one_line_error(proc, "differs from the interrupted one", named)
    assert sorted(p.name for p in checkpoints(out)) == before  # the checkpoints are kept for a proper resume
    assert not out.exists()


def test_resume_force_records_both(toy_model, interrupted, tmp_path):
    out = tmp_path / "forced"
    copy_run(interrupted, out)
    run_cli(*sft_args(toy_model, out, FLAGS.replace("--lr 2e-3", "--lr 1e-3")), "--resume", "--force", check=True)
    found = manifest(out)
    assert found["config"]["lr"] == 1e-3 and found["metrics"]["steps"] == STEPS
    (earlier,) = found["resumed"]
    assert earlier["config"]["lr"] == 2e-3 and earlier["from_step"] == 0
    assert earlier["data"]["fingerprint"] == found["data"]["fingerprint"]
    assert found["metrics"]["resumed_from_step"] >= SAVE


def test_second_run_on_the_same_output_refuses(toy_model, tmp_path):
    """Before: the second run cleared the first one's partial dir (its checkpoints) and trained into it."""
    out = tmp_path / "busy"
    first = start_sft(sft_args(toy_model, out, "--max-steps 100000 --batch-size 4 --eval-split 0"))
    try:
        wait_for(partial_dir(out), first)
        assert first.poll() is None, "the first run ended early"
        second = run_cli(*sft_args(toy_model, out, "--max-steps 3 --eval-split 0"), env=WIDE)
        assert_one_line_error(second, f"{out} is being written by another run (pid {first.pid})")
        assert first.poll() is None and partial_dir(out).is_dir()
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    # The kernel drops a killed run's lock: the output is free again.
    run_cli(*sft_args(toy_model, out, "--max-steps 2 --eval-split 0"), check=True)


@pytest.fixture
def small_disk(tmp_path):
    """A 3 MiB filesystem: room for one toy checkpoint (2 MiB), not two. Needs root (mount)."""
    mount = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {made.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_full_disk_mid_checkpoint_is_one_line_and_resumes(toy_model, small_disk):
    """Before: "internal error: RuntimeError: unexpected pos ..." (exit 1), then --resume picked the cut-off checkpoint."""
    out = small_disk / "out"
    args = sft_args(toy_model, out, "--max-steps 20 --save-steps 2 --lr 2e-3 --batch-size 4 --eval-split 0", rows=80)
    proc = run_cli(*args, env=WIDE)
    assert_one_line_error(proc, f"disk full while writing {out}", "MiB free there now")
    saved = [c for c in checkpoints(out) if (c / "trainer_state.json").is_file()]
    assert saved and checkpoints(out)[-1] not in saved and not out.exists()  # the disk filled mid-save
    subprocess.run(["mount", "-o", "remount,size=64m", "tmpfs", str(small_disk)], check=True)  # space freed
    resumed = run_cli(*args, "--resume", check=True, env=WIDE)
    assert f"resuming from {saved[-1]}" in resumed.stderr
    assert manifest(out)["metrics"]["steps"] == 20


@pytest.mark.parametrize("command, source", [("sft", "sft.jsonl"), ("dpo", "dpo.jsonl")])
def test_gzipped_jsonl_trains(toy_model, tmp_path, command, source):
    """Before: "unsupported data file type '.gz'" (eval already read .jsonl.gz)."""
    lines = (toy_model / "task" / source).read_text().splitlines(keepends=True)[:40]
    plain, packed = tmp_path / f"rows-{source}", tmp_path / f"rows-{source}.gz"
    plain.write_text("".join(lines))
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    out = tmp_path / "out"
    flags = "--max-steps 2 --batch-size 4 --eval-split 0"
    run_cli(command, "--model", toy_model, "--data", packed, *flags.split(), "--output", out, check=True)
    data = manifest(out)["data"]
    expected = load_training_data([str(plain)], "sft" if command == "sft" else "preference")
    assert data["rows"] == 40 and data["fingerprint"] == expected.fingerprint


def test_full_disk_in_merge_is_one_line(toy_model, tmp_path, small_disk):
    """Before: internal error: SafetensorError: ... No space left on device (os error 28)."""
    adapter = tmp_path / "adapter"
    run_cli(*sft_args(toy_model, adapter, "--max-steps 2 --batch-size 4 --eval-split 0", rows=40), check=True)
    out = small_disk / "merged"  # the toy's merged weights (3.4 MB) do not fit in 3 MiB
    proc = run_cli("merge", "--model", adapter, "--output", out, env=WIDE)
    assert_one_line_error(proc, f"disk full while writing {out}", "MiB free there now")
    assert not out.exists() and not partial_dir(out).exists()


def test_full_disk_in_quantize_is_one_line(toy_model, small_disk):
    """Every stage's artifact_writer reports a full disk. Before: internal error: SafetensorError ... os error 28."""
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * (shutil.disk_usage(small_disk).free - 100_000))  # leave 100 kB
    out = small_disk / "q"
    calib = f"{toy_model}/task/calib.txt"
    proc = run_cli("quantize", "--model", toy_model, "--method", "bnb-int8", "--data", calib, "--output", out, env=WIDE)
    assert_one_line_error(proc, "disk full while writing", "free there now")
    assert not out.exists() and not partial_dir(out).exists()
