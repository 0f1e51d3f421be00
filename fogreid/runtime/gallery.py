"""A gallery of labelled embeddings, and matching against it.

Saved as `.npz` with plain arrays (loaded with allow_pickle=False): embeddings, labels,
source paths, and the model's description, so a gallery built with one model is never
silently matched against another's embeddings.
"""

from __future__ import annotations

import io
import zipfile
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fogreid.errors import FogreidError
from fogreid.fileio import atomic_write

INDEX_THRESHOLD = 20_000  # above this many entries, use faiss when it is installed


@dataclass
class Gallery:
    embeddings: np.ndarray            # (N, D) float32, unit rows
    labels: list[str]
    paths: list[str]
    model: dict = field(default_factory=dict)   # name, input_size, embedding_dim
    _index: object = field(default=None, repr=False)

    def save(self, path: str | Path) -> None:
        buffer = io.BytesIO()
        np.savez(buffer, embeddings=self.embeddings.astype(np.float32), labels=np.array(self.labels, dtype=str),
                 paths=np.array(self.paths, dtype=str), model=np.array(json.dumps(self.model)))
        with atomic_write(path) as handle:
            handle.write(buffer.getvalue())

    @classmethod
    def load(cls, path: str | Path) -> "Gallery":
        path = Path(path)
        if not path.is_file():
            raise FogreidError(f"gallery not found: {path}; build one with `fogreid gallery`")
        try:
            with np.load(path, allow_pickle=False) as data:
                return cls(data["embeddings"], data["labels"].tolist(), data["paths"].tolist(),
                           json.loads(str(data["model"])))
        except (ValueError, KeyError, OSError, EOFError, zipfile.BadZipFile) as exc:  # a half-copied file too
            raise FogreidError(f"{path}: not a fogreid gallery ({exc}); rebuild it with `fogreid gallery`") from None

    def check_model(self, embedding_dim: int, input_size: tuple[int, int]) -> None:
        if self.embeddings.shape[1] != embedding_dim or tuple(self.model.get("input_size", input_size)) != tuple(input_size):
            raise FogreidError(f"the gallery holds {self.embeddings.shape[1]}-d embeddings of a "
                               f"{self.model.get('input_size')} model ({self.model.get('name')}); this model gives "
                               f"{embedding_dim}-d at {input_size}: rebuild the gallery with this model")

    def match(self, queries: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """(indices (M, k), cosine scores (M, k)), best first."""
        k = min(k, len(self.labels))
        if len(self.labels) > INDEX_THRESHOLD and self._index is None:
            self._index = _faiss_index(self.embeddings)
        if self._index is not None:
            scores, indices = self._index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
            return indices, scores
        sims = queries @ self.embeddings.T
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        order = np.take_along_axis(sims, top, axis=1).argsort(axis=1)[:, ::-1]
        indices = np.take_along_axis(top, order, axis=1)
        return indices, np.take_along_axis(sims, indices, axis=1)


def _faiss_index(embeddings: np.ndarray):
    try:
        import faiss
    except ImportError:
        return None  # exact numpy search: slower on very large galleries, same results
    index = faiss.IndexFlatIP(embeddings.shape[1])
    index.add(np.ascontiguousarray(embeddings, dtype=np.float32))
    return index


def label_of(path: Path, root: Path) -> str:
    """The folder name (ROOT/<id>/img.jpg), else the vehicle id of a VeRi/FVRID file name."""
    from fogreid.data.datasets import parse_vehicle_name

    if path.parent != root:
        return path.parent.relative_to(root).parts[0]
    return str(parse_vehicle_name(path.name)[0])


def build_gallery(model, images: str | Path, batch_size: int = 32, progress: bool = True) -> Gallery:
    from tqdm import tqdm

    from fogreid.data.image_io import list_images
    from fogreid.data.image_io import image_batches

    root = Path(images)
    paths = list_images(root)
    labels = [label_of(p, root) for p in paths]
    embeddings = []
    with tqdm(total=len(paths), desc="gallery", unit="img", disable=not progress) as bar:
        for batch in image_batches(paths, model.input_size, batch_size):
            embeddings.append(model(batch)[1])
            bar.update(len(batch))
    emb = np.concatenate(embeddings)
    return Gallery(emb, labels, [str(p) for p in paths],
                   {"name": model.name, "input_size": list(model.input_size), "embedding_dim": int(emb.shape[1])})
