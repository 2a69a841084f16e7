"""One exception family for the server, one error shape on the wire: OpenAI's `{"error": {...}}`.

Client mistakes are `SwiftkitError`s with the right status; validation errors become 400 naming the
field; anything else is a 500 that is logged and never kills the server.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from swiftkit.console import console
from swiftkit.errors import SwiftkitError


class BadRequest(SwiftkitError):
    status = 400
    type = "invalid_request_error"

    def __init__(self, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.param, self.code = param, code


class AuthError(BadRequest):
    status = 401
    type = "authentication_error"


class ModelNotFound(BadRequest):
    status = 404
    type = "not_found_error"


class Overloaded(BadRequest):
    status = 429
    type = "rate_limit_error"


class TooLarge(BadRequest):
    status = 413


class Unavailable(BadRequest):
    status = 503
    type = "service_unavailable"


class ClientGone(BadRequest):
    """The client disconnected before its response: nothing is sent, metrics count it as 499 (nginx's code)."""

    status = 499


# Every status the API answers with besides 200, with its meaning (the OpenAPI document lists them).
ERROR_STATUSES = {
    400: "Invalid request (a field, a prompt longer than the context, a size limit)",
    401: "Missing, invalid, revoked or expired API key",
    403: "The key may not use this model, or this route needs an admin key",
    404: "Unknown model or route",
    413: "Request body larger than --max-request-bytes",
    429: "Request queue full, a key's rate limit (Retry-After, x-ratelimit-*), or its quota (insufficient_quota)",
    503: "Shutting down, or the engine process died",
}


def error_body(message: str, type_: str, param: str | None = None, code: str | int | None = None) -> dict:
    # A message may quote client text; JSON responses are UTF-8, so no lone surrogate may survive in it.
    message = message.encode("utf-8", "backslashreplace").decode("utf-8")
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def validation_response(errors: list) -> JSONResponse:
    """The first pydantic error as a 400 naming the field (`param` is its dotted path)."""
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    param = ".".join(loc) or None
    message = f"{param}: {first['msg']}" if param else str(first["msg"])
    return JSONResponse(error_body(message, "invalid_request_error", param), status_code=400)


def error_response(exc: SwiftkitError) -> JSONResponse:
    type_ = getattr(exc, "type", "invalid_request_error")
    body = error_body(exc.message, type_, getattr(exc, "param", None), getattr(exc, "code", None))
    return JSONResponse(body, status_code=exc.status)


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(SwiftkitError)
    async def _swiftkit(_: Request, exc: SwiftkitError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return validation_response(exc.errors())

    @app.exception_handler(ValidationError)
    async def _inner_validation(_: Request, exc: ValidationError) -> JSONResponse:
        # A handler that builds a request model from client data (/tokenize's messages, /v1/responses'
        # input items) raises this: still the client's mistake.
        return validation_response(exc.errors())

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        type_ = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        # keep the exception's headers: a 405 must say which methods are allowed (Allow)
        return JSONResponse(error_body(str(exc.detail), type_), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _bug(_: Request, exc: Exception) -> JSONResponse:
        console.print(f"[red]internal error:[/] {type(exc).__name__}: {exc}")
        return JSONResponse(error_body(f"internal error: {type(exc).__name__}", "internal_error"), status_code=500)
