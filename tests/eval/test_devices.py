"""Every eval backend loads the model where docs/eval.md says (cuda when there is one, `auto` = bf16 there).

Both defaults were once wrong and ran evals of a GPU machine on its host (found on the H200): `hf` passed
cpu/fp32, and the engine/local backends left the weights where from_pretrained put them. This box has no GPU,
so the test makes torch report one and stops each backend at the point where the device is decided.
"""

from __future__ import annotations

import pytest
import torch

from swiftkit.eval.config import EvalConfig
from swiftkit.resolve import resolve_model_ref


class Decided(Exception):
    """Raised by the stand-ins once they have seen where the model would go."""


@pytest.fixture
def cuda_present(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)


def test_hf_backend_defaults_to_the_accelerator(toy_model, cuda_present, monkeypatch):
    from lm_eval.models import huggingface

    from swiftkit.eval import backends

    seen: dict = {}

    def hflm(**kwargs):
        seen.update(kwargs)
        raise Decided

    monkeypatch.setattr(huggingface, "HFLM", hflm)
    with pytest.raises(Decided):
        backends.hf_backend(resolve_model_ref(toy_model), 8, None, None, "auto")
    assert (seen["device"], seen["dtype"]) == ("cuda", "bfloat16")
    with pytest.raises(Decided):
        backends.hf_backend(resolve_model_ref(toy_model), 8, None, "cpu", "auto")
    assert (seen["device"], seen["dtype"]) == ("cpu", "float32")


@pytest.mark.parametrize("backend", ["engine", "local"])
def test_in_process_backends_load_onto_the_accelerator(backend, toy_model, cuda_present, monkeypatch, tmp_path):
    from swiftkit import loading
    from swiftkit.eval import evaluate

    seen: dict = {}

    def load_model(ref, dtype, device, trust_remote_code=False):
        seen.update(dtype=dtype, device=device)
        raise Decided

    monkeypatch.setattr(loading, "load_model", load_model)
    cfg = EvalConfig(model=[str(toy_model)], tasks=["mmlu"], backend=backend, output=str(tmp_path / "out"))
    target = evaluate.Target(label="toy", output=tmp_path / "out", ref=resolve_model_ref(toy_model))
    with pytest.raises(Decided):
        evaluate._load_backend(cfg, target, None, None, False)
    assert seen == {"dtype": "auto", "device": "cuda"}
