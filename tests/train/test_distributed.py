"""--nproc 2: two real worker processes (torchrun, gloo on CPU), each training on different rows."""

from __future__ import annotations

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
