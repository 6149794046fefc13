"""Every error the API answers is JSON `{"detail": "one line"}` with its 4xx/5xx status; the handlers live here."""
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException


class ApiError(Exception):
    """An error with its HTTP status and a one-line message for the client."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def validation_message(errors: list[dict[str, Any]]) -> str:
    """FastAPI's validation error list -> one line a person can act on."""
    parts = []
    for error in errors:
        field = str(error.get("loc", ("", "?"))[-1])
        if error.get("type") == "missing" and field in ("file", "files"):
            parts.append(f"no image: send it as the multipart/form-data field '{field}'")
        else:
            parts.append(f"{field}: {error.get('msg', 'invalid value')}")
    return "; ".join(parts) or "invalid request"


async def api_error(request: Request, error: ApiError) -> JSONResponse:
    headers = {"retry-after": "1"} if error.status == 503 else None
    return JSONResponse({"detail": error.message}, status_code=error.status, headers=headers)


async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
    return JSONResponse({"detail": validation_message(list(error.errors()))}, status_code=422)


async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
    return JSONResponse({"detail": str(error.detail)}, status_code=error.status_code, headers=error.headers)


async def unexpected(request: Request, error: Exception) -> JSONResponse:
    # the traceback goes to the server log; the client still gets JSON
    return JSONResponse({"detail": f"internal error ({type(error).__name__}); see the server log"}, status_code=500)


def add_error_handlers(app: FastAPI) -> None:
    """Answer our errors, validation failures, HTTP errors (404, 405, 413) and crashes as one-line JSON."""
    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)
