"""The `fogreid` command line: one verb per job, one module per verb.

Each verb's module (fogreid/cli/<verb>.py) holds its parser (`add_parser`) and its body
(`run`); the body imports what it needs only when it runs, so `fogreid --help` and every
argument error stay fast and a machine without TensorRT or OpenCV can still use the verbs
that need neither. Exit codes: 2 for a user mistake (a bad option, an unusable file: one
line naming it and the fix, never a traceback), 1 for an environment problem (no CUDA, a
source that failed, an unwritable disk), 130 when interrupted.
"""

from __future__ import annotations

import argparse
import sys

from fogreid import __version__
from fogreid.cli import (
    associate,
    bench,
    calibrate,
    check,
    demo,
    doctor,
    eval_mtmc,
    evaluate,
    export,
    gallery,
    info,
    run,
    serve,
    synth,
    synth_video,
    train,
    validate,
)
from fogreid.errors import FogreidError

# In the order `fogreid --help` lists them: the main job first, then the product's path.
VERBS = [demo, synth, synth_video, train, evaluate, export, calibrate, check, validate, gallery, run, associate, serve,
         eval_mtmc, bench, doctor, info]


class HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its accepted range (a numeric option's `type=` from
    fogreid/cli/common.py carries it) and its default, unless it has none or the text says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        rng = getattr(action.type, "range", None)
        if rng is not None and action.option_strings:
            text = f"{text} [{rng.describe()}]" if text else f"[{rng.describe()}]"
        default = action.default
        if ("default" in text or default in (None, False, argparse.SUPPRESS) or not action.option_strings
                or isinstance(action, (argparse._HelpAction, argparse._VersionAction))):
            return text
        shown = ",".join(map(str, default)) if isinstance(default, (list, tuple)) else "%(default)s"
        return f"{text} (default {shown})" if text else f"(default {shown})"


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error: `fogreid VERB: error: ...; see fogreid VERB --help` (exit 2),
    instead of the full usage block above the line that matters."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}; see `{self.prog} --help`\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="fogreid", description=(
        "Foggy-weather vehicle re-identification: data, the SJDL defog + ReID network, "
        "and its deployment."))
    parser.add_argument("--version", action="version", version=f"fogreid {__version__}")
    verbs = parser.add_subparsers(dest="verb", metavar="COMMAND", required=True, parser_class=Parser)
    for verb in VERBS:
        verb.add_parser(verbs)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except FogreidError as exc:
        print(f"fogreid {args.verb}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        # The disk or the OS refused (full disk, permissions, a vanished mount): the request was
        # fine, the machine was not. The message names the path.
        print(f"fogreid {args.verb}: error: {exc.strerror or exc}"
              f"{f': {exc.filename}' if exc.filename else ''}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"fogreid {args.verb}: interrupted", file=sys.stderr)
        return 130
