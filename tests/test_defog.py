"""The defog head: both decoders, the whole-frame graph against PyTorch, the eval-only clear
images of the real-like split."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fogreid.errors import FogreidError
from fogreid.model.build import build_model
from fogreid.model.config import preset
from fogreid.model.sjdl import PaperDecoder, ResidualBlock, ScatterDecoder


def test_paper_preset_builds_the_published_decoder():
    net = build_model(preset("paper"))
    assert isinstance(net.decoder, PaperDecoder) and not net.enhance.residual
    # A residual block before each of the three stages, at 256, 128 and 64 channels.
    blocks = [m for m in net.decoder.children() if isinstance(m, ResidualBlock)]
    assert [b.body[1].in_channels for b in blocks] == [256, 128, 64]
    assert net.decoder.to_rgb[1].kernel_size == (7, 7)


@pytest.mark.parametrize("head", ["detail", "scatter"])
def test_scatter_head_starts_from_the_dark_channel_prior(head):
    from fogreid.data.fog import scatter

    torch.manual_seed(0)
    net = build_model(preset("edge", imgsz=(64, 64), defog_head=head)).eval()
    assert isinstance(net.decoder, ScatterDecoder) and net.enhance.residual
    clear = torch.rand(2, 3, 64, 64) * 0.6  # dark pixels in every patch, as the prior assumes
    depth = torch.linspace(1.0, 0.1, 64).view(1, 1, 64, 1).expand(2, 1, 64, 64)  # far at the top
    foggy = scatter(clear, depth, torch.tensor([3.0, 4.0]), torch.tensor([0.8, 0.9]))
    with torch.no_grad():
        net.decoder.head.weight.zero_()  # no learned correction: the prior alone
        t0, a0 = net.decoder.prior(foggy)
        coarse, defogged = net.defog(foggy)
        # The detail head starts with a gain of sigmoid(3) = 0.95 on the fine detail.
        gain = torch.full_like(t0, torch.sigmoid(torch.tensor(3.0)).item()) if head == "detail" else None
    # The prior finds the airlight in the far rows and a transmission that falls with depth ...
    torch.testing.assert_close(a0.flatten(1), torch.tensor([[0.8] * 3, [0.9] * 3]), atol=0.05, rtol=0)
    assert (t0[..., 40:, :].mean() > t0[..., :20, :].mean() + 0.3)
    # ... the output is the scattering model inverted with them, and clearer than the input.
    torch.testing.assert_close(coarse, ScatterDecoder.compose(foggy, t0, a0, gain))
    if head == "scatter":
        torch.testing.assert_close(coarse, ((foggy - a0) / t0 + a0).clamp(0, 1))
    assert torch.equal(coarse, defogged)  # the residual enhancement starts at zero
    near = (..., slice(32, None), slice(None))  # the far rows are fog only (t ~ 0.05 at the top)
    assert (coarse - clear)[near].abs().mean() < 0.6 * (foggy - clear)[near].abs().mean()


def _street(size: int = 64) -> torch.Tensor:
    """A noise-free (1, 3, size, size) scene in dense fog (airlight 0.8, t = 0.2: values the
    inversion keeps within [0, 1]): flat road and sky, a box with sharp edges and thin lines (a
    vehicle's outline and stripes)."""
    image = torch.full((1, 3, size, size), 0.74)
    image[..., size // 2:, :] = 0.70
    image[..., size // 4:size // 2, size // 4:3 * size // 4] = 0.78
    image[..., 3 * size // 8, size // 4:3 * size // 4] = 0.72
    image[..., :, 3 * size // 4 + 4] = 0.76
    return image


def _noisy(image: torch.Tensor, sigma: float, seed: int = 0) -> torch.Tensor:
    noise = torch.randn(image.shape, generator=torch.Generator().manual_seed(seed))
    return (image + sigma * noise).clamp(0, 1)


def test_detail_noise_std_finds_the_noise_and_none_on_a_clean_image():
    """The ladder's 25th percentile, on a scene with edges: within a rung of the fine band's true
    noise (0.913 of the image noise's std, for white noise), and zero where there is no noise."""
    from fogreid.model.sjdl import NOISE_LADDER_R, detail_noise_std, fine_detail_split

    street = _street(128)
    assert float(detail_noise_std(fine_detail_split(street)[1])) == 0.0
    for sigma in (1 / 255, 3 / 255, 8 / 255):
        _, detail = fine_detail_split(_noisy(street, sigma))
        for stride in (2, 4, 8):
            found = float(detail_noise_std(detail, stride)) / (0.913 * sigma)
            assert NOISE_LADDER_R ** -1 < found < NOISE_LADDER_R, (sigma, stride, found)


def test_middle_band_noise_share_matches_its_blurs():
    """MID_NOISE is what white noise puts in the middle band (the 5x5 blur less its block means)
    relative to the fine band: the shrinkage thresholds both bands at the same number of noise
    stds only while the constant matches the blurs."""
    from fogreid.model.sjdl import fine_detail_split

    noise = torch.randn(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(0))
    base, detail = fine_detail_split(noise)
    for pool, share in ((ScatterDecoder.MID_POOL, ScatterDecoder.MID_NOISE),
                        (ScatterDecoder.FRAME_MID_POOL, ScatterDecoder.FRAME_MID_NOISE)):
        coarse = ScatterDecoder.coarse_base(base, pool)
        assert abs(float((base - coarse).std() / detail.std()) - share) < 0.005, pool


def test_whole_frames_invert_a_uint8_gradient_without_bands():
    """A road receding into dense fog (t = 0.1): its slow gradient arrives as uint8 steps 32 rows
    apart, and the inversion multiplies each by 10 into bands. `deband` brings the gradient back
    within 2 levels of the true one's inversion, where the crops' compose keeps the steps (over 4
    levels off); a faint edge of 3 levels along the road keeps at least 2 of them (20 after the
    inversion)."""
    rows = torch.arange(256, dtype=torch.float64).view(1, 1, 256, 1)
    true = (0.76 + rows / 32 / 255).expand(1, 3, 256, 256).clone()   # one level every 32 rows
    true[..., 100:, 128:] += 3 / 255                                  # a faint edge, along the rows
    image = (true * 255).round() / 255
    t, airlight, gain = torch.full((1, 1, 256, 256), 0.1), torch.full((1, 3, 1, 1), 0.8), torch.ones(1, 1, 256, 256)

    def off_by(out: torch.Tensor) -> float:   # grey levels from the true gradient's inversion, on the road
        truth = ScatterDecoder.compose(true, t, airlight, gain, noise_stride=8, deband=False)
        return float((out - truth)[..., 16:240, 16:112].abs().max()) * 255

    debanded = ScatterDecoder.compose(image, t, airlight, gain, noise_stride=8, deband=True)
    banded = ScatterDecoder.compose(image, t, airlight, gain, noise_stride=8, deband=False)
    assert off_by(debanded) < 2.0 < 4.0 < off_by(banded)
    edge = float((debanded[..., 150:200, 136:160] - debanded[..., 150:200, 96:120]).mean()) * 255
    assert 2 * 10 <= edge <= 3 * 10 + 1


def test_dense_fog_inversion_keeps_edges_and_drops_the_noise():
    """t = 0.2: the plain inversion multiplies sensor noise by 5. The detail head amplifies the
    fine detail at most 2x and takes the noise out of the two finer bands first: on the flat road
    its noise ends well below the input's, while the box and the stripe keep most of the contrast
    it gives them without noise. Without noise the bands pass whole; where t >= 0.5 a gain of 1
    is the plain inversion."""
    clean = _street()
    image = _noisy(clean, 0.01)
    t, airlight = torch.full((1, 1, 64, 64), 0.2), torch.full((1, 3, 1, 1), 0.8)
    plain = ScatterDecoder.compose(image, t, airlight)
    full = ScatterDecoder.compose(image, t, airlight, torch.ones_like(t))
    road = (..., slice(48, 60), slice(4, 40))
    assert plain[road].std() > 4.5 * image[road].std()
    assert full[road].std() < 0.6 * image[road].std()
    assert abs(full[road].mean() - plain[road].mean()) < 0.01
    # The box against the sky above it and the dark stripe across it, as the head restores them
    # without noise: the noise goes, most of the structure stays. The box and the stripe are faint
    # (0.04 and 0.06 in the input, 4 and 6 noise stds): they lose a little with the noise.
    reference = ScatterDecoder.compose(clean, t, airlight, torch.ones_like(t))
    box, sky, stripe = (..., slice(19, 22), slice(20, 44)), (..., slice(9, 13), slice(20, 44)), (..., 24, slice(20, 44))
    assert abs((reference[box].mean() - reference[sky].mean()) - 0.2) < 0.01      # (0.78 - 0.74) / t
    assert (full[box].mean() - full[sky].mean()) > 0.8 * 0.2
    assert (full[box].mean() - full[stripe].mean()) > 0.6 * (reference[box].mean() - reference[stripe].mean())
    # Noise-free: nothing is shrunk, the fine detail is divided by max(t, 0.5).
    from fogreid.model.sjdl import fine_detail_split
    base, detail = fine_detail_split(clean)
    torch.testing.assert_close(ScatterDecoder.compose(clean, t, airlight, torch.ones_like(t)),
                               ((base - airlight) / t + detail / 0.5 + airlight).clamp(0, 1))
    light = torch.full_like(t, 0.6)
    torch.testing.assert_close(ScatterDecoder.compose(clean, light, airlight, torch.ones_like(t)),
                               ScatterDecoder.compose(clean, light, airlight))


def test_whole_frames_bound_the_cast_of_an_airlight_with_the_wrong_colour():
    """A grey building at t = 0.12 under a grey airlight of 0.8, inverted with an airlight 0.01 too
    green: the plain inversion multiplies the error by 1 / t - 1 = 7.3 into a magenta cast (the
    largest channel 12 grey levels from the mean of the three); the whole-frame graph's chroma
    bound multiplies the colour by at most 1 / 0.35, which leaves a quarter of it (3 levels). The
    grey level is the plain inversion's; where t >= the bound, so is everything, and the colour of
    a near vehicle is restored whole."""
    from fogreid.export.frame_graph import FRAME_CHROMA_T_MIN
    from fogreid.model.sjdl import invert

    building, t = 0.4, torch.full((1, 1, 8, 8), 0.12)
    foggy = torch.full((1, 3, 8, 8), t[0, 0, 0, 0] * building + (1 - t[0, 0, 0, 0]) * 0.8)
    wrong = torch.tensor([0.8, 0.81, 0.8]).view(1, 3, 1, 1)

    def cast(j: torch.Tensor) -> float:
        return float((j - j.mean(dim=1, keepdim=True)).abs().amax()) * 255

    plain = ScatterDecoder.compose(foggy, t, wrong)
    bounded = ScatterDecoder.compose(foggy, t, wrong, chroma_t_min=FRAME_CHROMA_T_MIN)
    assert cast(plain) > 12 and cast(bounded) < 0.27 * cast(plain)
    torch.testing.assert_close(bounded.mean(dim=1), plain.mean(dim=1))
    near = torch.full_like(t, 0.6)
    torch.testing.assert_close(ScatterDecoder.compose(foggy, near, wrong, chroma_t_min=FRAME_CHROMA_T_MIN),
                               ScatterDecoder.compose(foggy, near, wrong))
    red = torch.tensor([0.9, 0.2, 0.2]).view(1, 3, 1, 1)
    vehicle = 0.6 * (red - 0.8)    # I - A of a red vehicle at t = 0.6
    torch.testing.assert_close(invert(vehicle, near[..., :1, :1], FRAME_CHROMA_T_MIN), red - 0.8)
    assert torch.equal(invert(foggy - wrong, t), (foggy - wrong) / t)


def test_defog_runs_on_any_frame_size():
    from fogreid.export.frame_graph import DefogFrame

    torch.manual_seed(0)
    for head in ("detail", "scatter"):
        frame_model = DefogFrame(build_model(preset("edge", imgsz=(64, 64), defog_head=head)))
        for h, w in ((37, 53), (96, 128)):
            frames = torch.randint(0, 256, (1, h, w, 3), dtype=torch.uint8)
            assert frame_model(frames).shape == frames.shape
    with pytest.raises(FogreidError, match="only the scatter heads"):
        DefogFrame(build_model(preset("edge", defog_head="paper")))
    with pytest.raises(FogreidError, match="no defog head"):
        DefogFrame(build_model(preset("edge", defog=False)))


def test_frame_graph_beside_the_fused_graph_matches_pytorch(exported, synth_root):
    """`--format onnx` writes both graphs; the frame graph takes any H, W and validates."""
    from fogreid.onnx_graph import read_metadata
    from fogreid.validate.frame import MAX_GREY_DIFF_FP32, is_frame_graph, validate_frame_graph

    ckpt, result = exported
    frame_path = result.files["onnx-defog-frame"]
    assert read_metadata(result.files["onnx"])["graph"] == "fused-crop"
    assert read_metadata(frame_path)["graph"] == "defog-frame" and is_frame_graph(frame_path)
    assert not is_frame_graph(result.files["onnx"])
    check = validate_frame_graph(ckpt, frame_path, data_root=str(synth_root))
    assert check.passed, [c.describe() for c in check.checks]
    assert check.figures["defog_psnr_db"] >= 40 and check.figures["defog_max_grey_diff"] <= MAX_GREY_DIFF_FP32


def test_guided_upsampling_puts_a_map_edge_on_the_frame_edge():
    """A transmission that follows the scene (here an affine function of the grey image, with an
    edge between two cells of the small grid) comes back sharp at full resolution; bilinear
    upsampling smears it over the small grid's cells (the halo of defogged objects)."""
    import torch.nn.functional as F

    from fogreid.export.frame_graph import guided_upsample

    full = torch.full((1, 1, 64, 96), 0.8)
    full[..., 41:] = 0.3                                   # the edge at x = 41, inside a 4-pixel cell
    small = F.avg_pool2d(full, 4, ceil_mode=True)
    truth, small_map = 0.1 + 0.8 * full, 0.1 + 0.8 * small
    guided = guided_upsample(small, small_map, full)
    bilinear = F.interpolate(small_map, size=full.shape[-2:], mode="bilinear", align_corners=False)
    assert (guided - truth).abs().max() < 0.02 < 0.1 < (bilinear - truth).abs().max()


def block_depth(frame: np.ndarray, around: tuple[slice, slice], block: tuple[slice, slice]) -> float:
    """How much darker than its surround a block of `frame` comes out of a fresh 64 px model's
    whole-frame graph (the head at its dark-channel prior), in grey levels."""
    from fogreid.export.frame_graph import DefogFrame

    torch.manual_seed(0)
    net = build_model(preset("edge", imgsz=(64, 64), defog_head="detail")).eval()
    with torch.inference_mode():
        out = DefogFrame(net, 4)(torch.from_numpy(frame)).numpy().astype(float)[0]
    return out[around].mean() - out[block].mean()


def test_whole_frames_keep_the_transmission_above_he_et_al_s_floor(monkeypatch):
    """A bright foggy frame with a faintly darker block (5 grey levels): the prior puts its
    transmission near 0.07, below the whole-frame floor of 0.1, so the block comes out
    5 / 0.1 = 50 levels darker than its surround, not the ~70 of the head's own floor."""
    from fogreid.export import frame_graph

    frame = np.full((1, 256, 256, 3), 230, np.uint8)
    frame[:, 96:224, 64:192] = 225
    where = (slice(20, 60), slice(100, 160)), (slice(140, 180), slice(100, 160))
    assert frame_graph.FRAME_T_MIN == 0.1 and 45 < block_depth(frame, *where) < 55
    monkeypatch.setattr(frame_graph, "FRAME_T_MIN", ScatterDecoder.T_MIN)
    assert block_depth(frame, *where) > 65


def test_whole_frames_hold_the_transmission_near_the_frames_median(monkeypatch):
    """Light fog: a grey street under a bright sky with a faintly darker block (5 grey levels). The
    prior puts the sky's transmission near its floor, as it would in dense fog, and the inversion
    made the block ~50 levels darker; the frame's median transmission (the street's, ~0.65) says
    the fog is light, and the transmission held at 0.8 of it (0.54) leaves the block about 5 / 0.54
    darker."""
    from fogreid.export import frame_graph

    frame = np.full((1, 384, 256, 3), 80, np.uint8)
    frame[:, :160] = 230
    frame[:, 40:112, 64:192] = 225
    where = (slice(8, 30), slice(100, 160)), (slice(56, 96), slice(100, 160))
    assert frame_graph.FRAME_T_MEDIAN_SHARE == 0.8 and 5 < block_depth(frame, *where) < 15
    monkeypatch.setattr(frame_graph, "FRAME_T_MEDIAN_SHARE", 0.0)
    assert block_depth(frame, *where) > 40


def test_frame_median_is_the_median_to_a_bin():
    from fogreid.export.frame_graph import MEDIAN_BINS, frame_median

    torch.manual_seed(0)
    t = torch.stack([torch.rand(1, 30, 40) ** 3, 0.1 + 0.05 * torch.rand(1, 30, 40), torch.full((1, 30, 40), 0.7)])
    want = torch.quantile(t.flatten(1), 0.5, dim=1)
    got = frame_median(t).flatten()
    assert got.shape == (3,) and ((got - want).abs() <= 1 / MEDIAN_BINS).all()


def test_frame_graph_runs_small_and_reads_the_same_on_openvino(exported, synth_root, capsys):
    """The network runs at 1/downscale of the frame (4 for this 64 px model) and its maps are
    upsampled in the graph; OpenVINO reads that graph as PyTorch computes it, odd sizes too, with
    the size left dynamic and compiled for each frame size as `fogreid run` does (FrameDefogger's
    engines), and `--backend auto` measures both on the first frame and says which it keeps."""
    import cv2

    from fogreid.export.frame_graph import DefogFrame
    from fogreid.model.checkpoint import load_network
    from fogreid.onnx_graph import read_metadata
    from fogreid.runtime.frame_defog import FrameDefogger
    from fogreid.sessions import openvino_model
    from fogreid.validate.frame import FRAME_SIZES, foggy_frames

    ckpt, result = exported
    frame_path = result.files["onnx-defog-frame"]
    meta = read_metadata(frame_path)
    assert meta["downscale"] == "4" and meta["min_side"] == "128"
    reference, engine = DefogFrame(load_network(ckpt), 4), openvino_model(frame_path)
    defoggers = {backend: FrameDefogger(frame_path, "cpu", backend) for backend in ("onnxruntime", "openvino", "auto")}
    for frame in foggy_frames(None, str(synth_root), per_size=1):
        with torch.inference_mode():
            want = reference(torch.from_numpy(frame[None])).numpy()
        got = engine({"frames": frame[None]})[engine.outputs[0]]
        assert got.shape == want.shape and np.abs(got.astype(int) - want).max() <= 1
        for defogger in defoggers.values():
            assert np.abs(defogger(frame).astype(int) - want[0]).max() <= 1
    assert {f.shape[:2] for f in foggy_frames(None, str(synth_root), per_size=1)} == set(FRAME_SIZES)
    assert set(defoggers["openvino"].engine.compiled) == {(1, h, w, 3) for h, w in FRAME_SIZES}
    assert defoggers["openvino"].session is None and defoggers["onnxruntime"].choice == "onnxruntime"
    line = capsys.readouterr().err.strip().splitlines()
    assert len(line) == 1 and line[0] == defoggers["auto"].choice and line[0].startswith(
        "backend auto (whole frames): ") and "ms/batch of 1) over" in line[0]
    with pytest.raises(FogreidError, match="--backend tensorrt: the whole-frame defog graph runs on"):
        FrameDefogger(frame_path, "cpu", "tensorrt")
    frame = np.full((120, 160, 3), 200, np.uint8)
    with pytest.raises(FogreidError, match="smaller than this whole-frame defog graph takes"):
        FrameDefogger(frame_path)(cv2.resize(frame, (160, 120)))


def test_real_split_pairs_clear_eval_images_for_scoring_only(synth_root):
    from fogreid.data.datasets import ReIDImages, load_fvrid

    base = synth_root / "FVRID_real"
    assert not (base / "train_clear_eval").exists()
    for split in ("query", "gallery"):
        assert sorted(p.name for p in (base / f"{split}_clear_eval").iterdir()) == \
            sorted(p.name for p in (base / f"{split}_foggy").iterdir())
    real = load_fvrid(synth_root, "real")
    assert real.paired and all(r.clear_path is None for r in real.train)
    assert all(r.clear_path.parent.name.endswith("_clear_eval") for r in real.query + real.gallery)
    # What training reads from the real domain carries no clear image.
    assert "clear" not in ReIDImages(real.train, (64, 64), real.train_labels())[0]


def test_eval_scores_the_real_split(trained, synth_root):
    from fogreid.data.datasets import load_fvrid
    from fogreid.model.fused import FusedDefogReID
    from fogreid.train.evaluation import evaluate

    metrics = evaluate(FusedDefogReID.from_checkpoint(trained[0]), load_fvrid(synth_root, "real"), progress=False)
    assert 5 < metrics["psnr"] < 60 and 0 < metrics["ssim"] <= 1
    assert np.isfinite(metrics["psnr_foggy"])


def test_run_writes_defogged_whole_frames(exported, synth_root, tmp_path, fogreid_cmd):
    import subprocess

    import cv2

    from fogreid.data.datasets import load_fvrid
    from fogreid.data.synth_video import make_video
    from fogreid.runtime.frame_defog import FrameDefogger
    from tests.conftest import SMALL

    _, result = exported
    ids = sorted({r.pid for r in load_fvrid(synth_root, "syn").gallery})[:4]
    video = make_video(tmp_path / "video", SMALL, ids, frames=6, hold=3)
    out = tmp_path / "out.mp4"
    cmd = fogreid_cmd + ["run", "--model", str(result.files["onnx"]), "--source", str(video["video"]),
                         "--rois", str(video["rois"]), "--save-video", str(out), "--defog-view", "frame",
                         "--defog", "always"]
    # --backend auto (the default) times both engines on the first frame; openvino runs the frames there too.
    for backend, says in (("auto", "backend auto (whole frames): "), ("openvino", "openvino:model.onnx")):
        done = subprocess.run(cmd + ["--backend", backend], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0 and says in done.stderr, done.stderr
        source, written = cv2.VideoCapture(str(video["video"])), cv2.VideoCapture(str(out))
        raw, shown = source.read()[1], written.read()[1]
        assert int(written.get(cv2.CAP_PROP_FRAME_COUNT)) == 6 and shown.shape == raw.shape
        # Away from the boxes, the saved frame is the defogged frame (up to the video codec).
        expected = FrameDefogger(result.files["onnx-defog-frame"])(raw)
        rows = slice(0, 40)  # the sky above the vehicles
        to_defogged = np.abs(shown[rows].astype(int) - expected[rows]).mean()
        to_raw = np.abs(shown[rows].astype(int) - raw[rows]).mean()
        assert to_defogged < 0.5 * to_raw, (backend, to_defogged, to_raw)
        out.unlink()
    # Without the frame graph beside the model: one clear line, exit 2.
    lone = tmp_path / "lone" / "model.onnx"
    lone.parent.mkdir()
    lone.write_bytes(result.files["onnx"].read_bytes())
    done = subprocess.run(cmd[:cmd.index("--model") + 1] + [str(lone)] + cmd[cmd.index("--model") + 2:],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "model_defog_frame.onnx" in done.stderr and "Traceback" not in done.stderr


def test_a_whole_frame_head_with_layer3_starts_as_the_one_without_and_reads_it():
    """ModelConfig.frame_context: the whole-frame head's decoder adds layer3 through a 1x1 conv that
    starts at zero, so a head made from another starts where it was; once that conv learns, layer3
    moves the frame's maps. Only a model with a frame head has one."""
    torch.manual_seed(0)
    without = build_model(preset("edge", imgsz=(64, 64), defog_head="detail", frame_head=True)).eval()
    with_layer3 = build_model(preset("edge", imgsz=(64, 64), defog_head="detail", frame_head=True,
                                     frame_context=True)).eval()
    with_layer3.load_state_dict({**with_layer3.state_dict(), **without.state_dict()})
    image = torch.rand(1, 3, 96, 128)
    with torch.inference_mode():
        before, after = without.defog_maps(image, whole_frame=True), with_layer3.defog_maps(image, whole_frame=True)
        assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))
        torch.nn.init.normal_(with_layer3.frame_decoder.context.weight, std=0.1)
        moved = with_layer3.defog_maps(image, whole_frame=True)
        crops_kept = torch.equal(without.defog(image)[1], with_layer3.defog(image)[1])
    # (the head's last conv starts near zero too, so the move is small: exactly 0 if layer3 were not read)
    assert float((moved[0] - before[0]).abs().max()) > 1e-6 and crops_kept   # the crops' head has no layer3
    with pytest.raises(FogreidError, match="frame_context: only a model with a frame head"):
        preset("edge", imgsz=(64, 64), frame_context=True)


def test_min_filter_is_the_square_windows_minimum_in_two_passes():
    """The dark channel prior's 15x15 minimum, taken as a column's then a row's (OpenVINO ran the
    square window as one slow pool): equal to the square window's, at the borders and on maps
    smaller than the window."""
    import torch.nn.functional as F

    from fogreid.model.sjdl import _min_filter

    for shape in ((3, 1, 64, 64), (2, 1, 37, 53), (1, 1, 7, 9), (1, 3, 120, 160)):
        x = torch.rand(shape, generator=torch.Generator().manual_seed(0))
        for patch in (3, 15):
            assert torch.equal(_min_filter(x, patch), -F.max_pool2d(-x, patch, stride=1, padding=patch // 2))
