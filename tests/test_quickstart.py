"""The README's first command, end to end: recipes/quickstart.yaml on a fresh workdir.

The chain toy -> sft -> dpo -> merge -> gptq -> eval -> serve smoke must hold together, and each stage
must have the effect the quickstart claims, measured on held-out pairs.
"""

from __future__ import annotations

import json
import re

from swiftkit.artifacts import read_manifest
from tests.conftest import ROOT, run_cli


def scores(eval_dir):
    return read_manifest(eval_dir).metrics["scores"]


def test_quickstart_chain(tmp_path):
    work = tmp_path / "qs"
    proc = run_cli("run", ROOT / "recipes" / "quickstart.yaml", "--workdir", work, timeout=3000, env={"COLUMNS": "200"})
    assert proc.returncode == 0, proc.stderr[-3000:]

    base, sft, dpo, gptq = (scores(work / "eval" / name) for name in ("base", "sft", "dpo", "gptq"))
    # SFT teaches the chat format on top of the pre-trained skill: from ~0 to a clear majority.
    assert base["toy_arithmetic"] < 0.05
    assert sft["toy_arithmetic"] > 0.5
    # DPO (chosen = larger, rejected = smaller) makes the held-out preference at least as good.
    assert dpo["toy_preference"] >= sft["toy_preference"] - 0.01
    assert dpo["toy_preference"] > base["toy_preference"] + 0.2
    # 4-bit GPTQ keeps the behaviour.
    assert abs(gptq["toy_arithmetic"] - dpo["toy_arithmetic"]) < 0.1

    # The served quantized model answers exactly as it does in-process, and mostly right.
    smoke = proc.stderr[proc.stderr.index("serve smoke test") :]
    equal = re.search(r"served == in-process greedy\s*│\s*(\d+)/(\d+)", smoke)
    right = re.search(r"served answers correct\s*│\s*(\d+)/(\d+)", smoke)
    assert equal and equal.group(1) == equal.group(2) == "16", smoke
    assert right and int(right.group(1)) >= 8, smoke

    quant = read_manifest(work / "gptq").quantization
    assert quant["verification"]["passed"] and quant["bits"] == 4
    assert "serve smoke test" in proc.stderr and "effect of each stage" in proc.stdout

    # Lineage of the quantized model goes back through merge, dpo and sft to the toy.
    info = run_cli("info", work / "gptq", "--json-output", check=True)
    stages = [r["manifest"]["stage"] for r in json.loads(info.stdout)]
    assert stages == ["quantize", "merge", "dpo", "sft", "toy"]

    # A second run is all cache.
    again = run_cli("run", ROOT / "recipes" / "quickstart.yaml", "--workdir", work, "--only", "eval", check=True, env={"COLUMNS": "200"})
    assert "cached" in again.stdout
