"""Small argument helpers shared by several verbs.

The `type=` checkers run while argparse reads the command line, before any heavy import,
so a zero batch or a score of 5 is refused in well under a second. The path checkers run
at the top of a verb's body, before the work that would otherwise end in a failed write.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from fogreid.config import Range
from fogreid.errors import FogreidError
from fogreid.model.config import MAX_IMGSZ


def parse_imgsz(values: list[int]) -> tuple[int, int]:
    """`--imgsz H [W]` as (height, width)."""
    if len(values) > 2:
        raise FogreidError(f"--imgsz {' '.join(map(str, values))}: give H or H W")
    return (values[0], values[0]) if len(values) == 1 else (values[0], values[1])


def _number(kind: type, rng: Range, name: str | None = None):
    """An argparse `type=` that reads `kind` and refuses anything outside `rng` (NaN and inf
    always): `argument --seed: -1 is out of range: give a whole number from 0 to 4294967295`.
    `--help` shows the range (fogreid.cli.HelpFormatter reads `check.range`)."""
    def check(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'a whole number' if kind is int else 'a number'}; "
                                             f"give {rng.describe()}") from None
        if value not in rng:
            raise argparse.ArgumentTypeError(f"{text} is out of range: give {rng.describe()}")
        return value
    check.__name__ = name or rng.describe()  # argparse names the type in some messages
    check.range = rng  # type: ignore[attr-defined]
    return check


def int_in(low: int | None = None, high: int | None = None, name: str | None = None):
    """Whole numbers from `low` to `high` (None: unbounded)."""
    return _number(int, Range(low, high, integer=True), name)


def float_in(low: float | None = None, high: float | None = None, *, low_open: bool = False,
             high_open: bool = False, name: str | None = None):
    """Finite numbers in [low, high], either end open with low_open / high_open."""
    return _number(float, Range(low, high, low_open, high_open), name)


# The shared family: every numeric option of every verb takes one of these (or an int_in /
# float_in of its own), so a limit is stated once, in the message and in `--help`.
positive_int = int_in(1)
nonnegative_int = int_in(0)
finite_float = float_in()
positive_float = float_in(0, low_open=True)
nonnegative_float = float_in(0)
unit_float = float_in(0, 1)
cosine_float = float_in(-1, 1, name="a cosine similarity in [-1, 1]")
port = int_in(1, 65535)


def cosine_or_auto(text: str):
    """A cross-camera threshold: a cosine, or "auto" (per camera pair; fogreid/runtime/association.py)."""
    if text == "auto":
        return text
    try:
        return cosine_float(text)
    except argparse.ArgumentTypeError as error:
        raise argparse.ArgumentTypeError(f"{error}, or auto") from None


cosine_or_auto.__name__ = "'auto' or a cosine similarity in [-1, 1]"
seed = int_in(0, 2**32 - 1)                  # numpy's and torch's seeds take 32 bits
batch_size = int_in(1, 65536)
imgsz_px = int_in(32, MAX_IMGSZ)             # an image side: the model's limits (fogreid/model/config.py)
fps = float_in(0.1, 1000)                    # frames per second: a frame every 10 s to 1000 a second
MAX_SECONDS = 7 * 24 * 3600                  # a week: longer waits are typos (and inf never ends)
seconds = float_in(0, MAX_SECONDS, low_open=True)
seconds_or_zero = float_in(0, MAX_SECONDS)


class DeprecatedAlias(argparse.Action):
    """An option's old name, kept for one release and left out of `--help`: it sets the new
    option's value and prints one line to stderr naming the new option."""

    def __init__(self, option_strings: list[str], dest: str, new: str, **kwargs) -> None:
        super().__init__(option_strings, dest, help=argparse.SUPPRESS, **kwargs)
        self.new = new

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        print(f"{parser.prog}: warning: {option_string} is deprecated and will be removed in the next release; "
              f"use {self.new}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def setting(cls: type, name: str):
    """The argparse type of a typed-config field: the range its dataclass declares (`ranged`),
    so `--epochs 0` and `--set optim.epochs=0` are refused alike."""
    import dataclasses

    rng = next(f for f in dataclasses.fields(cls) if f.name == name).metadata["range"]
    return _number(int if rng.integer else float, rng)


def int_list(text: str) -> list[int]:
    """`1,8,32`: a comma list of batch sizes."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give a comma list of whole numbers, e.g. 1,8,32") from None
    if not values or any(v not in batch_size.range for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: every value must be {batch_size.range.describe()}, e.g. 1,8,32")
    return values


int_list.range = batch_size.range  # type: ignore[attr-defined]


def names(value: str | None) -> list[str]:
    """A comma list, or @FILE with one name per line (as `fogreid validate --per-layer` writes)."""
    if not value:
        return []
    if value.startswith("@"):
        path = Path(value[1:])
        if not path.is_file():
            raise FogreidError(f"--keep-fp {value}: file not found")
        return [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    return [n.strip() for n in value.split(",") if n.strip()]


def _writable_folder(folder: Path, option: str, path: Path) -> None:
    """The nearest existing ancestor of `folder` must be a writable directory."""
    probe = folder
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise FogreidError(f"{option} {path}: {probe} is a file, not a folder; choose another path")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise FogreidError(f"{option} {path}: cannot write into {probe} (permission denied); choose another path")


def output_file(path: str | Path | None, option: str, suffixes: tuple[str, ...] = ()) -> None:
    """Refuse, before any work, an output file that cannot be written."""
    if not path:
        return
    path = Path(path)
    if path.is_dir() or str(path).endswith(os.sep):
        example = path / ("out" + (suffixes[0] if suffixes else ""))
        raise FogreidError(f"{option} {path}: is a folder; give a file name, e.g. {example}")
    if suffixes and path.suffix.lower() not in suffixes:
        raise FogreidError(f"{option} {path}: expected a {' or '.join(suffixes)} file name")
    _writable_folder(path.parent, option, path)


def output_folder(path: str | Path | None, option: str = "--out") -> None:
    """Refuse, before any work, an output folder that is a file or cannot be created."""
    if not path:
        return
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FogreidError(f"{option} {path}: is a file, not a folder; choose a folder path")
    _writable_folder(path, option, path)


def input_file(path: str | Path | None, option: str, what: str = "file", kind: str = "any",
               elsewhere: dict[str, str] | None = None) -> None:
    """A file the verb will read must be there, a regular file, not empty, and (`kind`, one of
    fogreid.file_kinds.ACCEPTS) of the kind the verb reads: a folder, a FIFO, /dev/null or a
    file of another kind is named as what it is (checked before heavy imports). `elsewhere`
    maps another kind to the option that takes it, for the fix ("pass it as --model")."""
    from fogreid.file_kinds import expect

    expect(path, option, kind, what, elsewhere)


def input_folders(paths: list[str] | None, option: str) -> None:
    from fogreid.file_kinds import FOLDER, MISSING, describe, sniff

    for path in paths or []:
        kind = sniff(path)
        if kind == MISSING:
            raise FogreidError(f"{option} {path}: folder not found; give folders of images")
        if kind != FOLDER:
            raise FogreidError(f"{option} {path}: is {describe(kind)}, not a folder; give folders of images")


def add_int8_budget(parser) -> None:
    """--int8-budget, shared by `export` and `calibrate`."""
    from fogreid.calibration.defaults import DEFAULT_BUDGET

    parser.add_argument("--int8-budget", type=unit_float, default=DEFAULT_BUDGET, metavar="COSINE",
                        help="keep the fewest layers in float (most sensitive first) for the INT8 embedding to hold "
                             "this cosine (1st percentile) vs FP32 on held-out calibration images; 0: every layer "
                             "INT8")


def add_backend_options(parser) -> None:
    """--backend and --device, shared by the verbs that run a deployed model."""
    parser.add_argument("--backend", default="auto", choices=["auto", "torch", "onnxruntime", "openvino", "tensorrt"],
                        help="inference backend (auto: from the file type; an .onnx on the CPU runs on the "
                             "engine measured faster here, ONNX Runtime or an installed OpenVINO, and says which)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (OpenVINO: auto, cpu, gpu, gpu.N "
                                                          "or npu)")
