"""One exception family for the server, one error shape on the wire: OpenAI's `{"error": {...}}`.

Client mistakes are `SwiftkitError`s with the right status; validation errors become 400 naming the
field; anything else is a 500 that is logged and never kills the server.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
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


class Unavailable(BadRequest):
    status = 503
    type = "service_unavailable"


def error_body(message: str, type_: str, param: str | None = None, code: str | int | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


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
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        loc = [str(p) for p in first.get("loc", ()) if p != "body"]
        param = ".".join(loc) or None
        message = f"{param}: {first['msg']}" if param else str(first["msg"])
        return JSONResponse(error_body(message, "invalid_request_error", param), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        type_ = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return JSONResponse(error_body(str(exc.detail), type_), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def _bug(_: Request, exc: Exception) -> JSONResponse:
        console.print(f"[red]internal error:[/] {type(exc).__name__}: {exc}")
        return JSONResponse(error_body(f"internal error: {type(exc).__name__}", "internal_error"), status_code=500)
