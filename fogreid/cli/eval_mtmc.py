"""`fogreid eval-mtmc`: multi-camera tracking scores of `fogreid run` events (motmetrics)."""

from __future__ import annotations

import argparse


def add_parser(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser("eval-mtmc", help="IDF1, MOTA, ID switches per camera and across cameras of run events")
    p.add_argument("--city", required=True, help="a city from `fogreid synth-video` (MOTChallenge ground truth)")
    p.add_argument("--events", required=True, help="the events file of `fogreid run` on its videos")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import json

    from fogreid.mtmc import evaluate_city, format_table

    # the city is read first, then the events (fogreid.mtmc checks both: kind, then schema)
    rows = evaluate_city(args.city, args.events)
    print(json.dumps(rows, indent=1) if args.json else format_table(rows))
    return 0
