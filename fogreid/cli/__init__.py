"""The `fogreid` command line: one verb per job, one module per verb.

Each verb's module (fogreid/cli/<verb>.py) holds its parser (`add_parser`) and its body
(`run`); the body imports what it needs only when it runs, so `fogreid --help` stays fast and
a machine without TensorRT or OpenCV can still use the verbs that need neither. A
FogreidError (a user mistake or an unusable input) prints its message and exits 2.
"""

from __future__ import annotations

import argparse
import sys

from fogreid import __version__
from fogreid.cli import (associate, bench, calibrate, demo, doctor, eval_mtmc, evaluate, export, gallery, info, run,
                         serve, synth, synth_video, train, validate)
from fogreid.errors import FogreidError

# In the order `fogreid --help` lists them: the main job first, then the product's path.
VERBS = [demo, synth, synth_video, train, evaluate, export, calibrate, validate, gallery, run, associate, serve,
         eval_mtmc, bench, doctor,
         info]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fogreid", description=(
        "Foggy-weather vehicle re-identification: data, the SJDL defog + ReID network, "
        "and its deployment."))
    parser.add_argument("--version", action="version", version=f"fogreid {__version__}")
    verbs = parser.add_subparsers(dest="verb", metavar="COMMAND", required=True)
    for verb in VERBS:
        verb.add_parser(verbs)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except FogreidError as exc:
        print(f"fogreid {args.verb}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"fogreid {args.verb}: interrupted", file=sys.stderr)
        return 130
