"""docs/tutorial.md runs as written: its Python blocks in order in one namespace, its `$ certkit ...` commands through
the CLI, all in an empty folder. Each block asserts what the page claims (accuracy, agreement of the Python API with
the command line, bounds that contain the outputs at sampled points)."""
from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

from click.testing import CliRunner

from certkit.cli import main as cli

PAGE = Path(__file__).resolve().parents[1] / "docs" / "tutorial.md"


def blocks(text: str) -> list[tuple[str, str]]:
    """(language, code) of each fenced block of ``text``, in order."""
    return [(m.group(1), m.group(2)) for m in re.finditer(r"^```(\w+)\n(.*?)^```", text, re.S | re.M)]


def test_tutorial_runs_as_written(tmp_path, monkeypatch):
    found = blocks(PAGE.read_text())
    assert [lang for lang, _ in found].count("console") >= 2 and len(found) >= 6
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    namespace: dict = {"__name__": "tutorial"}
    sys.modules.pop("mynets", None)   # another test's module of that name, imported from its own folder
    try:
        for lang, code in found:
            if lang == "python":
                exec(compile(code, f"{PAGE.name} block", "exec"), namespace)
            elif lang == "console":
                for line in code.splitlines():
                    assert line.startswith("$ certkit "), line
                    result = CliRunner().invoke(cli, shlex.split(line)[2:])
                    assert result.exit_code == 0, (line, result.output)
    finally:
        sys.modules.pop("mynets", None)
    assert Path("smoothing.tsv").is_file() and Path("verify.tsv").is_file()
