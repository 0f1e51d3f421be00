"""What kind of file is this: one place that looks at a path before a verb reads it.

Every input a verb reads goes through `expect` first (via fogreid.cli.common.input_file and
the loaders), so a folder, a FIFO, /dev/null or a file of another kind is named as what it is
("is an ONNX model, not a checkpoint: pass it as --model"), instead of "not found", a hang on
a pipe, or a loader's own words about a format it was never meant to read. Only the first
bytes are read (a FIFO or a device is never opened), and nothing is ever unpickled.
"""

from __future__ import annotations

import stat
import zipfile
from pathlib import Path

from fogreid.errors import FogreidError

# The kinds `sniff` tells apart, and how a message names each.
MISSING, FOLDER, FIFO, DEVICE, SOCKET, EMPTY = "missing", "folder", "fifo", "device", "socket", "empty"
CHECKPOINT, PICKLE, ONNX, NPZ, ZIP, BROKEN_ZIP = "checkpoint", "pickle", "onnx", "npz", "zip", "broken-zip"
JSON, JSONL, TEXT, VIDEO, IMAGE, BINARY = "json", "jsonl", "text", "video", "image", "binary"

NAMES = {
    MISSING: "not found", FOLDER: "a folder", FIFO: "a named pipe (FIFO), not a file",
    DEVICE: "a device, not a file", SOCKET: "a socket, not a file", EMPTY: "empty (0 bytes)",
    CHECKPOINT: "a PyTorch checkpoint", PICKLE: "a Python pickle (never loaded: unpickling can run code)",
    ONNX: "an ONNX model", NPZ: "a NumPy .npz archive (a gallery?)", ZIP: "a zip archive",
    BROKEN_ZIP: "a zip archive that cannot be read (truncated or damaged, e.g. an interrupted copy)",
    JSON: "a JSON file", JSONL: "a JSON-lines file", TEXT: "a text file", VIDEO: "a video", IMAGE: "an image",
    BINARY: "a binary file of unknown kind",
}
# What a verb may expect: the kinds each accepts (TEXT covers YAML, det.txt and CSV).
ACCEPTS = {
    "checkpoint": {CHECKPOINT},
    "onnx": {ONNX},
    "model": {ONNX, CHECKPOINT, BINARY},          # BINARY: a TensorRT engine (.engine / .plan)
    "gallery": {NPZ},
    "json": {JSON},
    "jsonl": {JSONL, JSON},                       # one event is both
    "text": {TEXT, JSON, JSONL},
    "video": {VIDEO, BINARY},
}

_HEAD = 4096


def _looks_onnx(head: bytes) -> bool:
    """An ONNX ModelProto starts with ir_version (field 1, a small varint), then one of its other
    fields: producer name/version, domain, model version, doc string, graph, opsets."""
    return (len(head) >= 3 and head[0] == 0x08 and 1 <= head[1] <= 20
            and head[2] in (0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A, 0x42, 0x72))


def _text_kind(head: bytes, path: Path) -> str | None:
    import json

    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        if len(head) < _HEAD:
            return None
        try:  # a multi-byte character cut at the end of the head
            text = head[:-4].decode("utf-8")
        except UnicodeDecodeError:
            return None
    if "\x00" in text:
        return None
    stripped = text.lstrip()
    if stripped[:1] in ("{", "["):
        if path.stat().st_size <= 64 << 20:
            try:
                body = path.read_text(encoding="utf-8")
            except (UnicodeDecodeError, OSError):
                return TEXT
            try:
                json.loads(body)
                return JSON
            except ValueError:
                lines = [line for line in body.splitlines() if line.strip()]
                try:
                    for line in lines:
                        json.loads(line)
                    return JSONL if lines else TEXT
                except ValueError:
                    return TEXT
        return JSONL if "\n{" in stripped else JSON
    return TEXT


def sniff(path: str | Path) -> str:
    """The kind of `path` (one of the constants above), from its type and first bytes."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        return MISSING
    except OSError:  # a symlink loop, a name too long: nothing there to read
        return MISSING
    if stat.S_ISDIR(mode):
        return FOLDER
    if stat.S_ISFIFO(mode):
        return FIFO
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return DEVICE
    if stat.S_ISSOCK(mode):
        return SOCKET
    if path.stat().st_size == 0:
        return EMPTY
    with open(path, "rb") as handle:
        head = handle.read(_HEAD)
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        try:
            with zipfile.ZipFile(path) as archive:
                members = archive.namelist()
        except (zipfile.BadZipFile, OSError, ValueError, EOFError):
            return BROKEN_ZIP
        if any(m.endswith("data.pkl") for m in members):
            return CHECKPOINT
        if members and all(m.endswith(".npy") for m in members):
            return NPZ
        return ZIP
    if head[:1] == b"\x80" and 2 <= head[1] <= 5:   # pickle protocols 2-5: torch.save's legacy format
        return PICKLE
    if head[4:8] == b"ftyp" or head[:4] == b"\x1a\x45\xdf\xa3" or (head[:4] == b"RIFF" and head[8:12] == b"AVI "):
        return VIDEO
    if head[:3] == b"\xff\xd8\xff" or head[:8] == b"\x89PNG\r\n\x1a\n" or head[:2] == b"BM":
        return IMAGE
    if _looks_onnx(head):
        return ONNX
    return _text_kind(head, path) or BINARY


def describe(kind: str) -> str:
    return NAMES.get(kind, kind)


def expect(path: str | Path | None, option: str, want: str, what: str | None = None,
           elsewhere: dict[str, str] | None = None) -> str:
    """Refuse `path` unless it is a readable file of a kind `want` accepts (`ACCEPTS`); returns its kind.

    `option` names it in the message, `what` is what the verb wants ("checkpoint"), and
    `elsewhere` maps another kind to the option that takes it (ONNX -> "--model"), for the
    fix: "is an ONNX model, not a checkpoint: pass it as --model"."""
    if not path:
        return MISSING
    path = Path(path)
    what = what or want
    kind = sniff(path)
    where = f"{option} {path}" if option else str(path)
    if kind == MISSING:
        raise FogreidError(f"{where}: not found; check the path")
    if kind == FOLDER:
        raise FogreidError(f"{where}: is a folder; give the {what} file")
    if kind in (FIFO, DEVICE, SOCKET):
        raise FogreidError(f"{where}: is {describe(kind)}; give the {what} file itself")
    if kind == EMPTY:
        raise FogreidError(f"{where}: the file is empty (0 bytes), probably an interrupted copy or write; "
                           f"re-create it")
    accepted = ACCEPTS.get(want, {want})
    if kind in accepted:
        return kind
    if kind == BROKEN_ZIP and (CHECKPOINT in accepted or NPZ in accepted):
        raise FogreidError(f"{where}: cannot be read: the file is cut short or damaged (its zip directory is "
                           f"missing), probably an interrupted copy; copy it again or re-create it")
    if kind == PICKLE and CHECKPOINT in accepted:
        raise FogreidError(f"{where}: is {describe(kind)}; fogreid reads only checkpoints it wrote (weights and "
                           f"plain values): re-save the weights with fogreid (save_checkpoint)")
    if want == "onnx" and kind == BINARY and path.suffix.lower() == ".onnx":
        return kind       # a damaged ONNX file: onnx_graph.load says what is wrong with it
    hint = (elsewhere or {}).get(kind)
    fix = (f"pass it as {hint}" if hint.startswith("-") else hint) if hint else f"give the {what} file"
    raise FogreidError(f"{where}: is {describe(kind)}, not {_article(what)}; {fix}")


def _article(what: str) -> str:
    return f"an {what}" if what[:1].lower() in "aeiou" else f"a {what}"


def readable(path: str | Path, option: str, what: str) -> None:
    """The checks of `expect` that need no kind: there, a regular file, not empty."""
    expect(path, option, "any", what)


ACCEPTS["any"] = set(NAMES) - {MISSING, FOLDER, FIFO, DEVICE, SOCKET, EMPTY}
