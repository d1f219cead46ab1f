"""`homefeed serve`: the ranking service over HTTP (uvicorn), as many worker processes as asked behind one port."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from homefeed.cli.common import ConfigOption, app, console, load_settings, require_positive


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on (default: serve.host).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: serve.port; 0 picks a free one).")] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes (default: serve.workers).")] = None,
    config: ConfigOption = None,
) -> None:
    """Serve feeds over HTTP: POST /v1/feed, POST /v1/events, /healthz, /readyz, /metrics; OpenAPI at /docs."""
    import uvicorn

    require_positive("workers", workers)
    settings = load_settings(config)
    s = settings.serve
    if config is not None:  # every worker process loads the same project file
        os.environ["HOMEFEED_CONFIG"] = str(Path(config).resolve())
    host, port, workers = host or s.host, s.port if port is None else port, workers or s.workers
    console.print(f"serving {s.model!r} on http://{host}:{port} with {workers} worker(s); OpenAPI at /docs")
    uvicorn.run(
        "homefeed.serve.api:app_factory",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=10,
    )
