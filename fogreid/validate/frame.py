"""Validation of the whole-frame defog graph (fogreid/export/frame_graph.py) against PyTorch.

Foggy images are resized to camera frame sizes (640x480, 1280x720 and an odd size, so
that the dynamic height and width are exercised off the encoder's stride) and run through
`DefogFrame` in PyTorch and through the artifact in ONNX Runtime. Judged: the PSNR of the
artifact's frames against PyTorch's (the worst frame) and, in FP32, the largest grey-level
difference.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fogreid.errors import FogreidError
from fogreid.sessions import onnxruntime_session
from fogreid.validate.compare import Check, ValidationResult, check_same_model

FRAME_SIZES = ((480, 640), (720, 1280), (301, 403))  # (H, W)
PSNR_DB = {"fp32": 40.0, "fp16": 35.0, "int8": 28.0}
MAX_GREY_DIFF_FP32 = 1


def is_frame_graph(artifact: Path) -> bool:
    if artifact.suffix != ".onnx":
        return False
    from fogreid.export.frame_graph import GRAPH_KIND
    from fogreid.onnx_graph import read_metadata

    return read_metadata(artifact).get("graph") == GRAPH_KIND


def foggy_frames(images: list[str] | None, data_root: str | None, per_size: int = 2) -> list[np.ndarray]:
    """uint8 BGR frames of each of FRAME_SIZES, resized from foggy images."""
    import cv2

    from fogreid.data.image_io import list_images, read_image

    if data_root:
        paths = sorted((Path(data_root) / "FVRID_syn" / "query_foggy").iterdir())
    elif images:
        paths = [p for folder in images for p in list_images(folder)]
    else:
        raise FogreidError("give foggy images to validate on: --images DIR or --data ROOT")
    if not paths:
        raise FogreidError(f"no images found in {data_root or ', '.join(images)}")
    picks = [paths[i] for i in np.linspace(0, len(paths) - 1, per_size * len(FRAME_SIZES)).astype(int)]
    return [cv2.resize(read_image(p), (w, h), interpolation=cv2.INTER_LINEAR)
            for p, (h, w) in zip(picks, [s for s in FRAME_SIZES for _ in range(per_size)], strict=True)]


def validate_frame_graph(checkpoint: str | Path, artifact: str | Path, images: list[str] | None = None,
                         data_root: str | None = None, precision: str = "fp32") -> ValidationResult:
    import torch

    from fogreid.export.frame_graph import DefogFrame
    from fogreid.metrics import psnr, ssim
    from fogreid.model.checkpoint import load_network
    from fogreid.pixels import frames_to_images

    checkpoint, artifact = Path(checkpoint), Path(artifact)
    check_same_model(checkpoint, artifact)
    if precision not in PSNR_DB:
        raise FogreidError(f"--precision {precision}: choose fp32, fp16 or int8")
    from fogreid.onnx_graph import read_metadata

    # Graphs from before `downscale` existed ran the network on the whole frame.
    downscale = read_metadata(artifact).get("downscale", "1")
    if not downscale.isdigit() or not 1 <= int(downscale) <= 64:
        raise FogreidError(f"{artifact}: metadata downscale={downscale!r} is not a whole number from 1 to 64; "
                           f"export the graph again with fogreid export")
    reference = DefogFrame(load_network(checkpoint), int(downscale))
    session = onnxruntime_session(artifact, "cpu")
    psnrs, ssims, grey, samples = [], [], 0, {"foggy": [], "pytorch": [], "artifact": []}
    for frame in foggy_frames(images, data_root):
        batch = frame[None]
        with torch.inference_mode():
            ref = reference(torch.from_numpy(batch)).numpy()
        got = session.run(None, {"frames": batch})[0]
        if got.shape != ref.shape or got.dtype != np.uint8:
            raise FogreidError(f"{artifact} returned {got.dtype} {got.shape} for a {frame.shape[1]}x{frame.shape[0]} "
                               f"frame, PyTorch uint8 {ref.shape}: not a defog-frame graph of this model")
        ref_t, got_t = frames_to_images(torch.from_numpy(ref)), frames_to_images(torch.from_numpy(got))
        psnrs.append(float(psnr(got_t, ref_t).clamp(max=100)))
        ssims.append(float(ssim(got_t, ref_t)))
        grey = max(grey, int(np.abs(got.astype(int) - ref.astype(int)).max()))
        if frame.shape[:2] == FRAME_SIZES[0] and len(samples["foggy"]) < 2:
            samples["foggy"].append(frame)
            samples["pytorch"].append(ref[0])
            samples["artifact"].append(got[0])
    figures = {"defog_psnr_db": min(psnrs), "defog_psnr_db_mean": float(np.mean(psnrs)),
               "defog_ssim": min(ssims), "defog_max_grey_diff": grey,
               "frame_sizes": [f"{w}x{h}" for h, w in FRAME_SIZES]}
    checks = [Check("defog_psnr_db", figures["defog_psnr_db"], PSNR_DB[precision], True)]
    if precision == "fp32":
        checks.append(Check("defog_max_grey_diff", grey, MAX_GREY_DIFF_FP32, False))
    return ValidationResult(str(checkpoint), str(artifact), "onnxruntime", precision, len(psnrs), figures, checks,
                            {k: np.stack(v) for k, v in samples.items()})
