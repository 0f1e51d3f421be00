"""Whole camera frames for the defog head's whole-frame training (`fogreid train --mode frames`,
fogreid/train/frames.py): clear frames and their depth, fogged afresh at every step with
FVRID_syn's scattering model (fogreid/data/fog.py), so the head learns the sky, the road and the
buildings at the scale the whole-frame graph shows them to it, which vehicle crops never do.

Two sources (`data.frames`):

* `generated` (the default): frames of generated cities (fogreid/data/synth_video.py), one
  (`data.frames_per_camera`) from each of many cameras, made in memory at the start of the run.
  Their cities are drawn from seeds of their own (SCENE_SEED), which no benchmark, demo or test
  city uses.
* a folder of your own clear frames: PNG or JPEG, all of one size, each with an optional depth
  map `NAME_depth.png` beside it (8- or 16-bit grey: 0 near, the format's maximum far). Without
  one, the geometric street-camera depth (`fog.default_depth`: the bottom of the frame near,
  the top far). Read from disk as the steps need them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fogreid.errors import FogreidError

SCENE_SEED = 90_000     # the generated scenes' cities: seeds SCENE_SEED + 100 * seed + k
HELD_OUT_SEED = 95_000  # the generated frames the run is scored on (`held_out_scenes`)
FRAME_SIZE = (480, 640)
CAMERAS_PER_CITY = 8
DEPTH_SUFFIX = "_depth"


@dataclass
class Scenes:
    """Clear frames (uint8 (H, W, 3) BGR) and depth maps (float32 (H, W) in [0, 1]), by index."""

    source: str
    size: tuple[int, int]
    clear: list[np.ndarray] | None = None     # generated: in memory
    depth: list[np.ndarray] | None = None
    files: list[Path] | None = None           # a folder: read per step

    def __len__(self) -> int:
        return len(self.clear) if self.clear is not None else len(self.files)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if self.clear is not None:
            return self.clear[index], self.depth[index]
        return _read_frame(self.files[index], self.size)


def generated_scenes(cameras: int, per_camera: int, seed: int = 0, size: tuple[int, int] = FRAME_SIZE,
                     base_seed: int = SCENE_SEED) -> Scenes:
    """`per_camera` frames, one second apart, from each of `cameras` generated cameras (cities of
    CAMERAS_PER_CITY cameras, vehicles passing)."""
    from fogreid.data.synth_video import CityConfig, city_frames

    clear, depth = [], []
    for k in range((cameras + CAMERAS_PER_CITY - 1) // CAMERAS_PER_CITY):
        in_city = min(CAMERAS_PER_CITY, cameras - k * CAMERAS_PER_CITY)
        city = CityConfig(cameras=in_city, vehicles=2 * in_city, seconds=float(per_camera), fps=1.0,
                          height=size[0], width=size[1], seed=base_seed + 100 * seed + k)
        for frame in city_frames(city):
            clear.append(np.clip(frame.image, 0, 255).round().astype(np.uint8))
            depth.append(frame.depth.astype(np.float32))
    return Scenes(f"{len(clear)} generated frames from {cameras} cameras", size, clear, depth)


def held_out_scenes(size: tuple[int, int] = FRAME_SIZE) -> Scenes:
    """Generated frames of cameras no training run sees: what a run reports its frames on."""
    return generated_scenes(3, 4, 0, size, base_seed=HELD_OUT_SEED)


def folder_scenes(folder: str | Path) -> Scenes:
    """The clear frames under `folder` (and their `NAME_depth.png` where present)."""
    from fogreid.data.image_io import list_images

    folder = Path(folder)
    if not folder.is_dir():
        raise FogreidError(f"data.frames {folder}: no such folder; give a folder of clear camera frames "
                           f"or 'generated'")
    files = [f for f in list_images(folder) if not f.stem.endswith(DEPTH_SUFFIX)]
    if not files:
        raise FogreidError(f"data.frames {folder}: holds only depth maps (*{DEPTH_SUFFIX}.png); add the clear frames")
    size = _image_size(files[0])
    for path in files[1:]:   # one size: a step batches its frames (a header read each, not the pixels)
        other = _image_size(path)
        if other != size:
            raise FogreidError(f"data.frames: {path} is {other[1]}x{other[0]}, {files[0].name} {size[1]}x{size[0]}; "
                               f"give frames of one camera size (resize them, or train one size at a time)")
    for path in files:   # now, not at the step that first draws the frame, hours into a run
        depth_path = path.with_name(f"{path.stem}{DEPTH_SUFFIX}.png")
        if depth_path.is_file() and _png_header(_file_start(depth_path, 26)) not in ((*size, 8, 0), (*size, 16, 0)):
            raise FogreidError(_bad_depth(depth_path, size))
    return Scenes(f"{len(files)} frames from {folder}", size, files=files)


def _bad_depth(path: Path, size: tuple[int, int]) -> str:
    return f"data.frames: {path} is not an 8- or 16-bit grey PNG of its frame's size ({size[1]}x{size[0]})"


def _file_start(path: Path, size: int) -> bytes:
    with open(path, "rb") as handle:
        return handle.read(size)


def _png_header(data: bytes) -> tuple[int, int, int, int] | None:
    """(height, width, bit depth, colour type; 0 is grey) from the IHDR of a PNG's first 26 bytes;
    None if they are not a PNG's."""
    if len(data) < 26 or data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        return None
    return int.from_bytes(data[20:24], "big"), int.from_bytes(data[16:20], "big"), data[24], data[25]


def _image_size(path: Path) -> tuple[int, int]:
    """(height, width): from the header of a PNG or JPEG, else by decoding the image."""
    from fogreid.data.image_io import read_image

    return _header_size(path) or read_image(path).shape[:2]


def _header_size(path: Path) -> tuple[int, int] | None:
    """(height, width) from a PNG's IHDR or a JPEG's SOF marker; None where not found."""
    data = _file_start(path, 1 << 16)   # a JPEG's SOF follows its EXIF and tables, within the first 64 KiB
    png = _png_header(data)
    if png is not None:
        return png[:2]
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            break
        marker, length = data[i + 1], int.from_bytes(data[i + 2:i + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return int.from_bytes(data[i + 5:i + 7], "big"), int.from_bytes(data[i + 7:i + 9], "big")
        i += 2 + length
    return None


def _read_frame(path: Path, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    import cv2

    from fogreid.data.fog import default_depth
    from fogreid.data.image_io import read_image

    image = read_image(path)
    if image.shape[:2] != size:
        raise FogreidError(f"data.frames: {path} is now {image.shape[1]}x{image.shape[0]}, not {size[1]}x{size[0]} "
                           f"as when the run started")
    depth_path = path.with_name(f"{path.stem}{DEPTH_SUFFIX}.png")
    if not depth_path.is_file():
        return image, default_depth(1, *size)[0, 0].numpy()
    raw = cv2.imread(str(depth_path), cv2.IMREAD_ANYDEPTH)
    if raw is None or raw.ndim != 2 or raw.shape != image.shape[:2] or raw.dtype not in (np.uint8, np.uint16):
        raise FogreidError(_bad_depth(depth_path, size))
    return image, raw.astype(np.float32) / np.iinfo(raw.dtype).max
