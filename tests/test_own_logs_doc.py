"""The own-logs walkthrough (docs/own_logs.md) runs as written, on the bundled sample.

A user copies its files and types its commands; when a command, a flag or a declared feature changes, the page
must change with it. So the test takes the files and the commands from the page itself, runs them in order in
an empty folder, and checks that each ends as the page shows and that the review prints the page's figures.
"""

from __future__ import annotations

import re
import runpy
import shlex
import sys
from pathlib import Path

from homefeed.cli import main

DOC = Path(__file__).resolve().parents[1] / "docs" / "own_logs.md"
#: A file the page asks for: its name in bold code, then its fenced block.
FILE = re.compile(r"^\*\*`(?P<name>[\w.]+)`\*\*[^\n]*\n\n```\w*\n(?P<body>.*?)\n```", re.S | re.M)
#: A command block: the command, its output, and ``$ echo $?`` with the exit code where it is not 0.
COMMAND = re.compile(r"^```console\n\$ (?P<command>[^\n]+)\n(?P<output>.*?)\n```", re.S | re.M)
BUILT = re.compile(r"dataset ([0-9a-f]{16}) written")


def documented() -> tuple[dict[str, str], list[tuple[str, str, int]]]:
    text = DOC.read_text(encoding="utf-8")
    files = {m["name"]: m["body"] for m in FILE.finditer(text)}
    commands = []
    for m in COMMAND.finditer(text):
        output, _, code = m["output"].partition("\n$ echo $?\n")
        commands.append((m["command"], output, int(code or 0)))
    return files, commands


def test_the_page_names_its_files_and_commands():
    files, commands = documented()
    assert set(files) == {"homefeed.toml", "builtin.toml", "gates.toml", "affinity_check.py", "ope.py"}
    assert [c.split()[1] for c, _, _ in commands] == [
        "ingest", "data", "features", "affinity_check.py", "dataset", "dataset", "train", "train", "launch",
        "ope.py", "models", "models",
    ]  # fmt: skip


def test_the_walkthrough_runs_as_written(tmp_path, monkeypatch, capsys):
    files, commands = documented()
    for name, body in files.items():
        (tmp_path / name).write_text(body + "\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "118")
    ids: dict[str, str] = {}  # the page's dataset ids -> this run's (the same unless an input's bytes differ)
    for command, shown, code in commands:
        for page_id, built in ids.items():
            command = command.replace(page_id, built)
        argv = shlex.split(command)
        if argv[0] == "python":
            monkeypatch.setattr(sys, "argv", argv[1:])
            runpy.run_path(argv[1], run_name="__main__")
            got = 0
        else:
            got = main(argv[1:])
        out = capsys.readouterr().out
        ids.update(zip(BUILT.findall(shown), BUILT.findall(out), strict=True))
        if argv[1] == "launch":
            # the verdict may differ only on the predict-latency budget, which is the machine's, not the model's
            broken = [line for line in out.splitlines() if line.lstrip().startswith("✗")]
            assert got in (0, 1) and all("predict p99" in line for line in broken), out
            figures = [line for line in shown.splitlines() if line.startswith(("│ auc", "│ log_loss"))]
            assert figures and all(line in out for line in figures), out
        else:
            assert got == code, f"{command}: exit {got}, the page shows {code}\n{out}"
        if argv[1] == "train":
            assert "negative dropped: label 'negative' never occurs" in " ".join(out.split()), out
        if argv[1] == "affinity_check.py":  # the page's point-in-time findings are read off this output
            assert out.rstrip("\n") == shown, out
        if argv[1] == "ope.py":
            for estimator in ("ips", "snips", "dm", "dr", "sndr"):
                assert len(re.findall(rf"^  {estimator} +0\.\d{{4}} \[", out, re.M)) == 2, out
