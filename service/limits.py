"""Request body size limit, enforced before the body is parsed: 413 as problem details (FastAPI's own
`max_body_size` answers in text/plain)."""

import json
from http import HTTPStatus

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.problems import PROBLEM_MEDIA_TYPE


class BodySizeLimitMiddleware:
    """Reject bodies over `max_bytes`: from Content-Length when given, else while reading the stream."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    def _detail(self) -> str:
        return f"request bodies are limited to {self.max_bytes} bytes"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # A Content-Length that is not a number (HTTP servers refuse those themselves) is no claim of
        # size: the limit then applies while the body streams in, as without the header.
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self._reject(scope, send)
            return
        received = 0

        async def counting_receive() -> Message:
            # Raised inside the body read, an HTTPException reaches the problem handlers as a 413.
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise HTTPException(413, self._detail())
            return message

        await self.app(scope, counting_receive, send)

    async def _reject(self, scope: Scope, send: Send) -> None:
        body = json.dumps(
            {
                "type": "about:blank",
                "title": HTTPStatus(413).phrase,
                "status": 413,
                "detail": self._detail(),
                "instance": scope["path"],
            }
        ).encode()
        headers = [
            (b"content-type", PROBLEM_MEDIA_TYPE.encode()),
            (b"content-length", str(len(body)).encode()),
        ]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})
