"""The evaluation reports as HTML: one self-contained page each, every value escaped.

Plain f-strings rather than a template engine: a handful of tables with no
markup from users, and ``html.escape`` covers everything a value could
inject.  The dashboard (a later stage) links these pages as they are.
"""

from __future__ import annotations

import html
from collections.abc import Iterable

BASE_STYLE = "body{font-family:sans-serif;margin:2em} td,th{padding:2px 8px;text-align:right;vertical-align:top}"
#: Tables whose first two columns (slice, metric) are text.
TWO_TEXT_COLUMNS = "td:first-child,td:nth-child(2){text-align:left}"


def escape(value: object) -> str:
    return html.escape(str(value))


def page(title: str, body: str, style: str = TWO_TEXT_COLUMNS) -> str:
    """A whole document: ``title`` (plain text, escaped here) as its title and heading, then ``body`` (markup)."""
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{escape(title)}</title>
<style>{BASE_STYLE} {style}</style>
</head><body>
<h1>{escape(title)}</h1>
{body}</body></html>
"""


def interval(e: dict) -> str:
    """An estimate (``value``, ``low``, ``high``) as a signed difference with its interval."""
    return f"{e['value']:+.4f} [{e['low']:+.4f}, {e['high']:+.4f}]"


def value(e: dict) -> str:
    """One model's estimate: its value, then its interval in small type when it has one (not with no replicates)."""
    low, high = e.get("low"), e.get("high")
    if low is None or high is None or low != low or high != high:  # NaN: no replicates to take an interval from
        return f"{e['value']:.4f}"
    return f"{e['value']:.4f} <small>[{low:.4f}, {high:.4f}]</small>"


def comparison_table(
    sections: Iterable[tuple[str, dict[str, dict]]], keys: tuple[str, str, str], headers: tuple[str, str, str]
) -> str:
    """Paired comparisons as one table: per (slice, metric), both sides' values and intervals, and the difference's.

    ``sections`` yields (slice name, {metric: {key: estimate}}); ``keys`` name the baseline, the other side and
    the difference in those dicts, ``headers`` the three value columns.
    """
    base, other, diff = keys
    rows = "".join(
        f"<tr><td>{escape(where)}</td><td>{escape(name)}</td><td>{value(c[base])}</td>"
        f"<td>{value(c[other])}</td><td>{interval(c[diff])}</td></tr>"
        for where, per in sections
        for name, c in per.items()
    )
    head = "".join(f"<th>{escape(h)}</th>" for h in ("slice", "metric", *headers))
    return f"<table><tr>{head}</tr>\n{rows}</table>"
