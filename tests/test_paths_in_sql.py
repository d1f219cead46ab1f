"""Paths never become SQL text: a project folder may hold any character, and none may change what SQL does.

Issue 12: a root with an apostrophe broke the ETL, and a crafted one made DuckDB write a file of the
attacker's choosing, because paths were spliced into ``read_parquet(['...'])``, ``SET temp_directory`` and
``COPY ... TO '...'``.  Paths now travel as values (DuckDB relations, prepared parameters, connection
settings); the hunt below keeps the spliced form from coming back.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from homefeed.cli import main
from homefeed.data.lake import Lake

PACKAGE = Path(__file__).resolve().parents[1] / "homefeed"

#: SQL that reads or writes files, or sets where files go.
FILE_SQL = re.compile(
    r"read_(parquet|csv|csv_auto|json|json_auto|text|blob)\b|parquet_scan|\bcopy\b|temp_directory|\battach\b|"
    r"\bexport\s+database|\bimport\s+database|\bglob\s*\(|secret_directory|extension_directory|home_directory",
    re.IGNORECASE,
)
SQL = re.compile(r"\b(select|from|create|copy|set|insert|attach|view|table)\b", re.IGNORECASE)
#: Names that hold paths, in the expressions spliced into a string.
PATHLIKE = re.compile(r"path|file|folder|dir|root|spill|tmp|temp|target|location|staging|out\b|source", re.I)


def _parts(node: ast.JoinedStr) -> list[tuple[str, str | None]]:
    """An f-string as (literal text, None) and (quote context, expression source) pieces, in order."""
    out: list[tuple[str, str | None]] = []
    for value in node.values:
        if isinstance(value, ast.Constant):
            out.append((str(value.value), None))
        elif isinstance(value, ast.FormattedValue):
            out.append(("", ast.unparse(value.value)))
    return out


def hunt(source: str, name: str = "<snippet>") -> list[str]:
    """Every f-string (or ``str.format`` call) of ``source`` that splices a value into SQL as a path could be."""
    findings = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.JoinedStr):
            parts = _parts(node)
            text = "".join(t for t, _ in parts)
            exprs = [e for _, e in parts if e is not None]
            quoted = []  # expressions spliced inside '...': the shape of a SQL string literal
            inside = False
            for literal, expr in parts:
                if expr is None:
                    inside ^= literal.count("'") % 2 == 1
                elif inside:
                    quoted.append(expr)
            reason = None
            if FILE_SQL.search(text) and (quoted or any(PATHLIKE.search(e) for e in exprs)):
                reason = "a file-reading or -writing SQL statement with a spliced value"
            elif quoted and text.strip(" ,'") == "":
                reason = "a value quoted as a SQL literal (how a list of paths became SQL text)"
            elif any(PATHLIKE.search(e) for e in quoted) and SQL.search(text):
                reason = "a path-like value quoted inside SQL"
            if reason:
                findings.append(f"{name}:{node.lineno}: {reason}: {ast.unparse(node)[:100]}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "format":
            target = node.func.value
            if isinstance(target, ast.Constant) and isinstance(target.value, str) and FILE_SQL.search(target.value):
                findings.append(f"{name}:{node.lineno}: str.format into file SQL: {target.value[:80]}")
    return findings


@pytest.mark.parametrize(
    "snippet",
    [  # how the package spliced paths before issue 12; the hunt must catch each
        """files = ", ".join(f"'{f}'" for f in source)""",
        """con.execute(f"CREATE OR REPLACE TEMP VIEW {name} AS SELECT * FROM read_parquet([{files}])")""",
        """con.execute(f"SET temp_directory = '{spill}'")""",
        """con.execute(f"COPY ({sql}) TO '{directory}' (FORMAT parquet, PARTITION_BY ({partition_by}))")""",
        """union = f"SELECT '{split}' AS split, * FROM read_parquet('{path}')" """,
        """con.sql("SELECT * FROM read_parquet('{}')".format(path))""",
        """con.execute(f"ATTACH '{self.root / 'db.duckdb'}'")""",
    ],
)
def test_the_hunt_catches_every_way_paths_were_spliced_into_sql(snippet):
    assert hunt(snippet)


@pytest.mark.parametrize(
    "snippet",
    [
        """con.execute(f"COPY ({sql}) TO ? (FORMAT parquet)", [str(path)])""",
        """con.read_parquet([str(f) for f in files]).create_view(name)""",
        """f"WHEN day BETWEEN DATE '{first}' AND DATE '{last}' THEN '{name}'" """,
        """f"CAST(COUNT(*) FILTER (WHERE action = '{a}') AS BIGINT) AS {a}" """,
        """raise IngestError(f"{path}: cannot be read as {fmt}")""",
    ],
)
def test_the_hunt_leaves_values_passed_as_values_and_constant_literals_alone(snippet):
    assert hunt(snippet) == []


def test_no_module_of_the_package_splices_a_path_into_sql():
    findings = [f for path in sorted(PACKAGE.rglob("*.py")) for f in hunt(path.read_text("utf-8"), str(path))]
    assert findings == []


#: Project folders a user may have: an apostrophe and glob characters; a name crafted to end the string
#: literal a path used to be spliced into and write a file of its own.
ROOTS = [
    "it's [1] a *project*",
    "x'); COPY (SELECT 42 AS pwned) TO 'pwned.csv' (FORMAT csv); SELECT ('",
]


@pytest.mark.parametrize("name", ROOTS)
def test_a_project_anywhere_runs_ingest_etl_and_dataset_build(tmp_path, monkeypatch, capsys, name):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HOMEFEED_CONFIG", raising=False)
    root = tmp_path / name
    root.mkdir()
    config = root / "homefeed.toml"
    escaped = str(root).replace("\\", "\\\\").replace('"', '\\"')
    config.write_text(
        f'[paths]\nroot = "{escaped}/.homefeed"\n[sim]\nusers = 400\nitems_per_day = 150\ncreators = 60\n'
        "[etl]\nwindows = [1, 3]\n",
        encoding="utf-8",
    )
    cfg = ["-c", str(config)]
    logs = root / "logs"
    assert main(["sim", "run", "--days", "4", "--out", str(logs), *cfg]) == 0
    for table in ("users", "items", "impressions", "engagements"):
        assert main(["ingest", str(logs / table), "--table", table, *cfg]) == 0, capsys.readouterr().err
    assert main(["data", "etl", "--start", "2026-03-02", "--end", "2026-03-05", *cfg]) == 0, capsys.readouterr().err
    assert main(["dataset", "build", "--start", "2026-03-03", "--end", "2026-03-05", *cfg]) == 0, (
        capsys.readouterr().err
    )
    lake = Lake(root / ".homefeed" / "lake")
    assert lake.read("impressions").num_rows > 0
    datasets = [p for p in (root / ".homefeed" / "datasets").iterdir() if not p.name.startswith(".")]
    assert len(datasets) == 1 and (datasets[0] / "train.parquet").is_file()
    assert not list(tmp_path.rglob("pwned*")) and not list(Path.cwd().glob("pwned*"))
