"""Charts in the evaluation reports: Plotly figures that work offline, beside a table of the same numbers.

Plotly because DESIGN.md names it for every chart (the dashboard shows the same figures) and a reader gets each
point's values on hover.  A report's page loads ``plotly.min.js`` from its own folder, written there once from
the installed package (`write_plotly_js`), never from a CDN: a report opened on a laptop without a network, or
archived for a year, still draws.  Plotly writes a figure's JSON with ``<``, ``>`` and ``/`` escaped, so no value
can close the script; every text we put in a figure is HTML-escaped as well, because plotly.js renders a subset
of HTML in names and labels.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

from homefeed.evaluate.metrics import Reliability
from homefeed.evaluate.pages import escape
from homefeed.files import atomic_write_text

PLOTLY_JS = "plotly.min.js"


def write_plotly_js(directory: str | Path) -> Path:
    """plotly.js beside the reports in ``directory``, written once (again only when the installed Plotly differs)."""
    from plotly.offline import get_plotlyjs

    path = Path(directory) / PLOTLY_JS
    script = get_plotlyjs()
    if not path.is_file() or path.stat().st_size != len(script.encode("utf-8")):
        atomic_write_text(path, script)
    return path


def _number(x: float) -> float | None:
    """JSON-ready: NaN (an empty bin) becomes null, which JSON has and Plotly draws as a gap."""
    return None if x is None or not math.isfinite(x) else float(x)


def curve_record(curve: Reliability, ece: float) -> dict:
    """A reliability curve as the reports store it: per bin its edges, rows, mean predicted and observed rate [CI]."""
    return {
        "edges": [float(e) for e in curve.edges],
        "count": [int(c) for c in curve.count],
        "predicted": [_number(p) for p in curve.predicted],
        "observed": [_number(o.value) for o in curve.observed],
        "observed_low": [_number(o.low) for o in curve.observed],
        "observed_high": [_number(o.high) for o in curve.observed],
        "ece": _number(ece),
    }


def reliability_figure(curves: Mapping[str, dict], title: str) -> str:
    """The reliability diagram of each named model (`curve_record`s) as an HTML fragment: mean predicted
    probability per bin against the observed rate with its interval, and the diagonal a calibrated model follows."""
    import plotly.graph_objects as go
    import plotly.io as pio

    fig = go.Figure()
    top = 0.0
    for name, c in curves.items():
        shown = [i for i, n in enumerate(c["count"]) if n > 0 and None not in (c["predicted"][i], c["observed"][i])]
        x = [c["predicted"][i] for i in shown]
        y = [c["observed"][i] for i in shown]
        high = [c["observed_high"][i] for i in shown]
        low = [c["observed_low"][i] for i in shown]
        up = [0.0 if h is None else h - v for h, v in zip(high, y, strict=True)]
        down = [0.0 if lo is None else v - lo for lo, v in zip(low, y, strict=True)]
        hover = [
            f"{c['edges'][i]:.1f}–{c['edges'][i + 1]:.1f}: {c['count'][i]:,} rows, "
            f"predicted {c['predicted'][i]:.4f}, observed {c['observed'][i]:.4f}"
            for i in shown
        ]
        ece = f"ECE {c['ece']:.4f}" if c.get("ece") is not None else "ECE unknown"
        fig.add_trace(
            go.Scatter(
                x=x,
                y=y,
                mode="lines+markers",
                name=escape(f"{name} ({ece})"),
                error_y={"type": "data", "symmetric": False, "array": up, "arrayminus": down},
                text=[escape(h) for h in hover],
                hoverinfo="text",
            )
        )
        top = max([top, *x, *(a + b for a, b in zip(y, up, strict=True))])
    top = min(1.0, top * 1.05) or 1.0
    fig.add_trace(
        go.Scatter(x=[0, top], y=[0, top], mode="lines", name="calibrated", line={"dash": "dash", "color": "grey"})
    )
    fig.update_layout(
        title=escape(title),
        xaxis_title="mean predicted probability (per bin)",
        yaxis_title="observed rate [95% CI]",
        template="simple_white",
        width=720,
        height=480,
    )
    return pio.to_html(fig, full_html=False, include_plotlyjs="directory", default_width="720px")


def reliability_table(curves: Mapping[str, dict]) -> str:
    """The numbers behind the chart, one row per model and non-empty bin."""
    rows = []
    for name, c in curves.items():
        for i, n in enumerate(c["count"]):
            if n == 0 or c["observed"][i] is None:
                continue
            low, high = c["observed_low"][i], c["observed_high"][i]
            ci = f" [{low:.4f}, {high:.4f}]" if low is not None and high is not None else ""
            rows.append(
                f"<tr><td>{escape(name)}</td><td>{c['edges'][i]:.1f}–{c['edges'][i + 1]:.1f}</td><td>{n:,}</td>"
                f"<td>{c['predicted'][i]:.4f}</td><td>{c['observed'][i]:.4f}{ci}</td></tr>"
            )
    head = "".join(f"<th>{h}</th>" for h in ("model", "bin", "rows", "mean predicted", "observed [95% CI]"))
    return f"<table><tr>{head}</tr>\n{''.join(rows)}</table>"
