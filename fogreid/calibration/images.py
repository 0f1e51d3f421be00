"""The INT8 calibration set: foggy images, decoded and resized exactly as the runtime does
(`resize_for_model`; the graph does the rest), balanced across fog densities and shuffled.

Fog density is estimated per image by its mean dark channel (He et al.): near 0 on clear
scenes, rising with haze. Images are binned by it and drawn round-robin from the bins, so
a folder of mostly light fog still calibrates the dense-fog ranges. With the dataset root,
images of test query/gallery identities are refused: calibrating on the evaluation set
leaks it into the reported accuracy.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fogreid.data.image_io import list_images, load_for_model
from fogreid.errors import FogreidError

MIN_IMAGES = 16


def haze_density(image: np.ndarray, patch: int = 15) -> float:
    import cv2

    dark = cv2.erode(image.min(axis=2), cv2.getStructuringElement(cv2.MORPH_RECT, (patch, patch)))
    return float(dark.mean()) / 255.0


def test_identity_images(paths: list[Path], data_root: Path) -> list[Path]:
    """Those of `paths` that show a test (query/gallery) identity of the dataset at `data_root`."""
    from fogreid.data.datasets import load_fvrid, parse_vehicle_name

    test_files, test_ids = set(), set()
    for split in ("syn", "real"):
        if (data_root / f"FVRID_{split}").is_dir():
            data = load_fvrid(data_root, split)
            for record in data.query + data.gallery:
                test_files.add(record.path.resolve())
                test_ids.add(record.pid)
    if not test_ids:
        raise FogreidError(f"--data {data_root}: no FVRID_syn/ or FVRID_real/ test sets found to check against")
    leaked = []
    for path in paths:
        try:
            pid = parse_vehicle_name(path.name)[0]
        except FogreidError:
            pid = None
        if path.resolve() in test_files or pid in test_ids:
            leaked.append(path)
    return leaked


@dataclass
class CalibrationSet:
    images: np.ndarray          # uint8 (N, H, W, 3) BGR
    densities: np.ndarray       # (N,) estimated fog density of each
    sources: list[Path]

    def batches(self, batch_size: int) -> Iterator[np.ndarray]:
        for start in range(0, len(self.images), batch_size):
            yield self.images[start:start + batch_size]


def build_calibration_set(folders: list[str | Path], size: tuple[int, int], num: int = 512,
                          data_root: str | Path | None = None, seed: int = 0, bins: int = 4,
                          progress: bool = True) -> CalibrationSet:
    from tqdm import tqdm

    paths = [p for folder in folders for p in list_images(folder)]
    if data_root is not None:
        leaked = test_identity_images(paths, Path(data_root))
        if leaked:
            raise FogreidError(
                f"{len(leaked)} calibration images show test query/gallery identities of {data_root} "
                f"(e.g. {leaked[0]}); calibrating on the evaluation set inflates the accuracy you "
                f"report. Calibrate on training images (e.g. FVRID_*/train_foggy).")
    if len(paths) < MIN_IMAGES:
        raise FogreidError(f"only {len(paths)} images in {', '.join(map(str, folders))}; INT8 calibration "
                           f"needs at least {MIN_IMAGES} (a few hundred foggy images is typical)")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(paths))
    # Decode at most a few times `num` images: enough to balance without reading a whole dataset.
    candidates = [paths[i] for i in order[: max(num * 3, MIN_IMAGES)]]
    images, densities = [], []
    for path in tqdm(candidates, desc="calibration images", unit="img", disable=not progress):
        image = load_for_model(path, size)
        images.append(image)
        densities.append(haze_density(image))
    densities_arr = np.array(densities)
    edges = np.quantile(densities_arr, np.linspace(0, 1, bins + 1)[1:-1]) if len(densities) > bins else []
    by_bin = [list(rng.permutation(np.flatnonzero(np.digitize(densities_arr, edges) == b))) for b in range(bins)]
    chosen: list[int] = []
    while len(chosen) < min(num, len(candidates)):
        for members in by_bin:
            if members and len(chosen) < num:
                chosen.append(int(members.pop()))
    chosen = list(rng.permutation(chosen))
    return CalibrationSet(np.stack([images[i] for i in chosen]), densities_arr[chosen], [candidates[i] for i in chosen])
