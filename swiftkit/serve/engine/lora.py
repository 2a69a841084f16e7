"""The LoRA adapters a runner serves: PEFT holds them, this keeps the names and loads / unloads at run time.

Both runners batch rows of different adapters (one name per row or token; rows with no adapter run the base):
the plain one through PEFT's mixed-adapter batch in the transformers forward, the fast ones (paged and slot
cache) with the adapters' weights stacked per projection (LoraStack) next to the fused base projections.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from swiftkit.serve.engine.request import Request

BASE_ADAPTER = "__base__"  # PEFT's name for "no adapter" in a mixed-adapter batch


class AdapterHost:
    def host_adapters(self, model, multi_adapter: bool) -> None:
        """`model`: the runner's model (a PeftModel once an adapter is loaded); `adapters`: the loaded names, empty
        without `multi_adapter` (no mixed batch: a plain model, or PEFT's active adapter in training rollouts)."""
        self.model = model
        self.adapters: set[str] = set(getattr(model, "peft_config", {})) if multi_adapter else set()

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
        try:
            self.adapters_changed()
        except Exception:  # the runner cannot serve it: as if it was never loaded
            self.unload_adapter(name)
            raise

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


DENSE_RANKS = 512  # adapters x rank up to this: every row runs every adapter's A and keeps its own (no gather, no loop)


def stackable(model) -> bool:
    """Every LoRA layer of the model is plain LoRA (LoraStack can hold it: no DoRA or other variant, no LoRA bias)."""
    return all(LoraStack.plain(m) for m in model.modules() if hasattr(m, "lora_A") and hasattr(m, "base_layer"))


class LoraBatch:
    """One forward's adapters: each row's (decode) or token's (prefill) index into the stacks, 0 for none.

    `index` may be a CUDA graph's static buffer: the masks are computed from it inside the forward, so a replay
    sees the rows' new adapters; only eager prefills loop over the adapters present (data-dependent shapes)."""

    def __init__(self, index: torch.Tensor, decode: bool):
        self.index = index
        self.decode = decode
        self._masks: dict[tuple[int, int, torch.dtype], torch.Tensor] = {}
        self._groups: list[tuple[int, torch.Tensor]] | None = None

    def mask(self, adapters: int, rank: int, dtype: torch.dtype) -> torch.Tensor:
        """[rows, adapters * rank]: 1 where the column belongs to the row's own adapter."""
        key = (adapters, rank, dtype)
        if key not in self._masks:
            owner = torch.arange(1, adapters + 1, device=self.index.device).repeat_interleave(rank)
            self._masks[key] = (self.index[:, None] == owner[None]).to(dtype)
        return self._masks[key]

    def groups(self) -> list[tuple[int, torch.Tensor]]:
        """(adapter index, its rows) for each adapter present."""
        if self._groups is None:
            self._groups = [(int(k), (self.index == k).nonzero()[:, 0]) for k in self.index.unique().tolist() if k]
        return self._groups


class LoraStack:
    """Every served adapter's LoRA of one projection, stacked: [adapters + 1, rank, in] and [adapters + 1, out, rank]
    (index 0 is zeros: no adapter; ranks padded with zeros; B carries the scaling), in the projection's dtype.

    Why not PEFT's mixed batch: per layer and step it loops over the adapters present (a gather, two matmuls and a
    scatter each). Here, with few adapters x rank, two dense matmuls serve every row (each row runs all the A's and
    keeps its own block, which then meets only its own B); otherwise decode rows gather their own A and B (one
    pair of batched matmuls) and prefill loops over the adapters present. The base projections stay fused."""

    def __init__(self, a: torch.Tensor, b: torch.Tensor):
        self.a, self.b = a, b
        adapters, rank = a.shape[0] - 1, a.shape[1]
        self.dense = adapters * rank <= DENSE_RANKS
        if self.dense:
            self.a_cat = a[1:].reshape(adapters * rank, -1)  # [adapters * rank, in]
            self.b_cat = b[1:].permute(1, 0, 2).reshape(b.shape[1], adapters * rank)  # [out, adapters * rank]

    @staticmethod
    def plain(module) -> bool:
        return not getattr(module, "lora_variant", {}) and all(b.bias is None for b in module.lora_B.values())

    @classmethod
    def of(cls, module, order: Sequence[str]) -> LoraStack | None:
        """The stack of a PEFT LoRA layer; None when it holds something else than plain LoRA (DoRA and the other
        variants, a LoRA bias): PEFT's own mixed batch runs that layer."""
        if not cls.plain(module):
            return None
        names = [n for n in order if n in module.lora_A]
        base = module.base_layer
        weight = base.weight
        rank = max((module.lora_A[n].weight.shape[0] for n in names), default=1)
        a = torch.zeros(len(order) + 1, rank, base.in_features, dtype=weight.dtype, device=weight.device)
        b = torch.zeros(len(order) + 1, base.out_features, rank, dtype=weight.dtype, device=weight.device)
        for i, name in enumerate(order, 1):
            if name in module.lora_A:
                r = module.lora_A[name].weight.shape[0]
                a[i, :r] = module.lora_A[name].weight.detach()
                b[i, :, :r] = module.lora_B[name].weight.detach() * module.scaling[name]
        return cls(a, b)

    def delta(self, x: torch.Tensor, batch: LoraBatch) -> torch.Tensor:
        if self.dense:
            mask = batch.mask(self.a.shape[0] - 1, self.a.shape[1], x.dtype)
            return ((x @ self.a_cat.T) * mask) @ self.b_cat.T
        if batch.decode:
            idx = batch.index
            return torch.bmm(self.b[idx], torch.bmm(self.a[idx], x[:, :, None]))[:, :, 0]
        out = x.new_zeros(x.shape[0], self.b.shape[1])
        for k, rows in batch.groups():
            out[rows] = (x[rows] @ self.a[k].T) @ self.b[k].T
        return out
