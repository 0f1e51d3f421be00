"""What fogreid leaves on disk: readable by other users, no stale temporary files, slim
deployment checkpoints, a synth that never deletes what it did not write."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from fogreid.fileio import atomic_write, clean_stale_tmp


def test_atomic_write_respects_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        code = ("from fogreid.fileio import atomic_write\n"
                f"with atomic_write({str(tmp_path / 'a.bin')!r}) as f: f.write(b'x')\n")
        subprocess.run([sys.executable, "-c", code], check=True)
    finally:
        os.umask(old)
    assert (tmp_path / "a.bin").stat().st_mode & 0o777 == 0o644  # as open() would: not mkstemp's 0600


def test_next_write_removes_what_a_killed_writer_left(tmp_path):
    # A writer killed mid-write (its pid is gone) left its temporary file.
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    stale = tmp_path / f".best.pt.fogreid-{dead}-abc123.tmp"
    stale.write_bytes(b"0" * 1000)
    live = tmp_path / f".other.pt.fogreid-{os.getpid()}-xyz.tmp"   # a live writer's file stays
    live.write_bytes(b"1")
    mine = tmp_path / "notes.tmp"                         # not ours: stays
    mine.write_text("keep")
    with atomic_write(tmp_path / "last.pt") as handle:
        handle.write(b"new")
    assert not stale.exists() and live.exists() and mine.exists()
    assert (tmp_path / "last.pt").read_bytes() == b"new"
    assert clean_stale_tmp(tmp_path) == []


def test_cleanup_never_touches_a_users_temp_files(tmp_path):
    # Issue 23: `fogreid gallery --out dir/g.npz` deleted the user's 3-hour-old dir/.thesis.draft.tmp,
    # which the old pattern took for a writer's leftover. Only names with fogreid's marker are ours.
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    users = [tmp_path / ".thesis.draft.tmp", tmp_path / f".notes.{dead}-abc123.tmp", tmp_path / ".a.b_c.tmp"]
    three_hours_ago = time.time() - 3 * 3600
    for path in users:
        path.write_text("mine")
        os.utime(path, (three_hours_ago, three_hours_ago))
    with atomic_write(tmp_path / "g.npz") as handle:
        handle.write(b"new")
    assert all(path.read_text() == "mine" for path in users)
    assert clean_stale_tmp(tmp_path) == []


def test_deploy_checkpoint_drops_training_state(tmp_path):
    import torch

    from fogreid.model import build_model, preset, read_checkpoint, save_checkpoint

    net = build_model(preset("edge", imgsz=(64, 64), num_ids=4))
    optimiser = torch.optim.Adam(net.parameters())
    net(torch.zeros(2, 3, 64, 64)).bn_feat.sum().backward()
    optimiser.step()
    extras = {"optimizer": optimiser.state_dict(), "epoch": 3, "best": {"epoch": 2, "mAP": 0.5}}
    save_checkpoint(tmp_path / "last.pt", net, **extras)
    save_checkpoint(tmp_path / "best.pt", net, deploy=True, **extras)
    best, last = read_checkpoint(tmp_path / "best.pt"), read_checkpoint(tmp_path / "last.pt")
    assert "optimizer" in last and "optimizer" not in best and best["epoch"] == 3
    assert (tmp_path / "best.pt").stat().st_size < 0.45 * (tmp_path / "last.pt").stat().st_size


def test_synth_overwrite_replaces_only_its_own_folders(tmp_path):
    from fogreid.data.synth import SynthConfig, generate

    (tmp_path / "FVRID_syn").mkdir()
    (tmp_path / "FVRID_syn" / "old.jpg").write_bytes(b"old")
    (tmp_path / "thesis.tex").write_text("draft")
    generate(tmp_path, SynthConfig(ids=4, cams=2, per_cam=2, queries_per_id=1, imgsz=32), progress=False,
             overwrite=True)
    assert (tmp_path / "thesis.tex").read_text() == "draft"
    assert not (tmp_path / "FVRID_syn" / "old.jpg").exists() and (tmp_path / "fogreid_synth.json").is_file()
    # Its own folder (marker present) is regenerated without --overwrite.
    generate(tmp_path, SynthConfig(ids=4, cams=2, per_cam=2, queries_per_id=1, imgsz=32, seed=1), progress=False)


def test_float_tiff_is_scaled_not_black(tmp_path):
    import cv2

    from fogreid.data import read_image

    image = np.zeros((16, 16, 3), np.float32)
    image[..., 2] = 0.8  # red, in [0, 1] as float TIFFs hold it
    path = tmp_path / "f.tif"
    assert cv2.imwrite(str(path), image)
    got = read_image(path)
    assert got.dtype == np.uint8 and abs(int(got[..., 2].mean()) - 204) <= 1 and got[..., :2].max() == 0


def test_every_option_has_help_and_shows_its_default():
    import argparse

    from fogreid.cli import build_parser

    parser = build_parser()
    verbs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    missing = []
    for name, sub in verbs.choices.items():
        formatter = sub._get_formatter()
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            text = formatter._get_help_string(action) if action.help else ""
            if not text:
                missing.append(f"{name} {action.option_strings}: no help")
            elif action.default not in (None, False) and "default" not in text:
                missing.append(f"{name} {action.option_strings}: default {action.default!r} not shown")
    assert not missing, "\n".join(missing)


@pytest.mark.parametrize("argv", [["train", "--out", "x", "--epochs", "0"],
                                  # config checks too
                                  ["train", "--out", "x", "--data", ".", "--set", "optim.epochs=0"],
                                  ["run", "--model", "m", "--source", "s", "--batch", "0"]])
def test_argument_errors_come_before_heavy_imports(argv, fogreid_cmd):
    import time

    start = time.perf_counter()
    out = subprocess.run(fogreid_cmd + argv, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert seconds < 3, f"{seconds:.1f} s"  # under 1 s on an idle machine; slack for a loaded CI


def test_train_refuses_a_previous_run_and_overwrite_starts_afresh(tmp_path, capsys):
    # Issue 23: `train --out RUN` into a finished run overwrote best.pt / last.pt and gave
    # history.jsonl a second "epoch 1", exit 0. Now: refused without --resume or --overwrite;
    # --overwrite replaces the run, history and all, never appends to it.
    from fogreid.cli import main
    from fogreid.data.synth import SynthConfig, generate

    data, run = tmp_path / "data", tmp_path / "run"
    generate(data, SynthConfig(ids=8, cams=2, per_cam=2, imgsz=64, seed=5), progress=False)
    argv = ["train", "--data", str(data), "--out", str(run), "--mode", "reid", "--imgsz", "64", "--epochs", "1",
            "--ids-per-batch", "2", "--instances-per-id", "2", "--set", "data.num_workers=0", "--quiet"]
    assert main(argv) == 0
    first = {name: (run / name).read_bytes() for name in ("last.pt", "best.pt", "history.jsonl")}
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--resume" in err[0] and "--overwrite" in err[0], err
    assert {name: (run / name).read_bytes() for name in first} == first
    (run / "notes.txt").write_text("mine")  # not the run's: stays
    assert main(argv + ["--overwrite", "--seed", "1"]) == 0
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in history] == [1]
    assert (run / "last.pt").read_bytes() != first["last.pt"] and (run / "notes.txt").read_text() == "mine"
