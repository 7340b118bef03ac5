"""Write docs/cli.md: the `--help` of every `multiplexer` command, generated from the click commands.

python scripts/gen_cli_docs.py            # rewrite docs/cli.md
python scripts/gen_cli_docs.py --check    # exit 1 if docs/cli.md is out of date (a test runs this)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import click

from pipeline.cli import cli

DOC = Path(__file__).resolve().parents[1] / "docs" / "cli.md"


def _walk(command: click.Command, parent: click.Context | None, name: str):
    settings = {**command.context_settings, "terminal_width": 100, "max_content_width": 100}
    ctx = click.Context(command, info_name=name, parent=parent, **settings)
    yield ctx
    if isinstance(command, click.Group):
        for sub in command.list_commands(ctx):
            yield from _walk(command.get_command(ctx, sub), ctx, sub)


def render() -> str:
    """The whole reference as Markdown."""
    parts = [
        "# Command-line reference",
        "",
        "Generated from the click commands by `python scripts/gen_cli_docs.py`; a test checks that it is",
        "current. Every command exits non-zero with a one-line `error: ...` on bad input; `-q` (before the",
        "command) turns progress bars off.",
        "",
    ]
    for ctx in _walk(cli, None, "multiplexer"):
        parts += [f"## `{ctx.command_path}`", "", "```text", ctx.get_help().rstrip(), "```", ""]
    return "\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check that docs/cli.md is current")
    args = parser.parse_args()
    text = render()
    if args.check:
        if not DOC.exists() or DOC.read_text() != text:
            print("docs/cli.md is out of date: run python scripts/gen_cli_docs.py", file=sys.stderr)
            sys.exit(1)
        return
    DOC.write_text(text)
    print(f"wrote {DOC}")


if __name__ == "__main__":
    main()
