"""--nproc 2: two real worker processes (torchrun, gloo on CPU), each training on different rows."""

from __future__ import annotations

import importlib.util

import pytest

from tests.conftest import run_cli
from tests.train.conftest import manifest


def test_two_processes_see_different_data(toy_model, tmp_path):
    out = tmp_path / "ddp"
    # 32 rows, 2 ranks x batch 2 x 4 steps: one pass, no padding duplicates from the distributed sampler.
    data = f"{toy_model}/task/sft.jsonl#32"
    flags = "--eval-split 0 --max-steps 4 --batch-size 2 --nproc 2"
    run_cli("sft", "--model", toy_model, "--data", data, *flags.split(), "--output", out, check=True)
    m = manifest(out)
    dist = m["metrics"]["distributed"]
    assert dist["world_size"] == 2 and m["config"]["nproc"] == 2
    assert dist["sequences_per_rank"] == [8, 8]
    assert dist["shared_sequences"] == 0
    assert not set(dist["digests_per_rank"][0]) & set(dist["digests_per_rank"][1])
    assert (out / "adapter_model.safetensors").is_file()


@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is not None, reason="deepspeed is installed")
def test_deepspeed_without_the_package_is_a_clear_error(toy_model, tmp_path):
    data = f"{toy_model}/task/sft.jsonl#8"
    proc = run_cli(
        "sft",
        "--model",
        toy_model,
        "--data",
        data,
        *"--method full --distributed deepspeed --nproc 2".split(),
        "--output",
        tmp_path / "out",
    )
    assert proc.returncode == 2 and "needs the deepspeed package" in proc.stderr


def test_sharded_strategies_are_for_full_fine_tuning(toy_model, tmp_path):
    data = f"{toy_model}/task/sft.jsonl#8"
    proc = run_cli("sft", "--model", toy_model, "--data", data, "--distributed", "fsdp", "--output", tmp_path / "out")
    assert proc.returncode == 2 and "--distributed fsdp is for full fine-tuning" in proc.stderr


def test_fsdp_full_fine_tuning_in_two_processes(toy_model, tmp_path):
    from safetensors.torch import load_file

    out = tmp_path / "fsdp"
    data = f"{toy_model}/task/sft.jsonl#32"
    flags = "--method full --distributed fsdp --lr 5e-4 --eval-split 0 --max-steps 2 --batch-size 2 --nproc 2"
    run_cli("sft", "--model", toy_model, "--data", data, *flags.split(), "--output", out, check=True)
    m = manifest(out)
    assert m["kind"] == "model" and m["metrics"]["distributed"]["world_size"] == 2
    # The sharded weights were gathered into one complete checkpoint that moved away from the base.
    trained, base = load_file(out / "model.safetensors"), load_file(toy_model / "model.safetensors")
    assert trained.keys() == base.keys()
    assert max(float((trained[k] - base[k]).abs().max()) for k in base) > 1e-5
