"""Request body size limit, enforced before the body is parsed: 413 as problem details (FastAPI's own
`max_body_size` answers in text/plain). And uvicorn's 400 for a request it cannot parse (a
Content-Length smaller than the body sent, a malformed request line), as problem details too."""

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


def problem_http_protocol() -> type | str:
    """uvicorn's HTTP/1.1 protocol (httptools), answering a request it cannot parse with a 400 in
    problem details rather than text/plain. Such a request never reaches the app: with a
    Content-Length smaller than the body, the bytes past it are parsed as a next request and fail.
    Give it to uvicorn as `http=`; "auto" (uvicorn's own) where httptools is not installed."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:
        return "auto"

    class ProblemHttpToolsProtocol(HttpToolsProtocol):
        def send_400_response(self, msg: str) -> None:
            body = json.dumps(
                {
                    "type": "/problems/malformed-request",
                    "title": HTTPStatus(400).phrase,
                    "status": 400,
                    "detail": f"{msg} (for example a Content-Length that does not match the body)",
                }
            ).encode()
            content = [b"HTTP/1.1 400 Bad Request\r\n"]
            for name, value in self.server_state.default_headers:
                content += [name, b": ", value, b"\r\n"]
            content += [
                b"content-type: " + PROBLEM_MEDIA_TYPE.encode() + b"\r\n",
                b"content-length: " + str(len(body)).encode() + b"\r\n",
                b"connection: close\r\n\r\n",
                body,
            ]
            self.transport.write(b"".join(content))
            self.transport.close()

    return ProblemHttpToolsProtocol
