"""Server-sent events: one `data:` event per object, a stream's late error as an error event."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from fastapi.responses import StreamingResponse

from swiftkit.errors import SwiftkitError
from swiftkit.serve.errors import error_body
from swiftkit.serve.usage import record_error


def sse(obj) -> str:
    payload = obj if isinstance(obj, str) else obj.model_dump_json(exclude_none=True)
    return f"data: {payload}\n\n"


def streaming(body: AsyncIterator[str]) -> StreamingResponse:
    async def events() -> AsyncIterator[str]:
        try:
            async for piece in body:
                yield piece
        except SwiftkitError as exc:  # after the 200 went out (e.g. the engine died): an error event ends the stream
            type_ = getattr(exc, "type", "invalid_request_error")
            record_error(type_)
            err = error_body(exc.message, type_, getattr(exc, "param", None), getattr(exc, "code", None))
            yield f"data: {json.dumps(err)}\n\n"

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


async def batched(events: AsyncIterator[str], has_pending) -> AsyncIterator[str]:
    """Join the SSE events that are ready at once into one write (still one event per token on the
    wire): when the server lags behind the engine, fewer, larger writes let it catch up."""
    ready: list[str] = []
    async for event in events:
        ready.append(event)
        if not has_pending():
            yield "".join(ready)
            ready = []
    if ready:
        yield "".join(ready)
