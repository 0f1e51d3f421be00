"""The CLI reference, generated from `fogreid.cli`'s argparse parsers (never copied by hand).

As a mkdocs hook (mkdocs.yml, `hooks:`) it replaces the marker line `<!-- cli-reference -->`
of docs/reference/cli.md with one section per verb, in the order `fogreid --help` lists them:
the verb's one-line summary and its `--help` text. As a script it prints the same Markdown:

    .venv/bin/python docs/scripts/cli_reference.py > /tmp/cli.md
"""

from __future__ import annotations

import argparse
import os
from contextlib import contextmanager

MARKER = "<!-- cli-reference -->"
WIDTH = 100  # columns of the help text; argparse reads them from $COLUMNS


@contextmanager
def _columns(width: int):
    saved = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(width)
    try:
        yield
    finally:
        if saved is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = saved


def verbs() -> list[tuple[str, str, argparse.ArgumentParser]]:
    """(name, one-line summary, parser) of every verb, in `fogreid --help` order."""
    from fogreid.cli import build_parser

    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    summaries = {choice.dest: choice.help or "" for choice in action._choices_actions}
    return [(name, summaries.get(name, ""), sub) for name, sub in action.choices.items()]


def markdown(width: int = WIDTH) -> str:
    """Every verb's `--help`, as Markdown sections."""
    from fogreid import __version__
    from fogreid.cli import build_parser

    with _columns(width):
        top = build_parser().format_help()
        sections = [f"Generated from the parsers of fogreid {__version__}.\n",
                    "## `fogreid`\n", f"```text\n{top.rstrip()}\n```\n"]
        for name, summary, parser in verbs():
            sentence = summary[:1].upper() + summary[1:] + ("" if summary[-1:] in ".?!" else ".")
            sections += [f"## `fogreid {name}`\n", f"{sentence}\n" if summary else "",
                         f"```text\n{parser.format_help().rstrip()}\n```\n"]
    return "\n".join(s for s in sections if s)


def on_page_markdown(text: str, page, config, files) -> str:  # the mkdocs hook
    if MARKER not in text:
        return text
    return text.replace(MARKER, markdown())


if __name__ == "__main__":
    print(markdown())
