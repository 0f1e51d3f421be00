import math

import numpy as np
import pytest
import torch

from fogreid.data.fog import FogRanges, default_depth, gaussian_blur, load_depth, real_like_fog, scatter, synthetic_fog
from fogreid.errors import FogreidError


def test_scattering_formula_on_constant_images():
    clear = torch.full((2, 3, 8, 8), 0.3)
    depth = torch.full((2, 1, 8, 8), 0.5)
    foggy = scatter(clear, depth, torch.tensor([2.0, 0.0]), torch.tensor([0.8, 0.8]))
    t = math.exp(-1.0)
    torch.testing.assert_close(foggy[0], torch.full((3, 8, 8), 0.3 * t + 0.8 * (1 - t)))
    torch.testing.assert_close(foggy[1], clear[1])  # beta = 0: no fog
    dense = scatter(clear, torch.ones(2, 1, 8, 8), torch.tensor([50.0, 50.0]), torch.tensor([0.6, 0.9]))
    torch.testing.assert_close(dense[:, :, 0, 0], torch.tensor([[0.6] * 3, [0.9] * 3]))  # all airlight


def test_coloured_airlight_per_channel():
    foggy = scatter(torch.zeros(1, 3, 4, 4), torch.ones(1, 1, 4, 4), torch.tensor([1.0]),
                    torch.tensor([[0.9, 0.8, 0.7]]))
    t = math.exp(-1.0)
    torch.testing.assert_close(foggy[0, :, 0, 0], torch.tensor([0.9, 0.8, 0.7]) * (1 - t))


def test_synthetic_fog_draws_published_ranges_reproducibly():
    clear = torch.rand(64, 3, 16, 16)
    foggy, beta, airlight = synthetic_fog(clear, torch.Generator().manual_seed(3))
    assert 1.0 <= beta.min() and beta.max() <= 5.0 and beta.std() > 0.5
    assert 0.4 <= airlight.min() and airlight.max() <= 1.0
    again, _, _ = synthetic_fog(clear, torch.Generator().manual_seed(3))
    assert torch.equal(foggy, again)
    # Fog lowers contrast: the spread of pixel values shrinks.
    assert foggy.std() < clear.std()
    with_ranges, b2, _ = synthetic_fog(clear, torch.Generator(), ranges=FogRanges(beta=(2.0, 2.0)))
    assert torch.all(b2 == 2.0)


def test_default_depth_is_near_at_the_bottom():
    depth = default_depth(2, 10, 4)
    assert depth.shape == (2, 1, 10, 4)
    assert depth[0, 0, 0, 0] == pytest.approx(1.0) and depth[0, 0, -1, 0] == pytest.approx(0.1)


def test_load_depth_from_files(tmp_path):
    import cv2

    raw = np.arange(20, dtype=np.float32).reshape(4, 5)
    np.save(tmp_path / "d.npy", raw)
    cv2.imwrite(str(tmp_path / "d.png"), (raw * 1000).astype(np.uint16))
    for name in ("d.npy", "d.png"):
        depth = load_depth(tmp_path / name, (8, 10))
        assert depth.shape == (1, 1, 8, 10)
        assert depth.min() >= 0 and depth.max() <= 1 and depth.max() - depth.min() > 0.8
    with pytest.raises(FogreidError, match="depth map not found"):
        load_depth(tmp_path / "missing.npy", (8, 8))


def test_real_like_fog_is_patchy_and_coloured():
    black = torch.zeros(16, 3, 64, 64)
    depth = torch.full((16, 1, 64, 64), 0.6)
    real = real_like_fog(black, torch.Generator().manual_seed(0), depth)
    syn, _, _ = synthetic_fog(black, torch.Generator().manual_seed(0), depth)
    # Synthetic fog on a constant scene at constant depth is uniform; real-like fog is not.
    assert syn.std(dim=(1, 2, 3)).max() < 1e-6
    assert real.mean(dim=1).std(dim=(1, 2)).mean() > 0.01
    # Coloured airlight: channels differ on a black scene.
    channel_means = real.mean(dim=(2, 3))
    assert (channel_means.max(dim=1).values - channel_means.min(dim=1).values).mean() > 0.02
    assert torch.equal(real, real_like_fog(black, torch.Generator().manual_seed(0), depth))


def test_blur_keeps_constants_and_smooths_noise():
    flat = torch.full((2, 3, 20, 20), 0.4)
    torch.testing.assert_close(gaussian_blur(flat, torch.tensor([1.0, 2.0])), flat)
    noise = torch.rand(2, 3, 40, 40, generator=torch.Generator().manual_seed(0))
    blurred = gaussian_blur(noise, torch.tensor([1.5, 1.5]))
    assert blurred.std() < 0.5 * noise.std()
    torch.testing.assert_close(blurred.mean(), noise.mean(), atol=0.01, rtol=0)


def test_dark_channel_dehazer_undoes_synthetic_fog():
    from fogreid.data.dehaze import dehaze_dcp
    from fogreid.metrics import psnr
    from fogreid.pixels import frames_to_images, images_to_frames

    rng = np.random.default_rng(0)
    clear = np.zeros((1, 96, 96, 3), np.uint8)
    for _ in range(30):  # a scene of coloured blocks with dark shadows, as the prior assumes
        y, x = rng.integers(0, 80, 2)
        clear[0, y:y + 16, x:x + 16] = rng.integers(0, 256, 3)
    clear_t = frames_to_images(torch.from_numpy(clear))
    foggy = images_to_frames(scatter(clear_t, torch.full((1, 1, 96, 96), 0.5), torch.tensor([2.0]),
                                     torch.tensor([0.9])))
    dehazed = dehaze_dcp(foggy[0].numpy())
    assert dehazed.shape == foggy[0].shape and dehazed.dtype == np.uint8
    before = psnr(frames_to_images(foggy), clear_t)
    after = psnr(frames_to_images(torch.from_numpy(dehazed[None])), clear_t)
    assert after > before + 3


def test_pixel_convention_is_bgr_uint8_frames_and_rgb_unit_images():
    """fogreid.pixels, which every exported graph starts and ends with: the image's first channel is
    the frame's last (OpenCV's BGR), each divided by 255; back again rounds to the same bytes."""
    from fogreid.pixels import frames_to_images, images_to_frames

    frames = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (2, 5, 7, 3), dtype=np.uint8))
    images = frames_to_images(frames)
    assert images.shape == (2, 3, 5, 7) and images.dtype == torch.float32
    for rgb, bgr in ((0, 2), (1, 1), (2, 0)):
        assert torch.equal(images[:, rgb], frames[..., bgr].float() / 255)
    assert torch.equal(images_to_frames(images), frames)
    assert torch.equal(images_to_frames(images + 0.4 / 255), frames)   # rounded to nearest, not down
