"""The engine of a terminal command (`infer`, `chat`): built-in on a thread of its own, or vLLM's.

Apart from serve/model.py because it picks an engine backend, and a backend (engine/vllm.py,
engine/remote.py) loads its model through serve/model.py: imports run engine -> model, never back.
"""

from __future__ import annotations

from swiftkit.console import console
from swiftkit.serve.config import EngineConfig
from swiftkit.serve.model import load_served_model


def terminal_engine(cfg: EngineConfig, command: str):
    """(served model, engine) for a terminal command (`infer`, `chat`) that runs the engine on a thread of its own.

    Named adapters are a server feature: the model (an adapter artifact included) is `--model`.
    """
    if cfg.adapter:
        console.print(f"[yellow]--adapter is ignored by {command}; pass the adapter as --model[/]")
    cfg = cfg.model_copy(update={"adapter": []})
    if cfg.engine == "vllm":
        from swiftkit.serve.engine.vllm import threaded_engine as vllm_threaded_engine

        return vllm_threaded_engine(cfg)
    from swiftkit.serve.engine.engine import Engine

    served = load_served_model(cfg)
    return served, served.build_engine(cfg, engine_cls=Engine)
