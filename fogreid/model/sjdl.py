"""SJDL: joint defogging and vehicle ReID (Chen et al., AAAI 2022).

One encoder (ResNet-IBN) feeds two heads. The ReID head turns layer4 into an embedding:
an optional deformable-conv branch, channel attention, global average pooling, a BNNeck
and bias-free classifiers (one per training domain). The defog head reads the early
features (the stem before and after its max-pool, layer1), which it shares with ReID,
decodes a clear image (the published decoder, or the scattering-model inversion: see the
defog head section) and refines it with a pyramid enhancement. Training the two together makes the shared early features
fog-aware; at test time the defogged image is a product of its own.

Reading order: heads, the network. Configuration and presets: fogreid/model/config.py;
the builder that knows every network: fogreid/model/build.py.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from fogreid.errors import FogreidError
from fogreid.model.config import ModelConfig, SJDLOutput
from fogreid.model.resnet_ibn import ResNetIBN

# --------------------------------------------------------------------------- ReID head

class ChannelAttention(nn.Module):
    """Squeeze by average and max pooling, a shared bottleneck MLP, sigmoid gate."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(channels // reduction, 8)
        self.mlp = nn.Sequential(nn.Conv2d(channels, hidden, 1, bias=False), nn.ReLU(inplace=True),
                                 nn.Conv2d(hidden, channels, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = self.mlp(x.mean(dim=(2, 3), keepdim=True))
        peak = self.mlp(x.amax(dim=(2, 3), keepdim=True))
        return x * torch.sigmoid(avg + peak)


class DeformBranch(nn.Module):
    """3x3 conv then a 3x3 deformable conv whose offsets are predicted from its input."""

    def __init__(self, in_channels: int, channels: int) -> None:
        super().__init__()
        from torchvision.ops import DeformConv2d

        self.reduce = nn.Sequential(nn.Conv2d(in_channels, channels, 3, padding=1, bias=False),
                                    nn.BatchNorm2d(channels), nn.ReLU(inplace=True))
        self.offset = nn.Conv2d(channels, 2 * 3 * 3, 3, padding=1)
        # Zero offsets at the start: the deformable conv begins as a plain 3x3 conv.
        nn.init.zeros_(self.offset.weight)
        nn.init.zeros_(self.offset.bias)
        self.deform = DeformConv2d(channels, channels, 3, padding=1, bias=False)
        self.post = nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.reduce(x)
        return self.post(self.deform(x, self.offset(x)))


class ReIDHead(nn.Module):
    """layer4 -> (branch, attention) -> GAP -> BNNeck. Returns (global_feat, bn_feat):
    the triplet loss uses the feature before the BNNeck, classifiers and retrieval after."""

    def __init__(self, in_channels: int, cfg: ModelConfig) -> None:
        super().__init__()
        self.branch = DeformBranch(in_channels, cfg.branch_channels) if cfg.deform_branch else None
        self.feat_dim = in_channels + (cfg.branch_channels if cfg.deform_branch else 0)
        self.attention = (ChannelAttention(self.feat_dim, cfg.attention_reduction)
                          if cfg.channel_attention else nn.Identity())
        self.bnneck = nn.BatchNorm1d(self.feat_dim)
        # BNNeck: the bias stays zero so the normalised feature is centred for cosine retrieval.
        self.bnneck.bias.requires_grad_(False)

    def forward(self, l4: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = l4 if self.branch is None else torch.cat([l4, self.branch(l4)], dim=1)
        global_feat = self.attention(x).mean(dim=(2, 3))
        return global_feat, self.bnneck(global_feat)


# --------------------------------------------------------------------------- defog head
#
# Decoders, chosen by ModelConfig.defog_head:
#   paper    the published one: redraws the clear image from stride-4 features (transposed
#            convolutions, tanh), then the pyramid enhancement redraws it once more.
#   scatter  inverts the scattering model I = J t + A (1 - t): it corrects the dark channel
#            prior's transmission t and airlight A (smooth fields, at stride 2) and computes
#            J = (I - A) / t + A from the full-resolution input, so edges and texture come from
#            the input instead of being invented; the pyramid enhancement then adds a residual.
#   detail   the scatter head with a learned gain on the input's finest detail: the inversion
#            multiplies everything in I, sensor noise included, by 1 / t (x10 in dense fog);
#            here only a blurred I is inverted whole, and its fine detail I - blur(I) gets
#            s / t with s in (0, 1) predicted per pixel (s = 1 is the scatter head).
# Every decoder returns images in [0, 1]. None uses a normalisation whose statistics depend
# on the image size except the paper head's instance norm, so the scatter heads run on a
# whole camera frame as they do on a crop (fogreid/export/frame_graph.py).

class ResidualBlock(nn.Module):
    """Two 3x3 convs with reflection padding and instance norm, as the published decoder."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), nn.InstanceNorm2d(channels, affine=True),
            nn.ReLU(inplace=True),
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), nn.InstanceNorm2d(channels, affine=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.body(x))


def _upsample(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.ConvTranspose2d(in_channels, out_channels, 3, 2, 1, output_padding=1),
                         nn.InstanceNorm2d(out_channels, affine=True), nn.ReLU(inplace=True))


class PaperDecoder(nn.Module):
    """The published decoder: a residual block before each of three stages (conv to `width`
    and concat the stem; upsample; upsample), then a 7x7 conv to RGB and tanh. With the
    paper's width 64 the blocks run at 256 (layer1 of ResNet-50), 128 and 64 channels."""

    def __init__(self, stem_channels: int, layer1_channels: int, width: int) -> None:
        super().__init__()
        merged = width + stem_channels
        self.res1 = ResidualBlock(layer1_channels)
        self.reduce = nn.Sequential(nn.Conv2d(layer1_channels, width, 3, padding=1), nn.ReLU(inplace=True))
        self.res2 = ResidualBlock(merged)
        self.up1 = _upsample(merged, merged // 2)
        self.res3 = ResidualBlock(merged // 2)
        self.up2 = _upsample(merged // 2, merged // 4)
        self.to_rgb = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(merged // 4, 3, 7))

    def forward(self, image: torch.Tensor, fine: torch.Tensor, stem: torch.Tensor, l1: torch.Tensor) -> torch.Tensor:
        x = torch.cat([self.reduce(self.res1(l1)), stem], dim=1)
        x = self.up2(self.res3(self.up1(self.res2(x))))
        return (torch.tanh(self.to_rgb(x)) + 1) / 2


def _conv_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.ReLU(inplace=True))


def _logit(p: torch.Tensor) -> torch.Tensor:
    return torch.log(p) - torch.log1p(-p)


def _min_filter(x: torch.Tensor, patch: int) -> torch.Tensor:
    """The minimum over a patch x patch window (within the image), as a column's minimum then a
    row's: the same numbers. OpenVINO's CPU plugin (2026.4.1) ran the 15x15 window as one MaxPool in
    1.6-1.7 ms for a batch of eight 64x64 maps (the prior has two: a fifth of the demo's INT8 graph),
    and the two passes in 0.3 ms."""
    half = patch // 2
    column = F.max_pool2d(-x, (patch, 1), stride=1, padding=(half, 0))
    return -F.max_pool2d(column, (1, patch), stride=1, padding=(0, half))


def box_mean(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Mean over a (2r+1)^2 window, counting only pixels inside the image: the same as two
    avg_pool2d passes (k x 1, 1 x k) with count_include_pad=False, written as sums (depthwise
    convolutions with a ones kernel) over the pixel counts (the counts of a column and a row,
    multiplied), because ONNX Runtime's CPU AveragePool with padding not counted took 1.3 ms for
    the prior's 15-pixel mean of a batch of eight 64x64 maps."""
    k, channels = 2 * radius + 1, int(x.shape[1])   # a constant kernel in the exported graph
    column = torch.ones(channels, 1, k, 1, dtype=x.dtype, device=x.device)
    row = torch.ones(channels, 1, 1, k, dtype=x.dtype, device=x.device)
    total = F.conv2d(F.conv2d(x, column, padding=(radius, 0), groups=channels), row, padding=(0, radius),
                     groups=channels)
    inside_column = F.conv2d(x[:1, :1, :, :1] * 0 + 1, column[:1], padding=(radius, 0))   # (1, 1, H, 1)
    inside_row = F.conv2d(x[:1, :1, :1, :] * 0 + 1, row[:1], padding=(0, radius))         # (1, 1, 1, W)
    return total / (inside_column * inside_row)


SCATTER_HEADS = ("scatter", "detail")   # the heads that invert the scattering model (whole frames too)


def _box3(image: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """The 3x3 mean of an RGB image, the border averaged over the pixels it holds (`count`, from
    `_pixel_count`): the same as avg_pool2d(image, 3, 1, 1,
    count_include_pad=False), written as convolutions because ONNX Runtime ran those two pools at
    8.5 ms each on a 640x480 frame inside the whole-frame graph (1 ms together alone); the graph
    went from 43.5 to 32.7 ms, the same output to the bit."""
    ones = torch.ones(3, 1, 3, 3, dtype=image.dtype, device=image.device)
    total = F.conv2d(image, ones, padding=1, groups=3)
    return total / count


def _pixel_count(image: torch.Tensor) -> torch.Tensor:
    """How many pixels of the image each 3x3 window holds (9 inside, fewer at the border)."""
    ones = torch.ones(1, 1, 3, 3, dtype=image.dtype, device=image.device)
    return F.conv2d(image[:, :1] * 0 + 1, ones, padding=1)


def fine_detail_split(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(base, detail) with base + detail = image: base a 5x5 binomial blur (two 3x3 box means),
    detail the rest."""
    count = _pixel_count(image)   # the same for both passes: computed once
    base = _box3(_box3(image, count), count)
    return base, image - base


# Sensor noise, measured in the fine detail band (image - its 5x5 binomial blur), without sorting:
# the fraction of |detail| below each level of a ladder (C0 * R^i) finds the band's 25th percentile
# to within a rung, with comparisons and means only: TensorRT's TopK needs k <= 3840 (its operator
# reference, docs.nvidia.com/deeplearning/tensorrt/latest/_static/operators/TopK.html), and every
# second pixel of a 640x480 frame is 230,400 samples; the ladder's Less -> Cast (bool to float,
# in the same reference's Cast.html) -> ReduceMean are all plain layers there. The 25th
# percentile, not the median: on a noise-free crop most of the fine detail is edges, and its median
# is structure; its lower quarter is the flat areas. For Gaussian noise of std s, the 25th
# percentile of |noise| is 0.3186 s.
NOISE_LADDER_C0 = 0.0625 / 255
NOISE_LADDER_R = 2 ** 0.25
NOISE_LADDER_RUNGS = 36          # up to 32 / 255: sensor noise well above a real camera's
NOISE_QUANTILE, NOISE_QUANTILE_Z = 0.25, 0.3186


def detail_noise_std(detail: torch.Tensor, stride: int = 2) -> torch.Tensor:
    """(B, 1, 1, 1): the std of white noise that would give `detail` (the fine detail band of
    `fine_detail_split`) its lower quarter, per image, from the middle pixel of each stride x stride
    cell."""
    sample = detail[..., stride // 2::stride, stride // 2::stride].abs().unsqueeze(-1)
    rungs = torch.arange(NOISE_LADDER_RUNGS, dtype=detail.dtype, device=detail.device)
    below = (sample < NOISE_LADDER_C0 * NOISE_LADDER_R ** rungs).to(detail.dtype).mean(dim=(1, 2, 3))
    rungs_below = (below < NOISE_QUANTILE).to(detail.dtype).sum(dim=1).view(-1, 1, 1, 1)
    # The percentile lies between the last rung below it and the next: take the middle (in log).
    # Below the first rung it is taken as zero: a noise-free image keeps all its detail.
    quantile = NOISE_LADDER_C0 * torch.exp((rungs_below - 0.5) * math.log(NOISE_LADDER_R))
    return quantile * (rungs_below > 0).to(detail.dtype) / NOISE_QUANTILE_Z


def shrink(x: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """The non-negative garrote: values within +-threshold go to zero, larger ones lose
    threshold^2 / x, so an edge far above the noise keeps its height (soft thresholding takes the
    whole threshold off every edge: a thin faint stripe in dense fog kept 54 % of its depth,
    75 % here). Written without x^2, and with the divisor at least threshold + 1e-4, so that a
    noise-free image (threshold 0) is not 0 / 0 in an FP16 engine: x - clip(x) * threshold / |x|."""
    clipped = torch.minimum(torch.maximum(x, -threshold), threshold)
    return x - clipped * threshold / torch.maximum(x.abs(), threshold + 1e-4)


UINT8_STEP = 1 / 255


def beyond_rounding(band: torch.Tensor) -> torch.Tensor:
    """A band (the base less a smooth surface through it) less what lies within half a uint8 step
    of zero. A frame arrives as uint8: each pixel is its true value rounded, within half a step of
    it. A slow gradient (a road receding into dense fog) arrives as a staircase of one-level steps
    10-40 rows apart, which the inversion multiplies by 1/t (about 10 there) into bands. A smooth
    surface through the staircase lies within half a step of every pixel, as true as the pixel and
    without the steps: there the band goes to zero. Further out (an edge) the pixel moves half a
    step towards the surface: the edge is kept, at most one step lower across. An edge of one level
    cannot be told from a step."""
    return band - band.clamp(-UINT8_STEP / 2, UINT8_STEP / 2)


def invert(x: torch.Tensor, t: torch.Tensor, chroma_t_min: float = 0.0) -> torch.Tensor:
    """x / t, with x's colour (x less the mean of its channels) divided by max(t, chroma_t_min)
    instead: an error in the airlight's colour comes out of the inversion multiplied by 1 / t - 1,
    as a colour cast over whatever is far (grey buildings turned purple under a green sky's
    airlight, docs/benchmarks.md, Whole-frame defog); this bounds the multiplier at
    1 / chroma_t_min - 1. 0: the plain inversion."""
    if chroma_t_min <= 0:
        return x / t
    grey = x.mean(dim=1, keepdim=True)
    return grey / t + (x - grey) / t.clamp_min(chroma_t_min)


def conv_over_parts(conv: nn.Conv2d, parts: list[torch.Tensor]) -> torch.Tensor:
    """conv(torch.cat(parts, dim=1)) as the sum of one conv per part, each over its slice of the
    weight: the same numbers and parameters, and no Concat in the exported graph."""
    out, start = None, 0
    for part in parts:
        width = part.shape[1]
        y = F.conv2d(part, conv.weight[:, start:start + width], conv.bias if out is None else None,
                     conv.stride, conv.padding)
        out, start = y if out is None else out + y, start + width
    return out


class ScatterDecoder(nn.Module):
    """Transmission t and airlight A, then J = (I - A) / t + A at full resolution; with
    `detail_gain`, also a gain s on the fine detail, which is amplified at most 2x, and the
    image's noise taken out of the fine detail and the band above it first (`compose`).

    Both start from the dark channel prior computed in the graph (He et al. 2009: haze-free
    patches have a colour channel near zero, so t0 = 1 - omega * min-filter(min_c I / A)),
    and the network predicts a correction of each, in logit space, at stride 2, from layer1
    and the stem (stride 4), the stem before its max-pool and t0 itself (stride 2). Training
    thus starts from a physical dehazer rather than from noise, which matters in a short
    budget, and learns what the prior gets wrong (bright vehicles, the sky, halos at edges).
    """

    T_MIN = 0.05    # FVRID_syn's densest fog leaves t ~ 0.007 in the sky; below 0.05 only noise is left
    # The fine detail (where a camera's sensor noise and JPEG blocks live) is divided by at most
    # 1 / DETAIL_T_MIN: amplified at most 2x where the fog is dense. Dividing it by t itself
    # amplified the real-like split's noise until its SSIM fell below the foggy input's (a 128 px
    # model trained without the cap: 0.691 against 0.701, capped 0.718; the demo's 64 px model
    # 0.638 -> 0.677) for about 0.005 of synthetic SSIM (docs/benchmarks.md, Defog quality). The
    # blurred base is still inverted whole.
    DETAIL_T_MIN = 0.5
    # Before the inversion multiplies them, the fine detail and the band above it (the base less
    # its MID_POOL x MID_POOL block means, upsampled) are shrunk (`shrink`) by NOISE_K times the
    # noise they carry (`detail_noise_std`; MID_NOISE is the second band's share of white noise
    # relative to the fine band's): what is left there is edges. Without it a real-like camera's
    # noise, divided by t in the base, came out as coloured blotches in dense fog. NOISE_K = 2,
    # not 3: 3 scored 0.02 more SSIM on whole real-like frames but took half the depth of a thin
    # faint stripe, 2 a quarter (tests/test_defog.py; docs/benchmarks.md, Defog quality).
    NOISE_K = 2.0
    MID_POOL = 8
    MID_NOISE = 0.2316
    # Whole frames (`deband`) take the middle band against 16 x 16 block means, `beyond_rounding`: an
    # 8-pixel grid follows a staircase with 32-row treads (the densest generated camera's road), and
    # the band would keep its steps. Crops keep 8: a vehicle fills most of a 64-128 px crop, and the
    # crop graph's outputs stay those its head was trained on.
    FRAME_MID_POOL = 16
    FRAME_MID_NOISE = 0.2513
    PATCH = 15      # dark-channel patch, as fogreid/data/dehaze.py
    OMEGA = 0.95    # keep a little haze for depth perception (He et al.)
    HAZIEST = 100.0  # softmax temperature on the dark channel: A = the colour of the haziest pixels

    def __init__(self, fine_channels: int, stem_channels: int, layer1_channels: int, width: int,
                 detail_gain: bool = False, context_channels: int = 0) -> None:
        super().__init__()
        half = max(width // 2, 8)
        self.detail_gain = detail_gain
        self.reduce = nn.Sequential(_conv_relu(layer1_channels + stem_channels, width), _conv_relu(width, width))
        # `context_channels` (the whole-frame head, ModelConfig.frame_context): the encoder's layer3 is
        # added to the reduced features through a 1x1 conv that starts at zero. On a shrunk frame
        # layer1's receptive field is narrower than a building or a stretch of road, where the dark
        # channel prior fails (bright and flat grey surfaces) and the head is there to correct it.
        self.context = nn.Conv2d(context_channels, width, 1) if context_channels else None
        if self.context is not None:
            nn.init.zeros_(self.context.weight)
            nn.init.zeros_(self.context.bias)
        self.fuse = nn.Sequential(_conv_relu(width + fine_channels + 1, half), _conv_relu(half, half))
        self.head = nn.Conv2d(half, 5 if detail_gain else 4, 3, padding=1)
        # Start at the prior: corrections of zero, and a detail gain near the plain inversion's (s = 0.95).
        nn.init.normal_(self.head.weight, std=1e-3)
        nn.init.zeros_(self.head.bias)
        if detail_gain:
            nn.init.constant_(self.head.bias[4:], 3.0)

    def prior(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(t0 (B, 1, H, W), A0 (B, 3, 1, 1)) by the dark channel prior, without guided filtering."""
        dark = _min_filter(image.amin(dim=1, keepdim=True), self.PATCH)
        weights = torch.softmax(dark.flatten(1) * self.HAZIEST, dim=1).unsqueeze(1)
        airlight = (image.flatten(2) * weights).sum(dim=2).clamp(0.05, 0.98)[..., None, None]
        t0 = 1 - self.OMEGA * _min_filter((image / airlight).amin(dim=1, keepdim=True), self.PATCH)
        # The min filter leaves square plateaus reaching PATCH // 2 pixels past every dark object:
        # the blocks in the sky and the rectangular halos around vehicles. A box mean over the same
        # patch turns their edges into ramps (He et al. refine t by soft matting, later the guided
        # filter, for the same reason; the guided filter scored the same here).
        t0 = box_mean(t0, self.PATCH // 2)
        return t0.clamp(self.T_MIN, 0.98), airlight

    @classmethod
    def coarse_base(cls, base: torch.Tensor, pool: int | None = None) -> torch.Tensor:
        """The base's pool x pool block means (MID_POOL by default), upsampled bilinearly to its size:
        3 ms on a 640x480 frame in ONNX Runtime, where a 3x3 box blur costs 1 ms per pass (8 passes
        scored a little worse)."""
        return F.interpolate(F.avg_pool2d(base, pool or cls.MID_POOL, ceil_mode=True), size=base.shape[-2:],
                             mode="bilinear", align_corners=False)

    @classmethod
    def compose(cls, image: torch.Tensor, t: torch.Tensor, airlight: torch.Tensor, gain: torch.Tensor | None = None,
                noise_stride: int = 2, deband: bool = False, chroma_t_min: float = 0.0) -> torch.Tensor:
        """The scattering model inverted: J = (I - A) / t + A. With a detail `gain` s, the image is
        split into a coarse base C, a middle band M and the fine detail D (I = C + M + D), M and D
        are shrunk towards zero by the image's noise (`shrink`), and
        J = (C - A + M) / t + s D / max(t, DETAIL_T_MIN) + A. The noise is measured on every
        `noise_stride`-th pixel of each row and column (`detail_noise_std`). `deband` (whole
        frames): C on the FRAME_MID_POOL grid, and M taken `beyond_rounding` first.
        `chroma_t_min` (whole frames): what is inverted, split into its grey level (the mean of
        its channels) and its colour (the rest), has its colour divided by max(t, chroma_t_min)."""
        if gain is None:
            return (invert(image - airlight, t, chroma_t_min) + airlight).clamp(0.0, 1.0)
        base, detail = fine_detail_split(image)
        pool, noise_share = (cls.FRAME_MID_POOL, cls.FRAME_MID_NOISE) if deband else (cls.MID_POOL, cls.MID_NOISE)
        coarse = cls.coarse_base(base, pool)
        middle = beyond_rounding(base - coarse) if deband else base - coarse
        noise = cls.NOISE_K * detail_noise_std(detail, noise_stride)
        middle = shrink(middle, noise * noise_share)
        detail = shrink(detail, noise)
        return (invert(coarse - airlight + middle, t, chroma_t_min) + gain * detail / t.clamp_min(cls.DETAIL_T_MIN)
                + airlight).clamp(0.0, 1.0)

    def forward(self, image: torch.Tensor, fine: torch.Tensor, stem: torch.Tensor, l1: torch.Tensor,
                context: torch.Tensor | None = None) -> torch.Tensor:
        return self.compose(image, *self.maps(image, fine, stem, l1, context))

    def _reduce(self, l1: torch.Tensor, stem: torch.Tensor) -> torch.Tensor:
        """self.reduce on the concatenation of layer1 and the stem, its first conv summed from one
        conv per part (`conv_over_parts`): the same numbers. Without the Concat, INT8 files quantise
        both parts (fogreid/calibration/qdq.py, `reads_concat`): OpenVINO ran the conv on the
        concatenation in float, 0.6 ms of the demo's 17 ms INT8 graph at batch 8."""
        return self.reduce[1](torch.relu(conv_over_parts(self.reduce[0][0], [l1, stem])))

    def _fuse(self, parts: list[torch.Tensor]) -> torch.Tensor:
        """self.fuse on the concatenation of `parts` (the upsampled features, the encoder's fine map,
        the prior's t0), its first conv summed from one conv per part (`conv_over_parts`): the same
        numbers. ONNX Runtime's CPU convs run in its blocked channel layout (NCHWc) only where the
        input channels are a multiple of its block (16 with AVX-512), and the 97-channel conv ran in
        the generic path; without the Concat, INT8 files quantise the parts (fogreid/calibration/
        qdq.py, `reads_concat`), and the decoder conv before them."""
        return self.fuse[1](torch.relu(conv_over_parts(self.fuse[0][0], parts)))

    def maps(self, image: torch.Tensor, fine: torch.Tensor, stem: torch.Tensor, l1: torch.Tensor,
             context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(transmission t (B, 1, H, W), airlight A (B, 3, H, W), detail gain s (B, 1, H, W) or
        None) at the image's resolution; `context`: layer3, for a head made with context_channels."""
        t0, a0 = self.prior(image)
        x = self._reduce(l1, stem)
        if self.context is not None:
            x = x + F.interpolate(self.context(context), size=x.shape[-2:], mode="bilinear", align_corners=False)
        # Resize to the skip's own size (not x2): any frame size works, odd ones too.
        x = F.interpolate(x, size=fine.shape[-2:], mode="bilinear", align_corners=False)
        t0_fine = F.interpolate(t0, size=fine.shape[-2:], mode="bilinear", align_corners=False)
        maps = self.head(self._fuse([x, fine, t0_fine]))
        maps = F.interpolate(maps, size=image.shape[-2:], mode="bilinear", align_corners=False)
        t = torch.sigmoid(_logit(t0) + maps[:, :1]).clamp_min(self.T_MIN)
        gain = torch.sigmoid(maps[:, 4:]) if self.detail_gain else None
        return t, torch.sigmoid(_logit(a0) + maps[:, 1:4]), gain


def _inside_share(share: torch.Tensor, k: int) -> torch.Tensor:
    """The share of each k x k cell of a grid that lies inside the image, from `share`, that of the
    grid's own cells (1 where whole): cells past the image's edge count as 0."""
    pad = (0, (-share.shape[-1]) % k, 0, (-share.shape[-2]) % k)
    return F.avg_pool2d(F.pad(share, pad), k)


def block_means(x: torch.Tensor, scales: tuple[int, ...]) -> list[torch.Tensor]:
    """[avg_pool2d(x, s, ceil_mode=True) for s in scales], `scales` ascending, each a multiple of
    the one before: the first pooled from x, each next from the one before, its cells weighted by
    how much of them lies inside the image, so a side that is not a multiple keeps exact means of
    what its partial cells hold. ONNX Runtime's CPU AveragePool took 1.4 ms for the four scales of
    a batch of eight 64x64 crops pooled from x each time, and 0.13 ms as a cascade (12.4 and 0.9
    ms on a 640x480 map)."""
    means = [F.avg_pool2d(x, scales[0], ceil_mode=True)]
    share = _inside_share(x[:1, :1] * 0 + 1, scales[0])   # (1, 1, h, w): the same for every image and channel
    for finer, scale in zip(scales[:-1], scales[1:], strict=True):
        k = scale // finer
        means.append(F.avg_pool2d(means[-1] * share, k, ceil_mode=True) / F.avg_pool2d(share, k, ceil_mode=True))
        share = _inside_share(share, k)
    return means


class PyramidEnhancement(nn.Module):
    """Refines the decoded image from (foggy input, decoded) with context pooled at 4 scales.
    `residual`: add the result to the decoded image (starting at zero) instead of redrawing it."""

    SCALES = (32, 16, 8, 4)

    def __init__(self, width: int, residual: bool = False) -> None:
        super().__init__()
        self.residual = residual
        self.body = nn.Sequential(nn.Conv2d(6, width, 3, padding=1), nn.ReLU(inplace=True),
                                  nn.Conv2d(width, width, 3, padding=1), nn.ReLU(inplace=True))
        self.pool_convs = nn.ModuleList(nn.Conv2d(width, 1, 1) for _ in self.SCALES)
        self.fuse = nn.Conv2d(width + len(self.SCALES), 3, 3, padding=1)
        if residual:
            nn.init.zeros_(self.fuse.weight)
            nn.init.zeros_(self.fuse.bias)

    def forward(self, image: torch.Tensor, decoded: torch.Tensor) -> torch.Tensor:
        x = self.body(torch.cat([image, decoded], dim=1))
        size = x.shape[-2:]
        # ceil_mode: a frame whose side is not a multiple of the scale keeps its border cells.
        means = block_means(x, tuple(sorted(self.SCALES)))[::-1]   # SCALES is largest first
        pooled = [F.interpolate(conv(mean), size=size, mode="nearest")
                  for mean, conv in zip(means, self.pool_convs, strict=True)]
        out = self.fuse(torch.cat([*pooled, x], dim=1))
        if self.residual:
            return (decoded + out).clamp(0.0, 1.0)
        return (torch.tanh(out) + 1) / 2


# --------------------------------------------------------------------------- the network

class SJDLNet(nn.Module):
    """Input: RGB float images in [0, 1], (B, 3, H, W). Mean/std normalisation for the
    encoder happens here; the defog head works on [0, 1] images."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.config = cfg
        self.backbone = ResNetIBN(cfg.backbone, cfg.ibn, cfg.last_stride)
        self.reid = ReIDHead(self.backbone.out_channels, cfg)
        self.embedding_dim = self.reid.feat_dim
        if cfg.defog:
            stem, l1 = self.backbone.stem_channels, self.backbone.layer1_channels
            self.decoder = (PaperDecoder(stem, l1, cfg.decoder_width) if cfg.defog_head == "paper"
                            else ScatterDecoder(stem, stem, l1, cfg.decoder_width, cfg.defog_head == "detail"))
            self.enhance = PyramidEnhancement(cfg.enhance_width, residual=cfg.defog_head in SCATTER_HEADS)
        else:
            self.decoder = self.enhance = None
        self.frame_decoder = self.frame_enhance = None
        if cfg.frame_head:   # the whole-frame graph's own head (ModelConfig.frame_head: implies cfg.defog)
            stem, l1 = self.backbone.stem_channels, self.backbone.layer1_channels
            context = self.backbone.layer3_channels if cfg.frame_context else 0
            self.frame_decoder = ScatterDecoder(stem, stem, l1, cfg.decoder_width, cfg.defog_head == "detail", context)
            self.frame_enhance = PyramidEnhancement(cfg.enhance_width, residual=True)
        self.classifier = nn.Linear(self.embedding_dim, cfg.num_ids, bias=False) if cfg.num_ids else None
        self.classifier_real = (nn.Linear(self.embedding_dim, cfg.num_ids_real, bias=False)
                                if cfg.num_ids_real else None)
        for head in (self.classifier, self.classifier_real):
            if head is not None:
                nn.init.normal_(head.weight, std=0.001)
        self.register_buffer("pixel_mean", torch.tensor(cfg.pixel_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(cfg.pixel_std).view(1, 3, 1, 1), persistent=False)

    def normalise(self, image: torch.Tensor) -> torch.Tensor:
        """[0, 1] images -> the encoder's input."""
        return (image - self.pixel_mean) / self.pixel_std

    def forward(self, image: torch.Tensor) -> SJDLOutput:
        fine, stem, l1, l4 = self.backbone(self.normalise(image))
        global_feat, bn_feat = self.reid(l4)
        if self.decoder is None:
            return SJDLOutput(global_feat, bn_feat, None, None)
        coarse, defogged = self.defog(image, (fine, stem, l1))
        return SJDLOutput(global_feat, bn_feat, coarse, defogged)

    def defog_head(self, whole_frame: bool = False) -> tuple[nn.Module, nn.Module]:
        """(decoder, enhancement): the whole-frame head where asked for and trained (ModelConfig.frame_head),
        else the crops' one."""
        if self.decoder is None:
            raise FogreidError("this model has no defog head (trained with --mode reid)")
        if whole_frame and self.frame_decoder is not None:
            return self.frame_decoder, self.frame_enhance
        return self.decoder, self.enhance

    def early_features(self, image: torch.Tensor, decoder: nn.Module) -> tuple[torch.Tensor, ...]:
        """What `decoder` reads from the encoder: (fine, stem, layer1), and layer3 for a whole-frame
        head with context (ModelConfig.frame_context)."""
        fine, stem, l1 = self.backbone.forward_early(self.normalise(image))
        if getattr(decoder, "context", None) is None:
            return fine, stem, l1
        return fine, stem, l1, self.backbone.layer3(self.backbone.layer2(l1))

    def defog(self, image: torch.Tensor, early: tuple[torch.Tensor, ...] | None = None,
              whole_frame: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(coarse, defogged) images in [0, 1]. Alone, it runs only the encoder's stem and layer1
        (and layer2-3 for a whole-frame head that reads layer3); `early`: `early_features`' tuple."""
        decoder, enhance = self.defog_head(whole_frame)
        if early is None:
            early = self.early_features(image, decoder)
        coarse = decoder(image, *early)
        return coarse, enhance(image, coarse)

    def defog_maps(self, image: torch.Tensor, whole_frame: bool = False
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """The scatter heads' parts: (t, A, detail gain or None, refinement) with defogged =
        compose(image, t, A, gain) + refinement (before the final clamp). The whole-frame graph
        (fogreid/export/frame_graph.py) computes them small, with `whole_frame`, and applies them large."""
        decoder, enhance = self.defog_head(whole_frame)
        if not isinstance(decoder, ScatterDecoder):
            raise FogreidError("only the scatter defog heads have transmission and airlight maps")
        t, airlight, gain = decoder.maps(image, *self.early_features(image, decoder))
        coarse = decoder.compose(image, t, airlight, gain)
        return t, airlight, gain, enhance(image, coarse) - coarse
