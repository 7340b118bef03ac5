"""The docs do not drift: the CLI reference is generated from the commands, and every `multiplexer`
command line in README.md and docs/ parses with the real CLI (commands and options exist, values
have the right types)."""

from __future__ import annotations

import importlib.util
import re
import shlex
from pathlib import Path

import click
import pytest

from pipeline.cli import cli

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _gen_cli_docs():
    spec = importlib.util.spec_from_file_location("gen_cli_docs", ROOT / "scripts" / "gen_cli_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_reference_is_current():
    assert (ROOT / "docs" / "cli.md").read_text() == _gen_cli_docs().render(), (
        "docs/cli.md is out of date: run `make docs-cli`"
    )


def _blocks(text: str) -> list[str]:
    """Fenced code blocks and indented (4-space) blocks of a Markdown text."""
    blocks, current, fenced = [], [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            if fenced:
                blocks.append("\n".join(current))
            current, fenced = [], not fenced
        elif fenced:
            current.append(line)
    indented = re.findall(r"((?:^    .*\n)+)", re.sub(r"```.*?```", "", text, flags=re.S), flags=re.M)
    return blocks + indented


def _command_lines() -> list[tuple[str, str]]:
    """``(file, command line)`` for every documented ``multiplexer …`` / ``-m pipeline.cli …`` call."""
    found = []
    for path in DOCS:
        for block in _blocks(path.read_text()):
            joined = re.sub(r"\\\n\s*", " ", block)
            for line in joined.splitlines():
                line = re.sub(r"\s+#(?!SBATCH).*$", "", line.strip())  # trailing comments
                if line.startswith("multiplexer ") or "-m pipeline.cli " in line:
                    found.append((path.name, line))
    return sorted(set(found))


def _shell_lines() -> list[tuple[str, str]]:
    """``(file, line)`` for every code line of README.md and docs/ that runs the tool, pipes included
    (``bcftools view … | multiplexer score-vcf --vcf -``)."""
    found = []
    for path in DOCS:
        for block in _blocks(path.read_text()):
            for line in re.sub(r"\\\n\s*", " ", block).splitlines():
                line = re.sub(r"\s+#(?!SBATCH).*$", "", line.strip())
                if re.search(r"(^|[|;&]\s*)(\w+=\S*\s+)*multiplexer\s|-m pipeline\.cli\s", line):
                    found.append((path.name, line))
    return sorted(set(found))


SHELL_OPERATORS = "<>|"
"""Characters the shell acts on when they are not quoted: a redirection or a pipe."""


def unquoted_operators(line: str) -> list[str]:
    """The words of a shell line that hold an unquoted ``>``, ``<`` or ``|`` (``chr8:1000000:A>G`` makes
    the shell write a file named ``G``; ``DNase|CTCF`` runs ``CTCF``).

    ``shlex`` splits the line twice: as the words a program receives, and with the operators as words
    of their own. A word holding an operator that the second split cut apart was not quoted. (A
    redirection written without a space, ``>out.txt``, is reported too: the docs write ``> out.txt``.)
    """
    words = shlex.split(line)
    lexer = shlex.shlex(line, posix=True, punctuation_chars=SHELL_OPERATORS)
    lexer.whitespace_split = True
    apart = set(lexer)
    return [w for w in words if any(c in w for c in SHELL_OPERATORS) and w not in apart]


def test_the_operator_check_finds_unquoted_metacharacters():
    assert unquoted_operators("multiplexer lookup c.zarr --variant chr8:1000000:A>G --out hit.tsv") == [
        "chr8:1000000:A>G"
    ]
    assert unquoted_operators("multiplexer catalogue --targets DNase|CTCF --out c.zarr") == ["DNase|CTCF"]
    assert unquoted_operators("multiplexer lookup c.zarr --variant 'chr8:1000000:A>G' --out hit.tsv") == []
    assert unquoted_operators('multiplexer lookup c.zarr --variant "chr8:1:A>G" --variant chr8:2:C\\>T') == []
    assert unquoted_operators("bcftools view x.bcf | multiplexer score-vcf --vcf - --out - > s.tsv") == []


SHELL_LINES = _shell_lines()


@pytest.mark.parametrize(("source", "line"), SHELL_LINES, ids=[f"{f}:{i}" for i, (f, _) in enumerate(SHELL_LINES)])
def test_documented_command_quotes_shell_metacharacters(source, line):
    bad = unquoted_operators(line)
    assert not bad, (
        f"{source}: `{line}`: quote {', '.join(map(repr, bad))} (the shell reads {SHELL_OPERATORS!r} itself)"
    )


def _parse(line: str) -> None:
    line = re.sub(r"\$\(.*?\)", "", line)  # $( … ) substitutions
    line = re.sub(r"\$\{?([A-Z_]+)\}?", "1", line)  # $VAR, ${VAR}
    words = shlex.split(line)
    if words[0] == "multiplexer":
        args = words[1:]
    else:
        args = words[words.index("pipeline.cli") + 1 :]
    ctx = cli.make_context("multiplexer", list(args))
    command: click.Command = cli
    while isinstance(command, click.Group):
        rest = [*ctx._protected_args, *ctx.args]  # a group keeps the subcommand and its arguments here
        if not rest and command.invoke_without_command:  # `catalogue` runs itself, `catalogue export` a subcommand
            break
        assert rest, f"`{line}` names no subcommand"
        name, command, rest = command.resolve_command(ctx, rest)
        ctx = command.make_context(name, list(rest), parent=ctx)


COMMANDS = _command_lines()


def test_the_docs_show_commands():
    files = {f for f, _ in COMMANDS}
    assert {"README.md", "real-data.md", "cluster.md", "distill.md"} <= files
    assert len(COMMANDS) >= 20


@pytest.mark.parametrize(("source", "line"), COMMANDS, ids=[f"{f}:{i}" for i, (f, _) in enumerate(COMMANDS)])
def test_documented_command_parses(source, line):
    try:
        _parse(line)
    except click.UsageError as exc:
        pytest.fail(f"{source}: `{line}` does not parse: {exc.format_message()}")
