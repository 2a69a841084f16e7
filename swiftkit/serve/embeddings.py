"""Sentence embeddings for /v1/embeddings: mean-pooled last hidden states, L2-normalised.

Either the served model itself (its base weights: adapters are switched off for embeddings) or a
dedicated encoder given with --embedding-model (e.g. a sentence-transformers MiniLM directory;
mean pooling + normalisation is what that family's own pooling config does). Calls run on the engine
thread (`Engine.call`), so they never race a decode step over the same weights.
"""

from __future__ import annotations

import contextlib

import torch


class Embedder:
    def __init__(self, model, tokenizer, name: str, max_len: int, decoder_of_causal_lm: bool):
        self.model, self.tokenizer, self.name, self.max_len = model, tokenizer, name, max_len
        self._causal = decoder_of_causal_lm

    def __call__(self, batches: list[list[int]]) -> list[list[float]]:
        width = max(len(b) for b in batches)
        pad = self.tokenizer.pad_token_id or 0
        ids = torch.full((len(batches), width), pad, dtype=torch.long)
        mask = torch.zeros(len(batches), width, dtype=torch.long)
        for i, b in enumerate(batches):
            ids[i, : len(b)] = torch.tensor(b)
            mask[i, : len(b)] = 1
        device = next(self.model.parameters()).device
        with torch.inference_mode(), self._base_only():
            body = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
            if self._causal:
                body = body.get_decoder()
            hidden = body(input_ids=ids.to(device), attention_mask=mask.to(device)).last_hidden_state.float().cpu()
        summed = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        return torch.nn.functional.normalize(summed, dim=-1).tolist()

    def _base_only(self):
        return self.model.disable_adapter() if hasattr(self.model, "disable_adapter") else contextlib.nullcontext()


def load_embedder(ref: str | None, served) -> Embedder:
    if ref is None:
        return Embedder(served.model, served.tokenizer, served.name, served.max_model_len, decoder_of_causal_lm=True)
    from transformers import AutoModel, AutoTokenizer

    from swiftkit.resolve import resolve_model_ref

    mref = resolve_model_ref(ref)
    model = AutoModel.from_pretrained(mref.base_path).eval()
    tokenizer = AutoTokenizer.from_pretrained(mref.base_path)
    max_len = getattr(model.config, "max_position_embeddings", 512)
    return Embedder(model, tokenizer, ref, max_len, decoder_of_causal_lm=False)
