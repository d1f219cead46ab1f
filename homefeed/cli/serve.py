"""`homefeed serve`: the ranking service over HTTP (uvicorn), as many worker processes as asked behind one port."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Annotated

import typer

from homefeed.cli.common import ConfigOption, app, console, load_settings, require_positive, styled, wide_console
from homefeed.config import Settings


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


def served_demo(settings: Settings, warm_days: int, days: int) -> None:
    """The demo's last step: the production model served to the world for ``days`` more days, beside each baseline."""
    from homefeed.cli.sim import _outcome_table  # the demo's table, one row per policy
    from homefeed.pipeline.served import serve_days

    run = serve_days(settings, warm_days, days, on_step=lambda name: console.print(f"… {name}", style="dim"))
    last = run.first_day + dt.timedelta(days=days - 1)
    title = f"Days {run.first_day} .. {last}: the same world, forked after the random weeks, under each policy"
    wide_console().print(_outcome_table(run.results, title))
    flagged = [r.feature for r in run.skew if r.flagged]
    rows = max((r.rows for r in run.skew), default=0)
    verdict = (
        styled((f"{len(flagged)} flagged", "bold red"), f": {', '.join(flagged)}")
        if flagged
        else styled(("none flagged", "green"))
    )
    console.print(
        styled(
            f"skew check of the served days' logged feature vectors ({rows:,} impressions, {len(run.skew)} features): ",
            verdict,
        ),
        soft_wrap=True,
    )
    timings = ", ".join(f"{k} {s:.1f} s" for k, s in run.seconds.items())
    console.print(f"steps: {timings}; the served days' lake and logs are under {run.root}", soft_wrap=True)
