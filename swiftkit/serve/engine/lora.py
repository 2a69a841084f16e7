"""The LoRA adapters a runner serves: PEFT holds them, this keeps the names and loads / unloads at run time.

Both runners use PEFT's mixed-adapter batch (`adapter_names=[...]`, one name per row or token; rows with no
adapter run the base), the plain one through the transformers forward, the paged fast one in each LoRA layer.
"""

from __future__ import annotations

from collections.abc import Sequence

from swiftkit.serve.engine.request import Request

BASE_ADAPTER = "__base__"  # PEFT's name for "no adapter" in a mixed-adapter batch


class AdapterHost:
    model: object  # the runner's model: a PeftModel once an adapter is loaded
    adapters: set[str]  # the loaded adapter names; empty: no mixed batch (plain model, or PEFT's active adapter)

    def adapter_names(self, requests: Sequence[Request], counts: Sequence[int] | None = None) -> list[str] | None:
        """One name per row (or per token: request i repeated counts[i] times); None when no adapter is loaded."""
        if not self.adapters:
            return None
        names = [r.adapter or BASE_ADAPTER for r in requests]
        if counts is None:
            return names
        return [name for name, n in zip(names, counts, strict=True) for _ in range(n)]

    def load_adapter(self, name: str, path: str) -> None:
        """A LoRA loaded at run time (the server's /v1/load_lora_adapter); on the engine thread, between steps."""
        from peft import PeftModel

        if self.adapters:
            self.model.load_adapter(path, adapter_name=name)
        else:
            self.model = PeftModel.from_pretrained(self.model, path, adapter_name=name)
        self.model.eval()
        self.adapters.add(name)
        self.adapters_changed()

    def unload_adapter(self, name: str) -> None:
        if self.adapters == {name}:
            # PEFT cannot run a PeftModel left without adapters: the last one goes back to the plain base.
            self.model = self.model.unload()
        else:
            self.model.delete_adapter(name)
        self.adapters.discard(name)
        self.adapters_changed()

    def adapters_changed(self) -> None:
        """PEFT wrapped or unwrapped projections (a runner with its own forward re-reads them)."""
