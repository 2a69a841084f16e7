"""A toy model repository served by the fake hub, and the environment that points the real clients at it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.hub.fake_hub import FakeHub, FakeRepo

TEMPLATE = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"


def toy_repo_files() -> dict[str, bytes]:
    """Small stand-ins for a model repo's files: what the default selection keeps and what it skips."""
    # Bigger than the client's 10 MiB read chunk, so a cut after the first chunk can be resumed from there.
    weights = os.urandom(11_000_000)
    return {
        "config.json": json.dumps({"model_type": "qwen2", "hidden_size": 128, "eos_token_id": 2}).encode(),
        "generation_config.json": json.dumps({"eos_token_id": [2, 3], "max_new_tokens": 64}).encode(),
        "tokenizer.json": json.dumps({"version": "1.0", "model": {"type": "BPE"}}).encode(),
        "tokenizer_config.json": json.dumps(
            {
                "eos_token": "<|im_end|>",
                "pad_token": {"content": "<|endoftext|>"},
                "bos_token": None,
            }
        ).encode(),
        "chat_template.jinja": TEMPLATE.encode(),
        "model.safetensors": weights,
        "README.md": b"# toy\n",
        "LICENSE": b"Apache-2.0\n",
        # Skipped by default: a duplicate weight format, training state, an export folder.
        "pytorch_model.bin": weights,
        "optimizer.pt": os.urandom(1000),
        "onnx/model.onnx": os.urandom(1000),
    }


KEPT = {
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "model.safetensors",
    "README.md",
    "LICENSE",
}


@pytest.fixture
def hub():
    repos = {
        "org/toy": FakeRepo(toy_repo_files(), commit="c0ffee" + "0" * 34),
        "org/gated": FakeRepo({"config.json": b"{}"}, gated=True),
        "org/private": FakeRepo({"config.json": b"{}"}, private=True),
    }
    with FakeHub(repos) as server:
        yield server


@pytest.fixture
def hub_env(tmp_path: Path, hub: FakeHub) -> dict[str, str]:
    """Environment for a `swiftkit` subprocess: online, isolated caches, the fake hub as HF endpoint."""
    return {
        "HF_HUB_OFFLINE": "0",
        "HF_HOME": str(tmp_path / "hf-home"),
        "HF_ENDPOINT": hub.url,
        "HF_TOKEN": "",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "SWIFTKIT_HOME": str(tmp_path / "swiftkit-home"),
        "MODELSCOPE_ENDPOINT": "http://127.0.0.1:9",
        "MODELSCOPE_CACHE": str(tmp_path / "ms-cache"),
        # Fewer of modelscope's retries and backoffs, to keep the tests short.
        "MODELSCOPE_REPO_TREE_PAGE_MAX_ATTEMPTS": "1",
        "MODELSCOPE_DOWNLOAD_MAX_RETRIES": "1",
        "MODELSCOPE_API_MAX_RETRIES": "1",
        "COLUMNS": "300",  # keep each message on one physical line for the assertions
    }
