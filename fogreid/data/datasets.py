"""Readers for vehicle ReID datasets in their published layouts.

Each reader returns a `ReIDSplit` of `ImageRecord`s (path, vehicle id, camera id, and the
paired clear image where one exists). Layouts:

  FVRID   ROOT/FVRID_syn/{train,query,gallery}_{clear,foggy}/   paired by file name
          ROOT/FVRID_real/{train,query,gallery}_foggy/, and optionally
          ROOT/FVRID_real/{query,gallery}_clear_eval/ (for scoring defog output only)
  VeRi-776  ROOT/image_{train,query,test}/0001_c001_00016450_0.jpg
  VeRi-Wild ROOT/images/<id>/<image>.jpg, ROOT/train_test_split/{train_list.txt,
            test_<N>.txt, test_<N>_query.txt, vehicle_info.txt}
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fogreid.data.image_io import IMAGE_SUFFIXES, read_image, resize_for_model
from fogreid.errors import FogreidError

_NAME = re.compile(r"([-\d]+)_c(\d+)")


@dataclass(frozen=True)
class ImageRecord:
    path: Path
    pid: int                    # vehicle id as in the file name
    camid: int                  # 0-based camera index
    clear_path: Path | None = None


@dataclass
class ReIDSplit:
    name: str
    train: list[ImageRecord]
    query: list[ImageRecord]
    gallery: list[ImageRecord]
    paired: bool = False        # every query and gallery record has a clear_path
    train_ids: list[int] = field(init=False)

    def __post_init__(self) -> None:
        self.train_ids = sorted({r.pid for r in self.train})

    @property
    def num_train_ids(self) -> int:
        return len(self.train_ids)

    def train_labels(self) -> list[int]:
        """Train ids relabelled 0..N-1, the classifier's targets."""
        index = {pid: i for i, pid in enumerate(self.train_ids)}
        return [index[r.pid] for r in self.train]

    def test_ids(self) -> set[int]:
        return {r.pid for r in self.query} | {r.pid for r in self.gallery}


def parse_vehicle_name(name: str) -> tuple[int, int]:
    """`00000_c013_298403_0.jpg` -> (0, 12): vehicle id and 0-based camera."""
    match = _NAME.search(name)
    if not match:
        raise FogreidError(f"cannot read vehicle and camera ids from file name {name!r}; "
                           f"expected names like 00012_c003_000123_0.jpg (id_cCAM_...)")
    return int(match.group(1)), int(match.group(2)) - 1


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def _require_dirs(root: Path, names: list[str], layout: str) -> None:
    missing = [n for n in names if not (root / n).is_dir()]
    if missing:
        raise FogreidError(f"{root}: not a {layout} folder, missing {', '.join(missing)}. "
                           f"Expected layout: {layout} (see fogreid.data.datasets), or generate one "
                           f"with `fogreid synth --out DIR`")


def _from_folder(folder: Path, clear_folder: Path | None = None) -> list[ImageRecord]:
    records = []
    for path in _images(folder):
        pid, camid = parse_vehicle_name(path.name)
        clear = None
        if clear_folder is not None:
            clear = clear_folder / path.name
            if not clear.is_file():
                raise FogreidError(f"{path}: no clear image {clear} to pair with; FVRID_syn needs "
                                   f"the same file names in *_clear and *_foggy")
        records.append(ImageRecord(path, pid, camid, clear))
    if not records:
        raise FogreidError(f"no images in {folder}")
    return records


def load_fvrid(root: str | Path, split: str = "syn") -> ReIDSplit:
    """FVRID's synthetic (paired clear/foggy), real (foggy only) or clear (the synthetic part's
    clear images alone) part under `root`."""
    root = Path(root)
    if split == "syn":
        base = root / "FVRID_syn"
        parts = [f"{s}_{k}" for s in ("train", "query", "gallery") for k in ("foggy", "clear")]
        _require_dirs(base, parts, "FVRID_syn/{train,query,gallery}_{clear,foggy}")
        sets = {s: _from_folder(base / f"{s}_foggy", base / f"{s}_clear") for s in ("train", "query", "gallery")}
        return ReIDSplit("FVRID_syn", **sets, paired=True)
    if split == "real":
        base = root / "FVRID_real"
        _require_dirs(base, [f"{s}_foggy" for s in ("train", "query", "gallery")],
                      "FVRID_real/{train,query,gallery}_foggy")
        # Clear renders of the test images (`fogreid synth` writes them; real FVRID has none)
        # pair with query and gallery for scoring the defog output. Never with train: the
        # real domain stays unlabelled for defogging, as in the papers.
        scored = all((base / f"{s}_clear_eval").is_dir() for s in ("query", "gallery"))
        sets = {"train": _from_folder(base / "train_foggy")}
        sets.update({s: _from_folder(base / f"{s}_foggy", base / f"{s}_clear_eval" if scored else None)
                     for s in ("query", "gallery")})
        return ReIDSplit("FVRID_real", **sets, paired=scored)
    if split == "clear":
        # The synthetic test vehicles without fog: the same identities, cameras and file names as
        # `syn`, so syn vs clear isolates what fog costs a model (and what defogging costs it
        # on clear cameras). Not FVRID_clear, whose unlabelled clear images are RVSL's.
        base = root / "FVRID_syn"
        parts = [f"{s}_clear" for s in ("train", "query", "gallery")]
        _require_dirs(base, parts, "FVRID_syn/{train,query,gallery}_clear")
        sets = {s: _from_folder(base / f"{s}_clear") for s in ("train", "query", "gallery")}
        return ReIDSplit("FVRID_syn_clear", **sets)
    raise FogreidError(f"unknown FVRID split {split!r}; choose syn, real or clear")


def load_veri776(root: str | Path) -> ReIDSplit:
    root = Path(root)
    _require_dirs(root, ["image_train", "image_query", "image_test"], "VeRi-776 (image_train, image_query, image_test)")
    return ReIDSplit("VeRi-776", _from_folder(root / "image_train"), _from_folder(root / "image_query"),
                     _from_folder(root / "image_test"))


def load_veriwild(root: str | Path, test_size: int = 3000) -> ReIDSplit:
    """VeRi-Wild: ids from the folder, cameras from vehicle_info.txt (`id/image;camera;...`)."""
    root = Path(root)
    split_dir = root / "train_test_split"
    _require_dirs(root, ["images", "train_test_split"], "VeRi-Wild (images/, train_test_split/)")
    lists = {"train": split_dir / "train_list.txt", "query": split_dir / f"test_{test_size}_query.txt",
             "gallery": split_dir / f"test_{test_size}.txt", "info": split_dir / "vehicle_info.txt"}
    for path in lists.values():
        if not path.is_file():
            raise FogreidError(f"VeRi-Wild list missing: {path} (test sizes are 3000, 5000, 10000)")
    cameras = {}
    for line in lists["info"].read_text().splitlines():
        fields = line.strip().split(";")
        if len(fields) >= 2 and fields[1].strip().isdigit():  # also skips the header line
            cameras[fields[0].strip()] = int(fields[1]) - 1

    def read(list_path: Path) -> list[ImageRecord]:
        records = []
        for line in list_path.read_text().split():
            key = line.strip().removesuffix(".jpg")
            if key not in cameras:
                raise FogreidError(f"{list_path}: {key} has no camera in {lists['info']}")
            records.append(ImageRecord(root / "images" / f"{key}.jpg", int(key.split("/")[0]), cameras[key]))
        return records

    return ReIDSplit(f"VeRi-Wild-{test_size}", read(lists["train"]), read(lists["query"]), read(lists["gallery"]))


DATASETS = {"fvrid-syn": lambda root: load_fvrid(root, "syn"),
            "fvrid-real": lambda root: load_fvrid(root, "real"),
            "fvrid-clear": lambda root: load_fvrid(root, "clear"),
            "veri776": load_veri776,
            "veriwild": load_veriwild}


def load_dataset(kind: str, root: str | Path) -> ReIDSplit:
    if kind not in DATASETS:
        raise FogreidError(f"unknown dataset {kind!r}; choose one of {', '.join(DATASETS)}")
    return DATASETS[kind](root)


class ReIDImages:
    """A torch-style dataset over records: each item is a dict of uint8 (H, W, 3) BGR
    arrays (`image`, and `clear` when paired), the label and the camera. Resizing is the
    runtime's `resize_for_model`; the optional horizontal flip is shared by the pair."""

    def __init__(self, records: list[ImageRecord], size: tuple[int, int], labels: list[int] | None = None,
                 hflip: float = 0.0, seed: int = 0) -> None:
        self.records, self.size, self.hflip = records, size, hflip
        self.labels = labels if labels is not None else [r.pid for r in records]
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict:
        import torch

        record = self.records[index]
        flip = self.hflip > 0 and self.rng.random() < self.hflip
        item = {"image": self._load(record.path, flip), "label": self.labels[index],
                "camid": record.camid, "index": index}
        if record.clear_path is not None:
            item["clear"] = self._load(record.clear_path, flip)
        return {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in item.items()}

    def _load(self, path: Path, flip: bool) -> np.ndarray:
        image = resize_for_model(read_image(path), self.size)
        return np.ascontiguousarray(image[:, ::-1]) if flip else image


def carve_validation(split: ReIDSplit, fraction: float, seed: int = 0) -> tuple[list[ImageRecord], ReIDSplit]:
    """Hold out `fraction` of the training identities as a validation query/gallery set.

    The best checkpoint is chosen on this, never on the test query/gallery. Each held-out
    identity gives one query; the rest of its images form the gallery.
    """
    ids = split.train_ids
    # At least 8 identities where the set allows: a handful of queries cannot rank checkpoints.
    n_val = max(int(round(len(ids) * fraction)), min(8, len(ids) // 4)) if fraction > 0 else 0
    if n_val == 0:
        return list(split.train), ReIDSplit(f"{split.name}-val", [], [], [], split.paired)
    if len(ids) - n_val < 2:
        raise FogreidError(f"{split.name}: {len(ids)} training identities are too few to hold out "
                           f"{n_val} for validation; lower data.val_fraction")
    rng = np.random.default_rng([seed, 7])
    held_out = set(rng.choice(ids, n_val, replace=False).tolist())
    query, gallery, train = [], [], []
    for pid in sorted(held_out):
        records = [r for r in split.train if r.pid == pid]
        q = int(rng.integers(len(records)))
        query.append(records[q])
        gallery += records[:q] + records[q + 1:]
    train = [r for r in split.train if r.pid not in held_out]
    return train, ReIDSplit(f"{split.name}-val", [], query, gallery, split.paired)
