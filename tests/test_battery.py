"""A property battery of bad input (issue 23, item 6): every numeric option of every verb with
values it must refuse, and every kind of input file damaged every way a user's disk or hand
can damage it.

The options come from the parsers themselves (`fogreid.cli.build_parser`): any option whose
`type=` carries a range (fogreid/cli/common.py) is walked, so an option added tomorrow is
covered without touching this file, and a numeric option without a range fails
`test_every_numeric_option_has_a_range`. The damaged files are built per case from the small
checkpoint, ONNX model, gallery and video of conftest's `files` fixture.

Each case runs `fogreid.cli.main(argv)` in a child forked from this process (fogreid and its
imports are loaded once, so a case costs a fork, not a 3 s interpreter start), with stdout and
stderr sent to files. A child still running after 15 s is killed and the case fails as a hang.
Each case asserts: exit 2 (1 where the case says an environment problem is the honest answer),
a last stderr line that names the option or the file, no traceback, and no file in the case's
folder created, changed or removed except the case's named outputs.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import signal
import stat
import sys
import threading
import time
import traceback
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from fogreid.cli import build_parser, main

from conftest import Files

TIMEOUT = 15.0


# ------------------------------------------------------------------------------ running a case
@dataclass
class Outcome:
    code: int | None        # None: killed after TIMEOUT
    out: str
    err: str
    seconds: float


def forked(argv: list[str], logs: Path) -> Outcome:
    """`main(argv)` in a forked child: its exit code, stdout and stderr, bounded by TIMEOUT."""
    logs.mkdir(parents=True, exist_ok=True)
    out_path, err_path = logs / "stdout", logs / "stderr"
    sys.stdout.flush()
    sys.stderr.flush()
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 97
        try:
            for fd, path in ((1, out_path), (2, err_path)):
                target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                os.dup2(target, fd)
                os.close(target)
            sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), write_through=True)
            sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), write_through=True)
            sys.stdin = open(os.devnull)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            if "torch" in sys.modules:  # the parent's OpenMP pool does not survive a fork
                sys.modules["torch"].set_num_threads(1)
            try:
                code = main(argv)
            except SystemExit as exc:  # argparse
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
            except BaseException:
                traceback.print_exc()
                code = 98
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code if isinstance(code, int) else 99)
    killed = []

    def kill() -> None:  # a hang fails the case, not the worker
        killed.append(True)
        os.kill(pid, signal.SIGKILL)

    watchdog = threading.Timer(TIMEOUT, kill)
    watchdog.start()
    try:
        _, status = os.waitpid(pid, 0)
    finally:
        watchdog.cancel()
    seconds = time.monotonic() - start
    code = None if killed else os.waitstatus_to_exitcode(status)
    return Outcome(code, out_path.read_text(errors="replace"), err_path.read_text(errors="replace"), seconds)


def snapshot(root: Path, deep: bool = True) -> dict[str, tuple]:
    """Every entry under `root`: (type, size, sha256) for files (size and mtime when not `deep`)."""
    found = {}
    for folder, dirs, names in os.walk(root):
        for name in dirs + names:
            path = Path(folder) / name
            info = os.lstat(path)
            rel = str(path.relative_to(root))
            if stat.S_ISREG(info.st_mode):
                digest = hashlib.sha256(path.read_bytes()).hexdigest() if deep else info.st_mtime_ns
                found[rel] = ("file", info.st_size, digest)
            else:
                found[rel] = (stat.S_IFMT(info.st_mode),)
    return found


def message_lines(err: str) -> list[str]:
    """stderr less progress ([step] lines, tqdm bars) and warnings: what the user is told."""
    return [line for line in err.splitlines() if line.strip() and not line.startswith("[") and "%|" not in line]


def check(outcome: Outcome, names: tuple[str, ...], codes: tuple[int, ...] = (2,)) -> None:
    assert outcome.code is not None, f"hung: killed after {TIMEOUT:.0f} s; stderr so far:\n{outcome.err}"
    assert "Traceback" not in outcome.err, outcome.err
    assert outcome.code in codes, f"exit {outcome.code}, expected {codes}; stderr:\n{outcome.err}"
    lines = message_lines(outcome.err)
    assert lines, "nothing on stderr"
    last = lines[-1]
    assert any(name and name in last for name in names), f"the last line names none of {names}: {last!r}"
    assert outcome.seconds < TIMEOUT, f"took {outcome.seconds:.1f} s"


# ------------------------------------------------------------------------------ numeric options
def numeric_options() -> list[tuple[str, argparse.Action]]:
    """(verb, action) for every option whose type carries a range, or is a bare int or float."""
    parser = build_parser()
    verbs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return [(verb, action) for verb, sub in verbs.choices.items() for action in sub._actions
            if action.option_strings and (getattr(action.type, "range", None) is not None
                                          or action.type in (int, float))]


def bad_values(action: argparse.Action) -> list[str]:
    """Values the option must refuse: NaN and the infinities, words, a fraction for a whole
    number, and just outside each end of its range."""
    rng = action.type.range
    values = ["nan", "inf", "x"]
    if rng.integer:
        values.append("1.5")
    if rng.low is not None:
        values.append(str(rng.low if rng.low_open else (rng.low - 1 if rng.integer else rng.low - 0.5)))
    if rng.high is not None:
        values.append(str(10**30 if rng.integer else rng.high if rng.high_open else rng.high * 2 + 1))
    return values


def a_good_value(action: argparse.Action) -> str:
    rng = action.type.range
    value = rng.low if rng.low is not None and not rng.low_open else (rng.high if rng.high is not None else 1)
    return str(int(value) if rng.integer else value)


NUMERIC = numeric_options()


def test_the_walk_finds_the_options():
    found = {(verb, action.option_strings[0]) for verb, action in NUMERIC}
    assert {("run", "--fps"), ("bench", "--batch"), ("serve", "--http-port"), ("train", "--epochs"),
            ("synth-video", "--imgsz"), ("associate", "--idle-exit")} <= found
    assert len(found) >= 60


def test_every_numeric_option_has_a_range():
    """A bare `type=int` or `type=float` takes NaN, inf and any size: give it one of fogreid/cli/common.py's."""
    bare = [f"{verb} {action.option_strings[0]}" for verb, action in NUMERIC if action.type in (int, float)]
    assert not bare, f"options without a range: {bare}"


@pytest.mark.parametrize("verb,action", NUMERIC, ids=[f"{v}{a.option_strings[0]}" for v, a in NUMERIC])
def test_numeric_option_refuses_bad_values(verb, action, tmp_path):
    if action.type in (int, float):
        pytest.fail("no range: see test_every_numeric_option_has_a_range")
    option = action.option_strings[0]
    before = snapshot(tmp_path)
    for i, value in enumerate(bad_values(action)):
        # An option of two numbers (--imgsz H W) gets the bad one and a good one.
        if action.nargs == 2:
            args = [option, value, a_good_value(action)]
        else:  # --opt=-1: argparse would take a lone -1 or -inf for an option of its own
            args = [f"{option}={value}"] if value.startswith("-") else [option, value]
        outcome = forked([verb, *args], tmp_path.parent / f"{tmp_path.name}-logs" / str(i))
        try:
            check(outcome, (option,))
        except AssertionError as exc:
            raise AssertionError(f"{verb} {option} {value!r}: {exc}") from None
    assert snapshot(tmp_path) == before


# Options that hold numbers in a text of their own form, and the verbs' other arguments.
TEXT_NUMBERS = {
    ("validate", "--threshold"): (["validate", "--checkpoint", "{ckpt}", "--model", "{onnx}", "--images", "{images}"],
                                  ["cosine_min=nan", "psnr_db=inf", "cosine_min=-inf", "nope=1", "cosine_min",
                                   "cosine_min=x", "=1"]),
    ("export", "--batch"): (["export", "--checkpoint", "{ckpt}", "--out", "{out}/x"],
                            ["0", "nan", "8:1:32", "1:x:3", "-1", "1:8", "inf", "0:0:0", "1:8:100000000"]),
    ("train", "--set"): (["train", "--data", "{data}", "--out", "{out}/run"],
                         ["optim.lr=nan", "optim.lr=inf", "optim.epochs=0", "seed=-1", "optim.lr=x",
                          "optim.epochs=1e999", "data.ids_per_batch=1.5"]),
    ("check", "--trt-version"): (["check", "{onnx}"], ["x", "nan", "-1.0", "10.x", "1e999"]),
}


@pytest.mark.parametrize("key", sorted(TEXT_NUMBERS), ids=lambda k: f"{k[0]}{k[1]}")
def test_numbers_in_text_options(key, files, tmp_path):
    verb, option = key
    base, values = TEXT_NUMBERS[key]
    out = tmp_path / "case"
    out.mkdir()
    for i, value in enumerate(values):
        before = snapshot(out)
        argv = [fill(a, files, out, out) for a in base] + [option, value]
        outcome = forked(argv, tmp_path / "logs" / str(i))
        try:
            check(outcome, (option, value.split("=")[0] or "="))
        except AssertionError as exc:
            raise AssertionError(f"{verb} {option} {value!r}: {exc}") from None
        assert snapshot(out) == before, f"{verb} {option} {value!r} changed files"


# ------------------------------------------------------------------------------ damaged input files
def fill(text: str, f: Files, out: Path, bad: Path | str) -> str:
    return text.format(out=out, bad=bad, ckpt=f.ckpt, onnx=f.onnx, gallery=f.gallery, video=f.video,
                       images=f.images, data=f.data, city=out / "city", events=out / "good.jsonl")


def _write(path: Path, content) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)
    return path


def _half(source: Path, path: Path) -> Path:
    data = source.read_bytes()
    return _write(path, data[: len(data) // 2])


def _random(path: Path) -> Path:
    return _write(path, np.random.default_rng(7).bytes(4096))


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def _folder(path: Path) -> Path:
    path.mkdir()
    return path


# ---- checkpoints
def _ckpt_state(f: Files) -> dict:
    import torch

    return torch.load(f.ckpt, map_location="cpu", weights_only=True)


def _save(state, path: Path) -> Path:
    import torch

    torch.save(state, path)
    return path


def _ckpt_without(key):
    def make(f, path):
        state = _ckpt_state(f)
        del state[key]
        return _save(state, path)
    return make


def _ckpt_with(key, value):
    def make(f, path):
        state = _ckpt_state(f)
        state[key] = value
        return _save(state, path)
    return make


def _ckpt_weight_not_tensor(f, path):
    state = _ckpt_state(f)
    state["model"][next(iter(state["model"]))] = [1.0, 2.0]
    return _save(state, path)


def _ckpt_missing_weight(f, path):
    state = _ckpt_state(f)
    del state["model"][next(iter(state["model"]))]
    return _save(state, path)


def _ckpt_nan(f, path):
    state = _ckpt_state(f)
    name = next(k for k, v in state["model"].items() if v.is_floating_point() and v.numel() > 1)
    state["model"][name].view(-1)[0] = float("inf")
    return _save(state, path)


class Gadget:  # what a pickled checkpoint of someone else's code holds: never unpickled
    pass


def _ckpt_pickled_object(f, path):
    state = _ckpt_state(f)
    state["meta"] = {"gadget": Gadget()}
    return _save(state, path)


def _ckpt_legacy_pickle(f, path):
    import torch

    torch.save({"format": "fogreid.checkpoint"}, path, _use_new_zipfile_serialization=False)
    return path


def _ckpt_config_unknown(f, path):
    state = _ckpt_state(f)
    state["model_config"] = {**state["model_config"], "wings": 2}
    return _save(state, path)


# ---- ONNX models
def _onnx_edit(edit):
    def make(f, path):
        import onnx

        proto = onnx.load(str(f.onnx))
        edit(proto)
        onnx.save(proto, str(path))
        return path
    return make


def _rename_output(proto):
    for node in proto.graph.node:
        node.output[:] = ["scores" if o == "defogged" else o for o in node.output]
    for output in proto.graph.output:
        if output.name == "defogged":
            output.name = "scores"


def _float_input(proto):
    import onnx

    proto.graph.input[0].type.tensor_type.elem_type = onnx.TensorProto.FLOAT


def _int_embedding(proto):
    import onnx

    for output in proto.graph.output:
        if output.name == "embedding":
            output.type.tensor_type.elem_type = onnx.TensorProto.INT64


def _drop_output(proto):
    kept = [o for o in proto.graph.output if o.name != "embedding"]
    del proto.graph.output[:]
    proto.graph.output.extend(kept)


def _onnx_nan(proto):
    from onnx import numpy_helper

    index = next(i for i, t in enumerate(proto.graph.initializer) if t.data_type == 1 and np.prod(t.dims) > 1)
    weights = numpy_helper.to_array(proto.graph.initializer[index]).copy()
    weights.flat[0] = np.nan
    proto.graph.initializer[index].CopyFrom(numpy_helper.from_array(weights, proto.graph.initializer[index].name))


def _onnx_classifier(f, path):
    from test_bad_input import _classifier

    _classifier(path)
    return path


# ---- galleries
def _gallery_edit(edit):
    def make(f, path):
        with np.load(f.gallery, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        edit(arrays)
        np.savez(path, **arrays)
        return path
    return make


def _g_empty(a):
    a["embeddings"], a["labels"], a["paths"] = a["embeddings"][:0], a["labels"][:0], a["paths"][:0]


def _g_model_list(a):
    a["model"] = np.array(json.dumps([1, 2]))


def _g_model_sizes(a):
    a["model"] = np.array(json.dumps({"name": "x", "input_size": 64, "embedding_dim": "big"}))


def _g_labels_short(a):
    a["labels"] = a["labels"][:1]


def _g_ints(a):
    a["embeddings"] = np.ones(a["embeddings"].shape, np.int64)


def _g_no_embeddings(a):
    del a["embeddings"]


def _g_nan(a):
    a["embeddings"] = a["embeddings"].copy()
    a["embeddings"][0, 0] = np.inf


def _g_1d(a):
    a["embeddings"] = a["embeddings"][:, 0].copy()


def _g_index_spec(a):
    a["index_spec"] = np.array(json.dumps(["flat"]))


def _g_object_array(f, path):
    with np.load(f.gallery, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["labels"] = np.array([Gadget()] * len(arrays["labels"]), dtype=object)
    np.savez(path, **arrays)
    return path


# ---- the city of synth-video, for eval-mtmc
def make_city(out: Path) -> None:
    """A one-camera city (city.json and gt.txt) and an events file of two detections in it."""
    city = out / "city"
    _write(city / "city.json", json.dumps({"cameras": ["cam1"], "frames": 3, "fog_beta": [0.5]}))
    _write(city / "cam1" / "gt" / "gt.txt", "1,1,10,10,20,20,1,1,1\n2,1,12,10,20,20,1,1,1\n")
    events = [{"event": "detection", "source": str(city / "cam1" / "video.mp4"), "frame": i, "box": [10 + 2 * i, 10,
               30 + 2 * i, 30], "track_id": 1, "global_id": 1} for i in range(2)]
    _write(out / "good.jsonl", "".join(json.dumps(e) + "\n" for e in events))


GOOD_EVENT = {"event": "detection", "source": "city/cam1/video.mp4", "frame": 0, "box": [1, 2, 30, 40],
              "track_id": 1, "global_id": None}


def _event(**change) -> str:
    event = {**GOOD_EVENT, **change}
    return json.dumps({k: v for k, v in event.items() if v is not ...}) + "\n"


def _city_json(content):
    def make(f, path):
        return _write(path, content if isinstance(content, (str, bytes)) else json.dumps(content))
    return make


def _text(content):
    return lambda f, path: _write(path, content)


# ---- one input of one verb: where the damaged file goes, and the damage it gets
@dataclass(frozen=True)
class Site:
    argv: tuple[str, ...]     # {bad}: the damaged file; {out}: the case's folder; {ckpt} ...: shared files
    name: str                 # the damaged file's name (its suffix matters to some verbs)
    option: str               # what the message must name (besides the file)
    good: str = ""            # the shared good file of this kind, for truncated and for the wrong kind
    outputs: tuple[str, ...] = ()   # paths under {out} the verb was asked to write
    schema: bool = True       # False: the verb reads any file of the kind (check: any ONNX graph)


CKPT, ONNX, GALLERY = "ckpt", "onnx", "gallery"
SITES = {
    "checkpoint": [
        Site(("eval", "--checkpoint", "{bad}", "--data", "{data}"), "model.pt", "--checkpoint", CKPT),
        Site(("export", "--checkpoint", "{bad}", "--out", "{out}/x"), "model.pt", "--checkpoint", CKPT, ("x",)),
        Site(("info", "--checkpoint", "{bad}"), "model.pt", "--checkpoint", CKPT),
        Site(("validate", "--checkpoint", "{bad}", "--model", "{onnx}", "--images", "{images}"), "model.pt",
             "--checkpoint", CKPT),
        Site(("demo", "--out", "{out}/demo", "--checkpoint", "{bad}"), "model.pt", "--checkpoint", CKPT, ("demo",)),
    ],
    "onnx": [
        Site(("gallery", "--model", "{bad}", "--images", "{images}", "--out", "{out}/g.npz"), "model.onnx",
             "--model", ONNX, ("g.npz",)),
        Site(("run", "--model", "{bad}", "--source", "{video}", "--max-frames", "2"), "model.onnx", "--model", ONNX),
        Site(("bench", "--model", "{bad}", "--seconds", "0.2", "--batch", "1"), "model.onnx", "--model", ONNX),
        Site(("validate", "--checkpoint", "{ckpt}", "--model", "{bad}", "--images", "{images}"), "model.onnx",
             "--model", ONNX),
        Site(("calibrate", "--onnx", "{bad}", "--images", "{images}", "--out", "{out}/c"), "model.onnx", "--onnx",
             ONNX, ("c",)),
        Site(("check", "{bad}"), "model.onnx", "model.onnx", ONNX, schema=False),
        Site(("serve", "--model", "{bad}"), "model.onnx", "--model", ONNX),
    ],
    "gallery": [
        Site(("run", "--model", "{onnx}", "--source", "{video}", "--gallery", "{bad}", "--max-frames", "2"),
             "g.npz", "--gallery", GALLERY),
        Site(("associate", "--bus", "redis://127.0.0.1:9/x", "--gallery", "{bad}"), "g.npz", "--gallery", GALLERY),
    ],
    "rois": [Site(("run", "--model", "{onnx}", "--source", "{video}", "--rois", "{bad}", "--max-frames", "2"),
                  "rois.json", "--rois")],
    "detections": [Site(("run", "--model", "{onnx}", "--source", "{video}", "--detections", "{bad}",
                         "--max-frames", "2", "--no-track"), "det.txt", "--detections")],
    "events": [Site(("eval-mtmc", "--city", "{city}", "--events", "{bad}"), "events.jsonl", "--events")],
    "city": [Site(("eval-mtmc", "--city", "{out}/bad_city", "--events", "{events}"), "bad_city/city.json",
                  "city.json")],
    "config": [Site(("train", "--data", "{data}", "--out", "{out}/run", "--config", "{bad}"), "c.yaml", "--config",
                    "", ("run",))],
    "video": [Site(("run", "--model", "{onnx}", "--source", "{bad}", "--max-frames", "2"), "clip.mp4", "clip.mp4",
                   "video")],
}
WRONG_KIND = {"checkpoint": "onnx", "onnx": "ckpt", "gallery": "onnx", "rois": "gallery", "detections": "onnx",
              "events": "gallery", "city": "onnx", "config": "onnx", "video": "gallery"}

# Damage that any file can take, tried at every site.
GENERIC = {
    "empty": lambda f, path: _write(path, b""),
    "random-bytes": lambda f, path: _random(path),
    "folder": lambda f, path: _folder(path),
    "fifo": lambda f, path: _fifo(path),
    "dev-null": lambda f, path: Path(os.devnull),
}

# Damage particular to a kind: a valid container with the wrong contents. Tried at the kind's sites.
SCHEMA = {
    "checkpoint": {
        "no-weights": _ckpt_without("model"), "no-config": _ckpt_without("model_config"),
        "config-a-list": _ckpt_with("model_config", [1, 2]), "weights-a-list": _ckpt_with("model", [1, 2]),
        "version-a-word": _ckpt_with("format_version", "one"), "newer-version": _ckpt_with("format_version", 99),
        "weight-not-a-tensor": _ckpt_weight_not_tensor, "weight-missing": _ckpt_missing_weight,
        "inf-weight": _ckpt_nan, "pickled-object": _ckpt_pickled_object, "legacy-pickle": _ckpt_legacy_pickle,
        "no-marker": _ckpt_without("format"), "unknown-config-key": _ckpt_config_unknown,
        "a-zip-of-text": lambda f, path: _zip(path, {"notes.txt": "hello"}),
    },
    "onnx": {
        "other-output": _onnx_edit(_rename_output), "float-input": _onnx_edit(_float_input),
        "int-embedding": _onnx_edit(_int_embedding), "no-embedding": _onnx_edit(_drop_output),
        "nan-weight": _onnx_edit(_onnx_nan), "a-classifier": _onnx_classifier,
    },
    "gallery": {
        "no-rows": _gallery_edit(_g_empty), "model-a-list": _gallery_edit(_g_model_list),
        "model-sizes-wrong": _gallery_edit(_g_model_sizes), "labels-short": _gallery_edit(_g_labels_short),
        "int-embeddings": _gallery_edit(_g_ints), "no-embeddings": _gallery_edit(_g_no_embeddings),
        "inf-row": _gallery_edit(_g_nan), "1d-embeddings": _gallery_edit(_g_1d),
        "index-spec-a-list": _gallery_edit(_g_index_spec), "object-array": _g_object_array,
        "a-zip-of-text": lambda f, path: _zip(path, {"notes.txt": "hello"}),
    },
    "rois": {
        "a-string": _text('"whole frame"'), "infinity": _text("[[0, 0, Infinity, 40]]"),
        "nan": _text("[[0, 0, NaN, 40]]"), "huge": _text("[[0, 0, 1e300, 40]]"), "three-numbers": _text("[[0, 0, 4]]"),
        "words": _text('[["a", "b", "c", "d"]]'), "booleans": _text("[[true, false, true, true]]"),
        "a-number": _text("42"), "null": _text("null"), "backwards": _text("[[40, 40, 0, 0]]"),
        "source-a-number": _text('{"default": 3}'), "broken-json": _text("[[0, 0, 4"),
        "utf16": lambda f, path: _write(path, '[[0, 0, 40, 40]]'.encode("utf-16")),
    },
    "detections": {
        "nan-row": _text("1,-1,NaN,10,20,20,0.9\n"), "inf-row": _text("1,-1,10,10,inf,20,0.9\n"),
        "nan-frame": _text("nan,-1,10,10,20,20,0.9\n"), "huge-frame": _text("1e300,-1,10,10,20,20,0.9\n"),
        "fractional-frame": _text("1.5,-1,10,10,20,20,0.9\n"), "words": _text("frame,id,x,y,w,h,conf\n"),
        "too-few": _text("1,2,3\n"), "json": _text('{"frame": 1}\n'),
    },
    "events": {
        "an-array": _text("[1, 2, 3]\n"), "no-source": _text(_event(source=...)), "box-null": _text(_event(box=None)),
        "frame-a-word": _text(_event(frame="12")), "frame-negative": _text(_event(frame=-1)),
        "box-three": _text(_event(box=[1, 2, 3])), "nan-box": _text(_event(box=[1, 2, 3, 4]).replace("4]", "NaN]")),
        "track-a-word": _text(_event(track_id="a")), "not-json": _text("hello\n"), "a-number": _text("3\n"),
        "source-a-number": _text(_event(source=7)), "frame-bool": _text(_event(frame=True)),
    },
    "city": {
        "not-json": _city_json("cameras: [cam1]"), "an-array": _city_json([1, 2]),
        "no-cameras": _city_json({"frames": 3, "fog_beta": [0.5]}),
        "cameras-numbers": _city_json({"cameras": [1], "frames": 3, "fog_beta": [0.5]}),
        "camera-outside": _city_json({"cameras": ["../etc"], "frames": 3, "fog_beta": [0.5]}),
        "frames-a-word": _city_json({"cameras": ["cam1"], "frames": "3", "fog_beta": [0.5]}),
        "frames-zero": _city_json({"cameras": ["cam1"], "frames": 0, "fog_beta": [0.5]}),
        "frames-huge": _city_json({"cameras": ["cam1"], "frames": 10**12, "fog_beta": [0.5]}),
        "betas-short": _city_json({"cameras": ["cam1"], "frames": 3, "fog_beta": []}),
        "beta-nan": _city_json('{"cameras": ["cam1"], "frames": 3, "fog_beta": [NaN]}'),
        "random-bytes": lambda f, path: _random(path),
    },
    "config": {
        "broken-yaml": _text("optim: [1,\n"), "a-list": _text("- 1\n- 2\n"), "nan": _text("optim:\n  lr: .nan\n"),
        "unknown-key": _text("optim:\n  lrate: 0.1\n"), "section-a-number": _text("optim: 3\n"),
        "epochs-a-word": _text("optim:\n  epochs: many\n"), "tabs": _text("optim:\n\tlr: 1\n"),
    },
    "video": {
        "text": _text("not a video\n"), "json": _text('{"video": 1}'),
    },
}


def _zip(path: Path, members: dict[str, str]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in members.items():
            archive.writestr(name, text)
    return path


def _generic_for(kind: str) -> dict:
    damage = dict(GENERIC)
    sample = SITES[kind][0].good
    if sample:
        damage["truncated"] = lambda f, path, good=sample: _half(getattr(f, good), path)
    damage["wrong-kind"] = lambda f, path, other=WRONG_KIND[kind]: _write(path, getattr(f, other).read_bytes())
    return damage


# The video site's honest answers: a file of random bytes or a cut video may be a codec this
# OpenCV lacks, so "cannot open or read it" with exit 1 (an environment problem) is right there.
ENVIRONMENT_TOO = {("video", "random-bytes"), ("video", "truncated")}


def file_cases() -> list[tuple[str, int, str]]:
    """Every generic damage at every site (each verb checks its own inputs), and each kind's schema
    damage at its first site and, in turn, at one other (the sites of a kind share its loader)."""
    cases = []
    for kind, sites in SITES.items():
        for damage in _generic_for(kind):
            cases += [(kind, i, damage) for i in range(len(sites)) if not (kind == "city" and damage == "dev-null")]
        schema_sites = [i for i, site in enumerate(sites) if site.schema]
        for n, damage in enumerate(SCHEMA.get(kind, {})):
            cases += [(kind, 0, damage), (kind, schema_sites[n % len(schema_sites)], damage)]
    return sorted(set(cases))


FILE_CASES = file_cases()


@pytest.fixture(scope="module", autouse=True)
def warm_imports():
    """What the verbs import when they run, imported once here: each forked case then starts with
    them loaded instead of importing them again (seconds per case)."""
    import importlib

    for module in ("fogreid.runtime.backends", "fogreid.runtime.pipeline", "fogreid.runtime.gallery",
                   "fogreid.validate.compare", "fogreid.calibration.calibrate_onnx", "fogreid.export.exporter",
                   "fogreid.export.preflight", "fogreid.model.checkpoint", "fogreid.mtmc", "fogreid.train.loop",
                   "fogreid.demo", "onnxruntime", "polygraphy.backend.onnxrt", "cv2"):
        try:
            importlib.import_module(module)
        except ImportError:
            pass


@pytest.mark.parametrize("kind,site,damage", FILE_CASES,
                         ids=[f"{k}-{SITES[k][i].argv[0]}-{d}" for k, i, d in FILE_CASES])
def test_damaged_input_file(kind, site, damage, files, tmp_path):
    spec = SITES[kind][site]
    out = tmp_path / "case"
    out.mkdir()
    if kind in ("events", "city"):
        make_city(out)
    make = SCHEMA.get(kind, {}).get(damage) or _generic_for(kind)[damage]
    target = out / spec.name
    target.parent.mkdir(parents=True, exist_ok=True)
    bad = make(files, target)
    argv = [fill(a, files, out, bad) for a in spec.argv]
    shared = snapshot(files.root, deep=False)
    before = snapshot(out)
    outcome = forked(argv, tmp_path / "logs")
    codes = (1, 2) if (kind, damage) in ENVIRONMENT_TOO else (2,)
    check(outcome, (spec.option, str(bad), Path(bad).name), codes)
    after = snapshot(out)
    changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)
               and not any(k == o or k.startswith(o + os.sep) for o in spec.outputs)}
    assert not changed, f"changed outside the named outputs: {sorted(changed)}"
    assert snapshot(files.root, deep=False) == shared, "a shared input file changed"
    assert "weights_only=False" not in outcome.err


def test_the_battery_is_big_enough():
    assert len(FILE_CASES) >= 150 and len(NUMERIC) >= 60
