"""/tokenize and /detokenize (vLLM's extras): what a prompt costs in tokens, and back to text."""

from __future__ import annotations

from fastapi import FastAPI

from swiftkit.serve.errors import BadRequest
from swiftkit.serve.generation import chat_messages
from swiftkit.serve.protocol import ChatCompletionRequest, DetokenizeRequest, DetokenizeResponse, TokenizeRequest, TokenizeResponse
from swiftkit.serve.state import ServerState


def install(app: FastAPI, state: ServerState) -> None:
    served = state.served

    def tokenize_ids(body: TokenizeRequest) -> list[int]:
        if body.messages is not None:
            text = served.render_chat(chat_messages(ChatCompletionRequest(model="x", messages=body.messages)),
                                      add_generation_prompt=body.add_generation_prompt)
            return served.encode(text, add_special_tokens=False)
        return served.encode(body.prompt or "", add_special_tokens=body.add_special_tokens)

    @app.post("/tokenize", response_model=TokenizeResponse)
    async def tokenize(body: TokenizeRequest) -> TokenizeResponse:
        if body.model:
            state.adapter_for(body.model)
        ids = await state.offload(tokenize_ids, body)
        return TokenizeResponse(count=len(ids), max_model_len=served.max_model_len, tokens=ids)

    @app.post("/detokenize", response_model=DetokenizeResponse)
    async def detokenize(body: DetokenizeRequest) -> DetokenizeResponse:
        if body.model:
            state.adapter_for(body.model)
        if any(not 0 <= t < state.vocab_size for t in body.tokens):
            raise BadRequest(f"token ids must be in [0, {state.vocab_size})", param="tokens")
        return DetokenizeResponse(prompt=await state.offload(served.tokenizer.decode, body.tokens))
