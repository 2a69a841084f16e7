"""The toy model served by the fake hub, used as `--model org/toy`: downloaded, loaded, generating (slow: torch)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from swiftkit.artifacts import MANIFEST
from tests.conftest import ROOT
from tests.hub.fake_hub import FakeHub, FakeRepo

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not os.environ.get("SWIFTKIT_SLOW"), reason="loads torch + transformers; SWIFTKIT_SLOW=1"
    ),
]

CHECK = """
from swiftkit.artifacts import read_manifest
from swiftkit.loading import load_model, serving_info
model, tok, ref = load_model("org/toy")
ids = tok("12 + 7 = ", return_tensors="pt")
out = model.generate(**ids, max_new_tokens=4, do_sample=False)
print(tok.decode(out[0][ids["input_ids"].shape[1]:]).split()[0])
recorded, actual = read_manifest(ref.path).serving, serving_info(tok, model)
assert (recorded.chat_template, recorded.eos_token, recorded.eos_token_ids, recorded.pad_token) == (
    actual.chat_template, actual.eos_token, actual.eos_token_ids, actual.pad_token), (recorded, actual)
"""


def test_hub_id_loads_and_generates_with_the_recorded_serving_info(toy_model, tmp_path):
    files = {p.name: p.read_bytes() for p in toy_model.iterdir() if p.is_file() and p.name != MANIFEST}
    with FakeHub({"org/toy": FakeRepo(files)}) as hub:
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "0",
            "HF_HOME": str(tmp_path / "hf"),
            "HF_ENDPOINT": hub.url,
            "SWIFTKIT_HOME": str(tmp_path / "home"),
        }
        proc = subprocess.run(
            [sys.executable, "-c", CHECK], env=env, cwd=ROOT, capture_output=True, text=True, timeout=600
        )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split()[-1].isdigit()  # the toy answers arithmetic with a number
