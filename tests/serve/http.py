"""A real uvicorn server on a free loopback port, in a thread, for tests that call the service over HTTP."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import uvicorn

from homefeed.config import Settings
from homefeed.features.redis_store import free_port
from homefeed.serve.api import create_app
from tests.serve.conftest import SERVE_DAY

#: The simulated world's clock: requests say when they happen (the world lives in another year).
SERVE_TIME = f"{SERVE_DAY:%Y-%m-%d}T14:00:00Z"


@contextmanager
def running(settings: Settings) -> Iterator[httpx.Client]:
    """Start the service for ``settings`` under uvicorn; yield a client for it; stop it (logs flushed)."""
    port = free_port()
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the service did not start")
            time.sleep(0.02)
        try:
            yield client
        finally:
            server.should_exit = True
            thread.join(timeout=30)


def feed(client: httpx.Client, user_id: int, **body: object) -> httpx.Response:
    context = body.pop("context", {"ts": SERVE_TIME, "country": "US"})
    return client.post("/v1/feed", json={"user_id": int(user_id), "context": context, **body})
