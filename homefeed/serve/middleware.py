"""The service's one middleware, as plain ASGI: a request body over the limit is a 413, and answers name their worker.

Why not ``@app.middleware("http")``: Starlette's `BaseHTTPMiddleware` runs each request in an extra task and
copies the response stream through it, about 0.2 ms a request here, a sizeable share of a feed answer's budget.
"""

from __future__ import annotations

import json
import os

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyLimit:
    """Refuse bodies over ``limit`` bytes (by their declared length, or as read when none is declared)."""

    def __init__(self, app: ASGIApp, limit: int):
        self.app = app
        self.limit = limit
        self.worker = str(os.getpid()).encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if length is not None and length.isdigit() and int(length) > self.limit:
            await self._refuse(send, int(length))
            return
        if scope["method"] == "POST" and length is None:  # streamed: read it all (up to the limit) before the app
            chunks, size, more = [], 0, True
            while more:
                message = await receive()
                if message["type"] != "http.request":
                    break
                chunks.append(message.get("body", b""))
                size += len(chunks[-1])
                more = message.get("more_body", False)
                if size > self.limit:
                    await self._refuse(send, size, streamed=True)
                    return
            body = b"".join(chunks)
            replayed = False

            async def receive_body() -> Message:
                nonlocal replayed
                if not replayed:
                    replayed = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()

            receive = receive_body

        async def send_named(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-homefeed-worker", self.worker)]
            await send(message)

        await self.app(scope, receive, send_named)

    async def _refuse(self, send: Send, size: int, streamed: bool = False) -> None:
        what = f"more than {self.limit}" if streamed else str(size)
        body = json.dumps({"error": f"request body of {what} bytes is over the limit of {self.limit}"}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})
