"""The documentation runs as written: every ``cgkd ...`` line in a fenced block parses, the README's Python runs."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from cgkd.cli.main import build_parser

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def fenced_blocks(path: Path):
    """``(language, first line number, lines)`` of every fenced code block of a Markdown file."""
    blocks, lang, start, body = [], None, 0, None
    for number, line in enumerate(path.read_text().splitlines(), 1):
        fence = re.match(r"\s*```(\S*)", line)
        if fence and body is None:
            lang, start, body = fence.group(1), number + 1, []
        elif fence:
            blocks.append((lang, start, body))
            body = None
        elif body is not None:
            body.append(line)
    if body is not None:
        raise ValueError(f"{path.name}: the code block opened at line {start - 1} is never closed")
    return blocks


def cli_lines(path: Path):
    """``(line number, command)`` of every ``cgkd`` command in the fenced blocks of ``path``.

    Continuation lines (trailing backslash) are joined; trailing ``# comments`` are dropped by shlex.
    """
    out = []
    for _, start, body in fenced_blocks(path):
        i = 0
        while i < len(body):
            number, line = start + i, body[i].strip()
            while line.endswith("\\") and i + 1 < len(body):
                i += 1
                line = line[:-1] + " " + body[i].strip()
            if line.startswith("cgkd "):
                out.append((number, line))
            i += 1
    return out


CASES = [(f"{p.relative_to(ROOT)}:{n}", line) for p in DOCS for n, line in cli_lines(p)]


def test_the_docs_have_cli_lines():
    assert len(CASES) >= 10
    verbs = {shlex.split(line, comments=True)[1] for _, line in CASES}
    assert {"aa", "map", "teachers", "distill", "export", "simulate", "compare", "run"} <= verbs


@pytest.mark.parametrize("where, line", CASES, ids=[w for w, _ in CASES])
def test_cli_line_parses(where, line, capsys):
    argv = shlex.split(line, comments=True)[1:]
    try:
        args = build_parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"{where}: {line!r} does not parse: {capsys.readouterr().err.strip()}")
    assert args.verb == argv[0]


def test_a_wrong_line_is_caught(capsys):
    with pytest.raises(SystemExit):  # the README's old export line: a folder and no --cg
        build_parser().parse_args(shlex.split("export runs/student --out runs/student.pt"))
    assert "--cg" in capsys.readouterr().err


def test_fenced_blocks_and_continuations(tmp_path):
    md = tmp_path / "x.md"
    md.write_text("text `cgkd inline`\n```bash\ncgkd run a \\\n   --dir b  # c\necho\n```\n    cgkd indented\n")
    assert cli_lines(md) == [(3, "cgkd run a  --dir b  # c")]
    md.write_text("```\ncgkd run a\n")
    with pytest.raises(ValueError, match="never closed"):
        cli_lines(md)


def readme_python() -> str:
    blocks = [body for lang, _, body in fenced_blocks(ROOT / "README.md") if lang == "python"]
    assert len(blocks) == 1, "the README should have one Python example"
    return "\n".join(blocks[0])


def test_readme_python_example_runs(tmp_path, monkeypatch):
    code = readme_python()
    assert code.splitlines()[0] == "import cgkd"
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    cg, report = namespace["cg"], namespace["report"]
    assert cg.n_beads == 60 and cg.n_frames == 30 and list(cg.type_names) == ["W"]
    assert report["force_map"] == "optimal"
    from cgkd.data.cg_h5 import read_cg

    again = read_cg(tmp_path / "cg.h5")
    assert again.n_frames == cg.n_frames and again.masses.tolist() == cg.masses.tolist()
    assert abs(float(cg.masses[0]) - 18.015) < 0.01  # a water bead weighs a water molecule (AA masses used)
