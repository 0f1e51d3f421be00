"""`fogreid train --mode frames`: the defog head tuned on whole frames (fogreid/train/frames.py),
and its scenes (fogreid/data/scenes.py)."""

import json
import subprocess

import cv2
import numpy as np
import onnx
import pytest
import torch

from fogreid.data.scenes import folder_scenes, generated_scenes, held_out_scenes
from fogreid.errors import FogreidError
from fogreid.model.checkpoint import load_network, read_checkpoint
from fogreid.model.fused import FusedDefogReID

from conftest import foggy_frames, make_checkpoint


def test_generated_scenes_are_reproducible_and_not_the_held_out_cameras():
    a, b = generated_scenes(2, 2, seed=0, size=(96, 128)), generated_scenes(2, 2, seed=0, size=(96, 128))
    assert len(a) == 4 and a.size == (96, 128)
    for i in range(len(a)):
        (clear_a, depth_a), (clear_b, depth_b) = a[i], b[i]
        assert clear_a.shape == (96, 128, 3) and clear_a.dtype == np.uint8 and np.array_equal(clear_a, clear_b)
        assert depth_a.shape == (96, 128) and 0 <= depth_a.min() and depth_a.max() <= 1 and np.isfinite(depth_a).all()
        assert np.array_equal(depth_a, depth_b)
    other_seed = generated_scenes(2, 2, seed=1, size=(96, 128))
    held_out = held_out_scenes((96, 128))
    assert not np.array_equal(a[0][0], other_seed[0][0])
    assert all(not np.array_equal(a[i][0], held_out[j][0]) for i in range(len(a)) for j in range(len(held_out)))


def test_a_folder_of_frames_with_and_without_depth_maps(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        cv2.imwrite(str(tmp_path / f"{name}.png"), rng.integers(0, 256, (96, 128, 3), dtype=np.uint8))
    depth = np.tile(np.linspace(0, 65535, 128, dtype=np.uint16), (96, 1))
    cv2.imwrite(str(tmp_path / "a_depth.png"), depth)
    scenes = folder_scenes(tmp_path)
    assert len(scenes) == 2 and scenes.size == (96, 128)
    frame, read_depth = scenes[0]
    assert frame.shape == (96, 128, 3) and np.allclose(read_depth, depth / 65535.0)
    _, geometric = scenes[1]     # no depth map: the street camera's, far at the top
    assert geometric[0].mean() > 0.9 and geometric[-1].mean() < 0.2

    cv2.imwrite(str(tmp_path / "c.jpg"), rng.integers(0, 256, (80, 128, 3), dtype=np.uint8))
    with pytest.raises(FogreidError, match=r"c\.jpg is 128x80"):
        folder_scenes(tmp_path)
    (tmp_path / "c.jpg").unlink()
    # A bad depth map is refused when the folder is read, not at the step that first draws its frame.
    for bad in (np.zeros((50, 50), np.uint8), np.zeros((96, 128, 3), np.uint8)):   # wrong size; colour
        cv2.imwrite(str(tmp_path / "b_depth.png"), bad)
        with pytest.raises(FogreidError, match="b_depth.png is not an 8- or 16-bit grey PNG"):
            folder_scenes(tmp_path)
    cv2.imwrite(str(tmp_path / "b_depth.png"), np.full((96, 128), 255, np.uint8))
    assert folder_scenes(tmp_path)[1][1].min() == 1.0
    with pytest.raises(FogreidError, match="no such folder"):
        folder_scenes(tmp_path / "missing")


def test_frame_batches_carry_the_transmission_that_fogged_them():
    """`loss.frame_transmission_weight` compares the head's transmission with the fog's own: each
    foggy frame must be its clear frame x t + airlight x (1 - t) with that t (before the rounding
    to uint8 levels), one airlight per frame and channel, flips included. The airlight is grey on
    about half the frames and coloured by up to `data.frame_airlight_tint` on the others."""
    from fogreid.train.config import build_config
    from fogreid.train.frames import FramesStep

    def airlight_colours(tint: float) -> list[float]:
        """Per frame of 3 steps, how far apart the airlight's channels are."""
        cfg = build_config(None, ["mode=frames", "data.frame_batch=4", "data.hflip=0.5",
                                  f"data.frame_airlight_tint={tint}"])
        step = FramesStep(cfg, None, generated_scenes(2, 2, seed=0, size=(48, 64)), torch.device("cpu"))
        spreads = []
        for global_step in range(3):
            foggy, clear, transmission = step.frame_batch(global_step)
            assert transmission.shape == (4, 1, 48, 64) and (transmission > 0).all() and (transmission <= 1).all()
            airlight = (foggy - clear * transmission) / (1 - transmission)
            for frame_airlight, haze in zip(airlight, (1 - transmission[:, 0] > 0.3), strict=True):
                solved = frame_airlight[:, haze]   # well conditioned: rounding moves it by < 0.007
                assert solved.shape[1] > 300 and float((solved.amax(1) - solved.amin(1)).max()) < 0.015
                spreads.append(float(solved.mean(1).max() - solved.mean(1).min()))
        return spreads

    grey = airlight_colours(0.0)
    assert max(grey) < 0.01
    coloured = airlight_colours(0.08)
    assert 3 <= sum(spread > 0.02 for spread in coloured) <= 9 and min(coloured) < 0.01 and max(coloured) < 0.17


def test_frame_fog_density_is_drawn_from_data_frame_beta():
    """The frames' scattering coefficient comes from `data.frame_beta`: with it fixed at b, each
    frame's transmission is exp(-b * depth), the same frames and depths as at b = 1 (the draws
    are the same), so t_b = t_1 ** b; a range whose low end is above its high end is refused."""
    from fogreid.train.config import build_config
    from fogreid.train.frames import FramesStep

    def transmission(beta: float) -> torch.Tensor:
        cfg = build_config(None, ["mode=frames", "data.frame_batch=3", f"data.frame_beta=[{beta}, {beta}]"])
        step = FramesStep(cfg, None, generated_scenes(2, 2, seed=0, size=(48, 64)), torch.device("cpu"))
        return step.frame_batch(0)[2]

    unit = transmission(1.0)
    assert torch.allclose(transmission(0.3), unit ** 0.3, atol=1e-5)
    assert torch.allclose(transmission(4.0), unit ** 4.0, atol=1e-5)
    with pytest.raises(FogreidError, match=r"data.frame_beta \[5.0, 1.0\]: give \[low, high\]"):
        build_config(None, ["mode=frames", "data.frame_beta=[5.0, 1.0]"])


def test_frames_mode_tunes_the_head_on_frames_and_keeps_the_embedding(trained, synth_root, tmp_path):
    from fogreid.train.config import build_config
    from fogreid.train.frames import train_frames

    init, _ = trained
    cfg = build_config(None, ["mode=frames", f"data.root={synth_root}", "optim.epochs=6", "optim.lr=3e-4",
                              "data.ids_per_batch=4", "data.instances_per_id=4", "data.num_workers=0",
                              "data.frame_cameras=4", "data.frames_per_camera=3", "data.frame_batch=2",
                              "data.frame_size=[192, 256]",
                              # The held-out cameras' fog (beta 1.5-4.5) is in this range; with the default
                              # [0.3, 5] this 6-epoch model gains their SSIM (+0.009) but loses 0.18 dB, as
                              # the demo's head loses 0.1-0.3 dB there (docs/benchmarks.md, Whole-frame defog).
                              "data.frame_beta=[1, 5]"])
    summary = train_frames(cfg, tmp_path / "run", init, progress=False)

    before, after = read_checkpoint(init)["model"], read_checkpoint(tmp_path / "run" / "best.pt")["model"]
    assert all(torch.equal(before[k], after[k]) for k in before)       # the init's weights, untouched
    added = set(after) - set(before)
    assert added and all(k.startswith(("frame_decoder.", "frame_enhance.")) for k in added)
    copies = [k for k in added if k.removeprefix("frame_") in after]
    assert any(not torch.equal(after[k], after[k.removeprefix("frame_")]) for k in copies)   # it learnt
    # The new head also reads layer3 (ModelConfig.frame_context), through a conv that starts at zero.
    assert set(added) - set(copies) == {"frame_decoder.context.weight", "frame_decoder.context.bias"}
    assert load_network(tmp_path / "run" / "best.pt").config.frame_context
    assert float(after["frame_decoder.context.weight"].abs().max()) > 0
    crops = torch.from_numpy(foggy_frames(synth_root, 16, "query"))
    with torch.inference_mode():
        (defogged_before, embedding_before), (defogged_after, embedding_after) = (
            FusedDefogReID(load_network(p))(crops) for p in (init, tmp_path / "run" / "best.pt"))
    # The crop graph is the init's: its defogged crops and embeddings (galleries made with the init still match).
    assert torch.equal(embedding_before, embedding_after) and torch.equal(defogged_before, defogged_after)

    frames = json.loads((tmp_path / "run" / "metrics.json").read_text())["frames"]
    assert frames == summary["frames"] and frames["downscale"] == 4
    assert all(np.isfinite(v) for part in ("init", "tuned") for v in frames[part].values())
    # On cameras it never saw, the whole-frame head's frames are closer to the clear render (this tiny
    # model gains about 0.01 SSIM and 0.1 dB at lr 3e-4; at 1e-3 with the frames weighted 10 it lost 0.1
    # dB for its SSIM; the demo's: docs/benchmarks.md, Whole-frame defog).
    assert frames["tuned"]["ssim"] > frames["init"]["ssim"] + 0.005, frames
    assert frames["tuned"]["psnr"] > frames["init"]["psnr"] - 0.1, frames


    # Exported, the whole-frame graph carries the new head (ONNX Runtime against PyTorch, OpenVINO
    # too) and the crop graph does not: it is the init's.
    from fogreid.export.exporter import ExportOptions, export
    from fogreid.export.formats import parse_formats
    from fogreid.export.frame_graph import DefogFrame
    from fogreid.sessions import openvino_model
    from fogreid.validate.frame import foggy_frames as foggy_whole_frames
    from fogreid.validate.frame import validate_frame_graph

    files = export(tmp_path / "run" / "best.pt", parse_formats("onnx"), tmp_path / "export",
                   ExportOptions(progress=False)).files
    check = validate_frame_graph(tmp_path / "run" / "best.pt", files["onnx-defog-frame"], data_root=str(synth_root))
    assert check.passed and check.figures["defog_psnr_db"] >= 40, [c.describe() for c in check.checks]
    tuned, untuned = DefogFrame(load_network(tmp_path / "run" / "best.pt")), DefogFrame(load_network(init))
    engine = openvino_model(files["onnx-defog-frame"])
    frame = foggy_whole_frames(None, str(synth_root), per_size=1)[0][None]
    with torch.inference_mode():
        want, before = tuned(torch.from_numpy(frame)).numpy(), untuned(torch.from_numpy(frame)).numpy()
    got = engine({"frames": frame})[engine.outputs[0]]
    assert np.abs(got.astype(int) - want).max() <= 1 < np.abs(before.astype(int) - want).max()
    assert "frame_decoder" not in str([node.name for node in onnx.load(files["onnx"]).graph.node])


def test_a_new_frame_head_reads_layer3_unless_asked_not_to_and_an_old_one_stays(trained, tmp_path):
    """--mode frames makes its whole-frame head read layer3 (model.frame_context, true unless set
    false); an init that has a frame head already keeps it as it is."""
    from fogreid.model.checkpoint import save_checkpoint
    from fogreid.train.frames import load_init

    init, _ = trained
    cpu = torch.device("cpu")
    assert load_init(init, cpu).frame_decoder.context is not None
    old_head = load_init(init, cpu, frame_context=False)
    assert old_head.frame_decoder.context is None and not old_head.config.frame_context
    save_checkpoint(tmp_path / "old_head.pt", old_head)
    kept = load_init(tmp_path / "old_head.pt", cpu)
    assert kept.frame_decoder.context is None and not kept.config.frame_context


def test_frames_mode_refuses_what_it_cannot_tune(fogreid_cmd, synth_root, tmp_path):
    base = fogreid_cmd + ["train", "--data", str(synth_root), "--out", str(tmp_path / "run"), "--quiet"]
    no_init = subprocess.run(base + ["--mode", "frames"], capture_output=True, text=True)
    assert no_init.returncode == 2 and "give --init RUN/best.pt" in no_init.stderr
    reid_only = make_checkpoint(tmp_path / "reid.pt", synth_root, defog=False)
    refused = subprocess.run(base + ["--mode", "frames", "--init", str(reid_only)], capture_output=True, text=True)
    assert refused.returncode == 2 and "reid.pt: its defog head is none" in refused.stderr
    wrong_mode = subprocess.run(base + ["--mode", "jdl", "--init", str(reid_only)], capture_output=True, text=True)
    assert wrong_mode.returncode == 2 and "--init is for --mode rvsl and --mode frames" in wrong_mode.stderr
    trained_64 = make_checkpoint(tmp_path / "sjdl.pt", synth_root)
    other_size = subprocess.run(base + ["--mode", "frames", "--init", str(trained_64), "--imgsz", "128"],
                                capture_output=True, text=True)
    assert other_size.returncode == 2
    assert "model.imgsz=[128, 128]: --mode frames trains the network" in other_size.stderr
    from fogreid.model.checkpoint import save_checkpoint
    from fogreid.train.frames import load_init

    save_checkpoint(tmp_path / "old_head.pt", load_init(trained_64, torch.device("cpu"), frame_context=False))
    conflict = subprocess.run(base + ["--mode", "frames", "--init", str(tmp_path / "old_head.pt"),
                                      "--set", "model.frame_context=true"], capture_output=True, text=True)
    assert conflict.returncode == 2 and "model.frame_context=True: --mode frames trains the network" in conflict.stderr
    assert not (tmp_path / "run" / "last.pt").exists()


def test_frames_mode_is_reproducible_across_processes(fogreid_cmd, synth_root, tmp_path):
    """The frames and fog of each step are drawn from (seed, step): two processes (each with its
    own string hashing) train the same head, as a resumed run must."""
    init = make_checkpoint(tmp_path / "init.pt", synth_root)
    heads = []
    for run in ("a", "b"):
        proc = subprocess.run(fogreid_cmd + [
            "train", "--mode", "frames", "--init", str(init), "--data", str(synth_root), "--out", str(tmp_path / run),
            "--epochs", "1", "--ids-per-batch", "4", "--instances-per-id", "2", "--quiet",
            "--set", "data.num_workers=0", "--set", "data.frame_cameras=2", "--set", "data.frames_per_camera=2",
            "--set", "data.frame_size=[128, 160]"], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-2000:]
        weights = read_checkpoint(tmp_path / run / "best.pt")["model"]
        heads.append({k: v for k, v in weights.items() if k.startswith("frame_")})
    assert heads[0] and all(torch.equal(heads[0][k], heads[1][k]) for k in heads[0])


def test_frames_mode_under_torchrun_two_processes(synth_root, tmp_path):
    """Two gloo processes: each takes every other crop batch and frames of its own (the rank is
    in the draws' key); the head trains through DistributedDataParallel and rank 0 writes the run."""
    import os
    import sys

    init = make_checkpoint(tmp_path / "init.pt", synth_root)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "fogreid", "train", "--mode", "frames", "--init", str(init), "--data", str(synth_root),
                           "--out", str(tmp_path / "ddp"), "--epochs", "1", "--ids-per-batch", "4",
                           "--instances-per-id", "2", "--device", "cpu", "--quiet", "--set", "data.num_workers=0",
                           "--set", "data.frame_cameras=2", "--set", "data.frames_per_camera=2",
                           "--set", "data.frame_size=[128, 160]"],
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    before, after = read_checkpoint(init)["model"], read_checkpoint(tmp_path / "ddp" / "best.pt")["model"]
    assert any(not torch.equal(after[k], before[k.removeprefix("frame_")]) for k in after if k.startswith("frame_"))
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert json.loads((tmp_path / "ddp" / "metrics.json").read_text())["frames"]["tuned"]["ssim"] > 0
