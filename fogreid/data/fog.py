"""Fog on batches of images (torch, any device).

`synthetic_fog` is the atmospheric scattering model FVRID_syn was made with:
    I = J * t + A * (1 - t),   t = exp(-beta * d),
with d a depth map in [0, 1], beta ~ U(1, 5) and a grey airlight A ~ U(0.4, 1.0) per image
(with `tint`, some images' airlight coloured instead: what `--mode frames` trains on).

`real_like_fog` is a different domain, as real fog is: density that varies across the
image, a coloured and uneven airlight, lower contrast, optical blur, sensor noise (and
JPEG artefacts, applied when the image is encoded: `jpeg_roundtrip`).

Images are float (B, 3, H, W) RGB in [0, 1]. Random draws come from a CPU
`torch.Generator`, so the same seed gives the same fog on every device.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from fogreid.errors import FogreidError


@dataclass(frozen=True)
class FogRanges:
    beta: tuple[float, float] = (1.0, 5.0)        # published FVRID_syn ranges
    airlight: tuple[float, float] = (0.4, 1.0)


@dataclass(frozen=True)
class RealFogRanges:
    beta: tuple[float, float] = (0.8, 3.5)
    density_variation: float = 0.6               # density field in [1 - v, 1 + v] x beta
    airlight: tuple[float, float] = (0.55, 0.95)
    airlight_tint: float = 0.08                  # per-channel offset: blue-grey to yellowish
    contrast: tuple[float, float] = (0.7, 0.95)
    blur_sigma: tuple[float, float] = (0.3, 1.4)  # pixels
    noise_sigma: tuple[float, float] = (0.005, 0.03)
    jpeg_quality: tuple[int, int] = (30, 75)


def transmission(depth: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """t = exp(-beta * depth). `beta`: (B,) or a (B, 1, H, W) density field."""
    beta = beta.view(-1, 1, 1, 1) if beta.dim() == 1 else beta
    return torch.exp(-beta * depth)


def scatter(clear: torch.Tensor, depth: torch.Tensor, beta: torch.Tensor, airlight: torch.Tensor) -> torch.Tensor:
    """The scattering model. `beta`: (B,) or a (B, 1, H, W) density field; `airlight`:
    (B,) grey, (B, 3) coloured or (B, 3, H, W)."""
    if airlight.dim() <= 2:
        airlight = airlight.view(airlight.shape[0], -1, 1, 1)
    t = transmission(depth, beta)
    return clear * t + airlight * (1 - t)


def default_depth(batch: int, height: int, width: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """A geometric depth for a street camera when no depth map exists: the bottom of the
    image is near (0.1), the top far (1.0), as on a road seen from above."""
    rows = torch.linspace(1.0, 0.1, height, device=device).view(1, 1, height, 1)
    return rows.expand(batch, 1, height, width).clone()


def load_depth(path: str | Path, size: tuple[int, int]) -> torch.Tensor:
    """A depth map file (.npy, or a 8/16-bit image) as (1, 1, H, W) scaled to [0, 1]."""
    path = Path(path)
    if not path.is_file():
        raise FogreidError(f"depth map not found: {path}")
    if path.suffix == ".npy":
        depth = np.load(path, allow_pickle=False).astype(np.float32)
    else:
        import cv2

        depth = cv2.imread(str(path), cv2.IMREAD_ANYDEPTH)
        if depth is None:
            raise FogreidError(f"cannot decode depth map {path}")
        depth = depth.astype(np.float32)
    if depth.ndim != 2:
        raise FogreidError(f"{path}: a depth map must be one channel (H, W), got shape {depth.shape}")
    span = float(depth.max() - depth.min())
    depth = (depth - depth.min()) / span if span > 0 else np.zeros_like(depth)
    tensor = torch.from_numpy(depth)[None, None]
    return F.interpolate(tensor, size=size, mode="bilinear", align_corners=False)


def _uniform(generator: torch.Generator, n: int, low: float, high: float, *shape: int) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, *shape, generator=generator)


def synthetic_fog(clear: torch.Tensor, generator: torch.Generator, depth: torch.Tensor | None = None,
                  ranges: FogRanges = FogRanges(), tint: float = 0.0, tinted_share: float = 1.0
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """FVRID_syn fog with beta and airlight redrawn per image. Returns (foggy, beta, airlight):
    airlight (B,) grey, or with `tint` (B, 3), `tinted_share` of the images (drawn per image) with
    each channel offset by up to +-tint, as real-like fog's (RealFogRanges.airlight_tint)."""
    b, _, h, w = clear.shape
    if depth is None:
        depth = default_depth(b, h, w, clear.device)
    beta = _uniform(generator, b, *ranges.beta).to(clear.device)
    airlight = _uniform(generator, b, *ranges.airlight).to(clear.device)
    if tint > 0:    # drawn after the grey fog's numbers, so untinted runs draw as before
        offset = _uniform(generator, b, -tint, tint, 3) * (torch.rand(b, 1, generator=generator) < tinted_share)
        airlight = (airlight[:, None] + offset.to(clear.device)).clamp(0.0, 1.0)
    return scatter(clear, depth, beta, airlight).clamp(0, 1), beta, airlight


def gaussian_blur(images: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Per-image separable Gaussian blur, as weighted sums of shifted copies: elementwise
    arithmetic only, so the result does not depend on thread count or device."""
    radius = int(torch.ceil(3 * sigma.max()).item()) if sigma.numel() else 0
    if radius == 0:
        return images
    offsets = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    weights = torch.exp(-0.5 * (offsets.view(1, -1) / sigma.view(-1, 1).clamp_min(1e-3)) ** 2)
    weights = (weights / weights.sum(dim=1, keepdim=True)).view(-1, 1, 1, 1, 2 * radius + 1)
    for dim in (2, 3):
        padded = F.pad(images, [radius, radius, 0, 0] if dim == 3 else [0, 0, radius, radius], mode="replicate")
        size = images.shape[dim]
        images = sum(weights[..., i] * padded.narrow(dim, i, size) for i in range(2 * radius + 1))
    return images


def real_like_fog(clear: torch.Tensor, generator: torch.Generator, depth: torch.Tensor | None = None,
                  ranges: RealFogRanges = RealFogRanges()) -> torch.Tensor:
    b, _, h, w = clear.shape
    device = clear.device
    if depth is None:
        depth = default_depth(b, h, w, device)
    # Patchy density: a coarse random field, smoothly upsampled.
    coarse = _uniform(generator, b, 1 - ranges.density_variation, 1 + ranges.density_variation, 1, 4, 4)
    beta = _uniform(generator, b, *ranges.beta).to(device).view(b, 1, 1, 1) * _density_field(coarse.to(device), h, w)
    # Coloured airlight, brighter towards the top of the image (sky light).
    grey = _uniform(generator, b, *ranges.airlight, 1)
    tint = _uniform(generator, b, -ranges.airlight_tint, ranges.airlight_tint, 3)
    airlight = (grey + tint).to(device).view(b, 3, 1, 1)
    foggy = scatter(clear, depth, beta, _sky_light(airlight, h))
    # Low contrast and blur of a cheap lens in fog, then sensor noise.
    contrast = _uniform(generator, b, *ranges.contrast).to(device).view(b, 1, 1, 1)
    blur = _uniform(generator, b, *ranges.blur_sigma).to(device)
    sigma = _uniform(generator, b, *ranges.noise_sigma).to(device).view(b, 1, 1, 1)
    return camera_degradation(foggy, contrast, blur, sigma, torch.randn(clear.shape, generator=generator).to(device))


def _density_field(coarse: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Patchy density: a coarse random field (B, 1, 4, 4), smoothly upsampled to (B, 1, h, w)."""
    return F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False).clamp_min(0.05)


def _sky_light(airlight: torch.Tensor, h: int) -> torch.Tensor:
    """The airlight (B, 3, 1, 1), brighter towards the top of the image (sky light): (B, 3, h, 1)."""
    return (airlight * torch.linspace(1.05, 0.92, h, device=airlight.device).view(1, 1, h, 1)).clamp(0, 1)


def camera_degradation(foggy: torch.Tensor, contrast: torch.Tensor, blur: torch.Tensor, noise_sigma: torch.Tensor,
                       noise: torch.Tensor) -> torch.Tensor:
    """Low contrast and the blur of a cheap lens in fog, then signal-dependent sensor noise."""
    mean = foggy.mean(dim=(1, 2, 3), keepdim=True)
    foggy = gaussian_blur((foggy - mean) * contrast + mean, blur)
    return (foggy + noise_sigma * noise * foggy.clamp_min(0.05).sqrt()).clamp(0, 1)


@dataclass(frozen=True)
class CameraFog:
    """One camera's real-like fog, drawn once and applied to each of its frames (a camera's fog
    keeps its patches, tint and lens from frame to frame; only the sensor noise is new)."""
    density: torch.Tensor     # (1, 1, 4, 4) coarse density field, x the camera's beta
    airlight: torch.Tensor    # (1, 3, 1, 1) coloured airlight
    contrast: float
    blur: float               # pixels
    noise_sigma: float

    @staticmethod
    def draw(generator: torch.Generator, ranges: RealFogRanges = RealFogRanges()) -> CameraFog:
        density = _uniform(generator, 1, 1 - ranges.density_variation, 1 + ranges.density_variation, 1, 4, 4)
        grey = _uniform(generator, 1, *ranges.airlight, 1)
        tint = _uniform(generator, 1, -ranges.airlight_tint, ranges.airlight_tint, 3)
        return CameraFog(density, (grey + tint).view(1, 3, 1, 1), float(_uniform(generator, 1, *ranges.contrast)),
                         float(_uniform(generator, 1, *ranges.blur_sigma)),
                         float(_uniform(generator, 1, *ranges.noise_sigma)))

    def apply(self, clear: torch.Tensor, depth: torch.Tensor, beta: float, generator: torch.Generator) -> torch.Tensor:
        """A (1, 3, H, W) frame in [0, 1] through this camera's fog at mean density `beta` (0: no fog,
        only the lens and the sensor)."""
        _, _, h, w = clear.shape
        foggy = (scatter(clear, depth, beta * _density_field(self.density, h, w), _sky_light(self.airlight, h))
                 if beta > 0 else clear)
        contrast = torch.tensor(self.contrast if beta > 0 else 1.0).view(1, 1, 1, 1)
        noise = torch.randn(clear.shape, generator=generator)
        return camera_degradation(foggy, contrast, torch.tensor([self.blur]), torch.tensor(self.noise_sigma), noise)


def jpeg_qualities(generator: torch.Generator, n: int, ranges: RealFogRanges = RealFogRanges()) -> list[int]:
    low, high = ranges.jpeg_quality
    return torch.randint(low, high + 1, (n,), generator=generator).tolist()
