"""ASGI middleware in front of every route: a request body limit, enforced before parsing, and security headers."""
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# the page may only talk to this server: no CDN, no inline script, previews from blob: URLs
SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; img-src 'self' blob: data:; object-src 'none'; "
                                 b"base-uri 'none'; frame-ancestors 'none'; form-action 'self'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]


class GuardMiddleware:
    """Refuse bodies over `max_body_bytes` with 413 (before parsing them) and add security headers."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int):
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_body_bytes
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > limit:
            response = JSONResponse({"detail": f"request body is {int(length)} bytes, over the {limit}-byte limit"},
                                    status_code=413, headers={"connection": "close"})
            await response(scope, receive, self._with_headers(send))
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:  # chunked uploads carry no Content-Length
                raise StarletteHTTPException(413, f"request body is over the {limit}-byte limit")
            return message

        await self.app(scope, counting_receive, self._with_headers(send))

    @staticmethod
    def _with_headers(send: Send) -> Send:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + SECURITY_HEADERS
            await send(message)

        return send_with_headers
