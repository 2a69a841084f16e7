"""Adapters at run time, in vLLM's shape: POST /v1/load_lora_adapter and /v1/unload_lora_adapter (admin key;
the work is in serve/adapters.py)."""

from __future__ import annotations

from fastapi import FastAPI

from swiftkit.serve.errors import BadRequest
from swiftkit.serve.protocol import LoadLoraAdapterRequest, LoraAdapterStatus, UnloadLoraAdapterRequest
from swiftkit.serve.state import ServerState


def install(app: FastAPI, state: ServerState) -> None:
    listed = state.adapters is not None  # without --adapter-dir the routes only say how to turn them on

    def runtime():
        if state.adapters is None:
            raise BadRequest("adapters are not loaded at run time on this server: start it with --adapter-dir DIR "
                             "(the folder adapters may be loaded from)", code="runtime_adapters_off")
        return state.adapters

    @app.post("/v1/load_lora_adapter", response_model=LoraAdapterStatus, include_in_schema=listed)
    async def load_lora_adapter(body: LoadLoraAdapterRequest) -> LoraAdapterStatus:
        """Load a LoRA from a directory inside an --adapter-dir; it is served under `lora_name` once loaded."""
        path = await runtime().load(body.lora_name, body.lora_path)
        return LoraAdapterStatus(id=body.lora_name, status="loaded", root=str(path), parent=state.served.name)

    @app.post("/v1/unload_lora_adapter", response_model=LoraAdapterStatus, include_in_schema=listed)
    async def unload_lora_adapter(body: UnloadLoraAdapterRequest) -> LoraAdapterStatus:
        """Stop serving an adapter; answers once the requests already running on it have finished."""
        await runtime().unload(body.lora_name)
        return LoraAdapterStatus(id=body.lora_name, status="unloaded", parent=state.served.name)
