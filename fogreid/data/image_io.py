"""Decoding, resizing and writing images: the one place the product touches pixels
before the graph. Training, calibration, validation and the runtime all call
`resize_for_model`, so a model never sees crops resized two different ways.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fogreid.errors import FogreidError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def read_image(path: str | Path) -> np.ndarray:
    """uint8 (H, W, 3) BGR. Grey images are expanded, alpha is dropped."""
    import cv2

    path = Path(path)
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise FogreidError(f"cannot read image {path}: {exc.strerror or exc}") from None
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    # libjpeg decodes a cut-off JPEG into an image whose lower part is grey, with only a
    # warning: check for the end-of-image marker so a truncated file is never used.
    if image is not None and data[:2].tobytes() == b"\xff\xd8" and b"\xff\xd9" not in data[-4096:].tobytes():
        raise FogreidError(f"image {path} is truncated (no JPEG end marker); re-copy or remove it")
    if image is None:
        raise FogreidError(f"cannot decode image {path}: the file is empty, truncated or not an "
                           f"image ({', '.join(IMAGE_SUFFIXES)}); remove or replace it")
    if image.dtype == np.uint16:  # 16-bit PNG/TIFF: keep the top 8 bits
        image = (image >> 8).astype(np.uint8)
    elif image.dtype.kind == "f":  # float TIFF/EXR: [0, 1] by convention (a plain cast would make it black)
        if not np.isfinite(image).all():
            raise FogreidError(f"image {path} holds NaN or infinite values; replace it")
        scale = 255.0 if image.max() <= 1.0 else 1.0
        image = np.clip(image * scale + 0.5, 0, 255).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise FogreidError(f"image {path}: {image.dtype} pixels are not supported; save it as 8- or 16-bit")
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    elif image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image


def resize_for_model(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a uint8 BGR image to (height, width): area averaging when shrinking (no
    aliasing on small crops), bilinear when enlarging."""
    import cv2

    h, w = size
    if image.shape[:2] == (h, w):
        return np.ascontiguousarray(image)
    shrinking = image.shape[0] * image.shape[1] > h * w
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def load_for_model(path: str | Path, size: tuple[int, int]) -> np.ndarray:
    return resize_for_model(read_image(path), size)


def image_batches(paths, size: tuple[int, int], batch_size: int):
    """uint8 (B, H, W, 3) BGR batches of image files, decoded and resized as the runtime does."""
    for start in range(0, len(paths), batch_size):
        yield np.stack([load_for_model(p, size) for p in paths[start:start + batch_size]])


def encode_image(image: np.ndarray, suffix: str = ".jpg", jpeg_quality: int = 95) -> bytes:
    import cv2

    params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)] if suffix in (".jpg", ".jpeg") else []
    ok, buffer = cv2.imencode(suffix, image, params)
    if not ok:
        raise FogreidError(f"OpenCV cannot encode images as {suffix}")
    return buffer.tobytes()


def write_image(path: str | Path, image: np.ndarray, jpeg_quality: int = 95) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_image(image, path.suffix.lower(), jpeg_quality))


def list_images(folder: str | Path) -> list[Path]:
    """Image files below `folder` (recursively), sorted; an error if there are none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FogreidError(f"image folder not found: {folder}")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise FogreidError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found in {folder}")
    return files
