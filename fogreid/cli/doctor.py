"""`fogreid doctor`: what works on this machine: CUDA, ONNX Runtime, TensorRT, OpenCV, Jetson."""

from __future__ import annotations

import argparse


def add_parser(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser("doctor", help="what works on this machine: CUDA, ONNX Runtime, TensorRT, OpenCV, Jetson")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from fogreid.runtime.doctor import report

    for name, value in report():
        print(f"{name:<12} {value}")
    return 0
