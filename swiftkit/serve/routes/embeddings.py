"""/v1/embeddings: mean-pooled vectors of the served model or of --embedding-model, on the engine thread."""

from __future__ import annotations

import base64

from fastapi import FastAPI

from swiftkit.serve.errors import BadRequest, ModelNotFound
from swiftkit.serve.protocol import EmbeddingData, EmbeddingRequest, EmbeddingResponse, Usage
from swiftkit.serve.state import ServerState
from swiftkit.serve.usage import record_tokens


def install(app: FastAPI, state: ServerState) -> None:
    @app.post("/v1/embeddings", response_model=EmbeddingResponse)
    async def embeddings(body: EmbeddingRequest) -> EmbeddingResponse:
        return await embedding_handler(state, body)


MAX_EMBEDDING_INPUTS = 2048
async def embedding_handler(state: ServerState, body: EmbeddingRequest) -> EmbeddingResponse:
    import numpy as np

    if body.model not in state.model_names() and body.model != state.served.ref.ref and body.model != getattr(state.embedder, "name", None):
        raise ModelNotFound(f"the model `{body.model}` does not exist", param="model", code="model_not_found")
    batches = await state.offload(_embedding_batches, state, body.input)
    vectors = []
    # Embeddings run on the engine thread between decode steps: in chunks of at most --max-batched-tokens
    # padded tokens, so a big request delays running streams by one chunk at a time, never by all of it.
    for chunk in _chunks(batches, state.limits.max_batched_tokens):
        vectors += await state.engine.embed(chunk)
    data = []
    for i, vec in enumerate(vectors):
        if body.dimensions:
            if body.dimensions > len(vec):
                raise BadRequest(f"dimensions must be at most {len(vec)} for this model", param="dimensions")
            # shortened as OpenAI does: the first `dimensions` values, normalised again
            vec = vec[: body.dimensions]
            norm = float(np.linalg.norm(vec)) or 1.0
            vec = [v / norm for v in vec]
        emb: list[float] | str = vec
        if body.encoding_format == "base64":
            emb = base64.b64encode(np.asarray(vec, dtype=np.float32).tobytes()).decode()
        data.append(EmbeddingData(index=i, embedding=emb))
    n = sum(len(b) for b in batches)
    record_tokens(n, 0)
    return EmbeddingResponse(data=data, model=body.model, usage=Usage(prompt_tokens=n, total_tokens=n))


def _chunks(batches: list[list[int]], budget: int) -> list[list[list[int]]]:
    chunks: list[list[list[int]]] = [[]]
    width = 0
    for ids in batches:
        width = max(width, len(ids))
        if chunks[-1] and width * (len(chunks[-1]) + 1) > budget:
            chunks.append([])
            width = len(ids)
        chunks[-1].append(ids)
    return chunks


def _embedding_batches(state: ServerState, inputs) -> list[list[int]]:
    """Token ids of each input, checked against the embedding model's vocabulary and length."""
    embedder = state.embedder
    tok = embedder.tokenizer
    if isinstance(inputs, str):
        batches = [tok(inputs)["input_ids"]]
    elif inputs and all(isinstance(x, int) for x in inputs):
        batches = [list(inputs)]
    elif all(isinstance(x, str) for x in inputs):
        batches = [tok(x)["input_ids"] for x in inputs]
    else:
        batches = [list(x) for x in inputs]
    if not batches or any(not b for b in batches):
        raise BadRequest("input must not be empty", param="input")
    if len(batches) > MAX_EMBEDDING_INPUTS:
        raise BadRequest(f"at most {MAX_EMBEDDING_INPUTS} inputs per request (as OpenAI), got {len(batches)}",
                              param="input")
    vocab = state.vocab_size if embedder.name == state.served.name else len(tok)
    if any(not 0 <= t < vocab for b in batches for t in b):
        raise BadRequest(f"input token ids must be in [0, {vocab})", param="input")
    if any(len(b) > embedder.max_len for b in batches):
        raise BadRequest(f"an input is longer than the embedding model's {embedder.max_len} tokens", param="input")
    return batches
