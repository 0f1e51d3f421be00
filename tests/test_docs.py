"""The README and the manual (docs/) say what the code does.

* The README is a front door: at most 250 lines, the two commands first, links that resolve.
* Every ```python block marked `<!-- runnable -->` runs, page by page, in a fresh folder.
* Every `fogreid ...` command in a ```bash block parses with fogreid's own argparse parser, and
  every `--option` named in inline code after `fogreid VERB` is one of that verb's options.
* The CLI reference is generated from the parsers (docs/scripts/cli_reference.py), never copied.
* History and machine notes stay out of the manual's prose: they belong to the changelog and the
  benchmarks page.
`mkdocs build --strict` (links, anchors, nav) runs in `make test` before pytest.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = [README] + sorted(p for p in DOCS.rglob("*.md") if "scripts" not in p.parts)
RUNNABLE = "<!-- runnable -->"
FENCE = re.compile(r"^(\s*)```(\S*)\s*$")


@dataclass
class Block:
    path: Path
    line: int            # 1-based line of the opening fence
    lang: str
    code: str
    runnable: bool


def blocks(path: Path) -> list[Block]:
    """The fenced code blocks of a Markdown page; `runnable` when the line before the fence
    (blank lines skipped) is the `<!-- runnable -->` marker."""
    lines = path.read_text().splitlines()
    found, i = [], 0
    while i < len(lines):
        start = FENCE.match(lines[i])
        if not start:
            i += 1
            continue
        indent, lang = start.group(1), start.group(2)
        body, j = [], i + 1
        while j < len(lines) and not (FENCE.match(lines[j]) and lines[j].strip() == "```"):
            body.append(lines[j][len(indent):] if lines[j].startswith(indent) else lines[j])
            j += 1
        previous = next((lines[k].strip() for k in range(i - 1, -1, -1) if lines[k].strip()), "")
        found.append(Block(path, i + 1, lang, "\n".join(body) + "\n", previous == RUNNABLE))
        i = j + 1
    return found


def relative(path: Path) -> str:
    return str(path.relative_to(ROOT))


# --------------------------------------------------------------------------- the README


def test_readme_is_a_front_door():
    text = README.read_text()
    assert len(text.splitlines()) <= 250, f"README.md has {len(text.splitlines())} lines; keep it <= 250"
    first = blocks(README)[0]
    assert first.lang == "bash" and first.line <= 5, "the two commands come first"
    assert "make demo" in first.code and "make test" in first.code
    for section in ("## Install", "## Python API", "## Commands", "## Headline figures", "## Documentation"):
        assert section in text, section
    assert "Jetson" in text.split("## Install", 1)[1].split("\n## ", 1)[0], "install covers Jetson"


def test_readme_lists_every_verb_once():
    from fogreid.cli import VERBS, build_parser

    text = README.read_text().split("## Commands", 1)[1].split("\n## ", 1)[0]
    listed = re.findall(r"^\| `([a-z-]+)` \|", text, re.M)
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert listed == list(action.choices), "the README's table of verbs, in `fogreid --help` order"
    assert len(listed) == len(VERBS)


@pytest.mark.parametrize("page", [README, DOCS / "index.md"], ids=relative)
def test_links_and_pictures_resolve(page):
    """Relative links of the pages GitHub shows too (mkdocs --strict checks the rest of docs/)."""
    for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
        if re.match(r"[a-z]+://", target) or target.startswith("#"):
            continue
        path = (page.parent / target.split("#", 1)[0]).resolve()
        assert path.exists(), f"{relative(page)} links to {target}, which does not exist"


# --------------------------------------------------------------------------- runnable examples


def runnable_pages() -> list:
    pages = [p for p in PAGES if any(b.runnable for b in blocks(p))]
    # The ones that train or export: a few seconds to a minute on a small CPU.
    slow = {README, DOCS / "getting-started.md", DOCS / "model.md"}
    return [pytest.param(p, id=relative(p), marks=[pytest.mark.slow] if p in slow else []) for p in pages]


def test_runnable_blocks_are_python():
    for page in PAGES:
        for block in blocks(page):
            if block.runnable:
                assert block.lang == "python", f"{relative(page)}:{block.line}: only python blocks run"


@pytest.mark.parametrize("page", runnable_pages())
def test_runnable_examples_run(page, tmp_path):
    """A page's runnable blocks run in order, as one script, in an empty folder (as a reader who
    pastes them would), so a block may use what an earlier one on the same page made."""
    parts = [f"# --- {relative(b.path)}:{b.line}\n{b.code}" for b in blocks(page) if b.runnable]
    script = tmp_path / "example.py"
    script.write_text("\n".join(parts))
    out = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, f"{relative(page)}: an example failed\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}"


# --------------------------------------------------------------------------- shell commands


def fogreid_commands(code: str) -> list[list[str]]:
    """argv (after `fogreid`) of every fogreid command in a shell block: continuation lines
    joined, comments dropped, `&&` / `;` / `|` chains split; `torchrun ... -m fogreid ...` and
    `.venv*/bin/fogreid` count too."""
    commands = []
    joined = re.sub(r"\\\n\s*", " ", code)
    for line in joined.splitlines():
        try:
            words = shlex.split(line, comments=True)
        except ValueError as exc:
            raise AssertionError(f"cannot split {line!r}: {exc}") from None
        segment: list[str] = []
        for word in words + ["&&"]:
            if word in ("&&", "||", ";", "|"):
                if segment:
                    if Path(segment[0]).name == "fogreid":
                        commands.append(segment[1:])
                    elif "-m" in segment and segment[segment.index("-m") + 1:][:1] == ["fogreid"]:
                        commands.append(segment[segment.index("-m") + 2:])
                segment = []
            else:
                segment.append(word)
    return commands


def shell_blocks() -> list:
    return [pytest.param(b, id=f"{relative(b.path)}:{b.line}") for p in PAGES for b in blocks(p)
            if b.lang in ("bash", "sh", "shell") and fogreid_commands(b.code)]


@pytest.mark.parametrize("block", shell_blocks())
def test_shell_commands_parse(block, capsys):
    from fogreid.cli import build_parser

    for argv in fogreid_commands(block.code):
        try:
            build_parser().parse_args(argv)
        except SystemExit as exc:
            error = capsys.readouterr().err.strip()
            raise AssertionError(f"{relative(block.path)}:{block.line}: `fogreid {shlex.join(argv)}` does not "
                                 f"parse: {error or exc}") from None


def verb_options(hidden: bool = True) -> dict[str, set[str]]:
    """Each verb's options; `hidden=False` leaves out those `--help` does not show (deprecated aliases)."""
    from fogreid.cli import build_parser

    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {name: {o for a in sub._actions for o in a.option_strings if hidden or a.help != argparse.SUPPRESS}
            for name, sub in action.choices.items()}


def test_inline_commands_name_real_verbs_and_options():
    """`fogreid VERB --option ...` in inline code anywhere in the README and the manual."""
    options = verb_options()
    problems = []
    for page in PAGES:
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)   # inline code only
        for span in re.findall(r"`(fogreid [^`]+)`", text):
            words = span.split()
            verb = words[1]
            if verb in ("VERB", "--version", "--help"):
                continue
            if verb not in options:
                problems.append(f"{relative(page)}: `{span}`: no verb {verb!r}")
                continue
            for option in re.findall(r"(?<![\w-])--[a-z0-9][a-z0-9-]*", span):
                if option not in options[verb]:
                    problems.append(f"{relative(page)}: `{span}`: `fogreid {verb}` has no {option}")
    assert not problems, "\n".join(problems)


# --------------------------------------------------------------------------- the CLI reference


def load_generator():
    spec = importlib.util.spec_from_file_location("cli_reference", DOCS / "scripts" / "cli_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_reference_is_generated_not_copied():
    generator = load_generator()
    page = (DOCS / "reference" / "cli.md").read_text()
    assert generator.MARKER in page, "the page keeps the marker the mkdocs hook replaces"
    assert "usage: fogreid" not in page, "help text is generated, never pasted into the page"
    assert "docs/scripts/cli_reference.py" in (ROOT / "mkdocs.yml").read_text(), "the hook is registered"

    text = generator.markdown()
    for verb, options in verb_options(hidden=False).items():
        section = text.split(f"## `fogreid {verb}`\n", 1)
        assert len(section) == 2, f"no section for {verb}"
        body = section[1].split("\n## ", 1)[0]
        assert f"usage: fogreid {verb}" in body
        for option in options:
            assert option in body, f"{verb}: {option} missing from the generated reference"
    # The hook leaves other pages alone and fills the reference page.
    assert generator.on_page_markdown("text", None, None, None) == "text"
    assert "## `fogreid run`" in generator.on_page_markdown(page, None, None, None)


# --------------------------------------------------------------------------- the site


def test_every_page_is_in_the_nav():
    import yaml

    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())

    def pages(node):
        if isinstance(node, str):
            yield node
        elif isinstance(node, list):
            for item in node:
                yield from pages(item)
        elif isinstance(node, dict):
            for value in node.values():
                yield from pages(value)

    listed = set(pages(config["nav"]))
    on_disk = {str(p.relative_to(DOCS)) for p in PAGES if p != README}
    assert listed == on_disk


HISTORY = ("the old default", "as before", "before the q/dq layout", "the former default", "this 2-core",
           "2-core cpu", "this idle", "this busy")


@pytest.mark.parametrize("page", [p for p in PAGES if p.name not in ("changelog.md", "benchmarks.md")], ids=relative)
def test_no_history_or_machine_notes_in_the_manual(page):
    text = page.read_text().lower()
    found = [phrase for phrase in HISTORY if phrase in text]
    assert not found, f"{relative(page)}: {found}: history goes to docs/changelog.md, measurements with their " \
                      f"machine to docs/benchmarks.md"


def test_open_review_markers_name_their_area():
    """Paragraphs waiting for a change in another area carry `<!-- REVIEW: AREA -->`."""
    for page in PAGES:
        for area in re.findall(r"<!-- REVIEW: ([^>]*?) -->", page.read_text()):
            assert area in ("tensorrt", "data-safety"), f"{relative(page)}: unknown REVIEW area {area!r}"
